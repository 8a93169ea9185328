"""Duplicate billing events: found, with the charges they caused, and marked (never deleted).

An event is a duplicate when an earlier row of the events table has the same provider event id, the same
idempotency key, or the same payload hash received within the profile's ``duplicate_window`` (rows in
``received_at``, then id, order). Its original is the first row of its group: the earliest row it matches,
or that row's own original. drlib's probes (``evt_drlibprobe_…``, amount 0) are counted apart: they are
never charges.

Every column comes from the profile's ``[billing]`` section, so any events table with those columns works.
Marking sets ``duplicate_of`` (the original's id), ``marked_at`` and ``reversal_state`` (``requested`` for a
charge to reverse, ``not_needed`` for an amount of 0 or a probe) in one transaction, only on rows not
marked yet: a second run finds nothing new. The reversal is *recorded* (``reversal_state = 'requested'``,
the application's refund outbox), not sent: drlib never calls a payment provider.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from drlib.billing.events import PROBE_PREFIX, is_probe
from drlib.checks import Checks, check
from drlib.config import BillingSettings
from drlib.exceptions import ConfigError
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget, sql_errors

#: reversal states that count as reversed in the totals (a refund worker moves 'requested' to 'sent')
REVERSED_STATES = ("requested", "sent")
#: rows a plan or a table shows
SHOWN = 50
#: the profile keys naming the columns every scan reads (one of the optional ones may be "")
COLUMN_KEYS = (
    "id_column",
    "event_id_column",
    "idempotency_key_column",
    "payload_hash_column",
    "amount_column",
    "currency_column",
    "customer_column",
    "received_at_column",
    "duplicate_of_column",
    "marked_at_column",
    "reversal_state_column",
)


@dataclass(frozen=True)
class EventRow:
    """One row of the events table, as a scan reads it."""

    id: int
    event_id: str
    idempotency_key: str | None
    payload_hash: str | None
    amount: int
    currency: str
    customer: str
    received_at: datetime
    duplicate_of: int | None
    reversal_state: str | None

    @property
    def probe(self) -> bool:
        return is_probe(self.event_id)


@dataclass(frozen=True)
class Duplicate:
    """A row that repeats an earlier event: its original and the rule that matched."""

    row: EventRow
    original: EventRow
    rule: str

    @property
    def marked(self) -> bool:
        return self.row.duplicate_of is not None

    @property
    def reversal(self) -> str:
        """What marking records: a charge to reverse, or nothing to reverse (amount 0, a drlib probe)."""
        return "not_needed" if self.row.probe or self.row.amount == 0 else "requested"

    def as_row(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "event": r.event_id,
            "duplicate of": self.original.id,
            "rule": self.rule,
            "customer": r.customer,
            "amount": format_amount(r.amount, r.currency),
            "received_at": r.received_at.isoformat(timespec="seconds"),
            "marked": (r.reversal_state or "yes") if self.marked else "no",
        }


def format_amount(minor: int, currency: str) -> str:
    """``1999, "usd"`` -> ``"19.99 USD"`` (two decimal places: the sample stack's currencies)."""
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d} {currency.upper()}"


def _totals_text(totals: dict[str, int]) -> str:
    return ", ".join(format_amount(v, k) for k, v in sorted(totals.items())) or "0"


@dataclass(frozen=True)
class DuplicateScan:
    """What a scan of the events table found."""

    table: str
    events: int
    probes: int
    duplicates: tuple[Duplicate, ...]
    #: per currency: every event that is not a probe
    charged: dict[str, int]
    #: per currency: the rows marked reversed (``reversal_state`` requested or sent)
    reversed: dict[str, int]
    seconds: float = field(default=0.0, compare=False)

    @property
    def unmarked(self) -> tuple[Duplicate, ...]:
        return tuple(d for d in self.duplicates if not d.marked)

    @property
    def charges(self) -> tuple[Duplicate, ...]:
        """Duplicates that are charges (not probes, not an amount of 0)."""
        return tuple(d for d in self.duplicates if d.reversal == "requested")

    @property
    def to_reverse(self) -> tuple[Duplicate, ...]:
        """The duplicate charges not marked yet: what marking would reverse."""
        return tuple(d for d in self.charges if not d.marked)

    @property
    def probe_duplicates(self) -> int:
        return sum(1 for d in self.duplicates if d.row.probe)

    @property
    def distinct(self) -> dict[str, int]:
        """Per currency: what the distinct events charged (every charge, less the duplicate ones)."""
        return _minus(self.charged, _sums(d.row for d in self.charges))

    @property
    def net(self) -> dict[str, int]:
        """Per currency: what was charged, less what is marked reversed."""
        return _minus(self.charged, self.reversed)

    def totals(self) -> dict[str, str]:
        return {
            "charged": _totals_text(self.charged),
            "duplicate charges": _totals_text(_sums(d.row for d in self.charges)),
            "marked reversed": _totals_text(self.reversed),
            "distinct events": _totals_text(self.distinct),
            "after reversal": _totals_text(self.net),
        }

    def describe(self) -> str:
        if not self.duplicates:
            return f"no duplicate among {self.events} event(s)"
        marked = len(self.duplicates) - len(self.unmarked)
        return (
            f"{len(self.duplicates)} duplicate(s) among {self.events} event(s) ({marked} marked already); "
            f"{len(self.to_reverse)} charge(s) to reverse: {_totals_text(_sums(d.row for d in self.to_reverse))}"
        )

    def rows(self) -> list[dict[str, Any]]:
        return [d.as_row() for d in self.duplicates[:SHOWN]]

    def checks(self, *, prefix: str = "", warn_only: bool = False) -> Checks:
        """No unmarked duplicate; what is left charged after the reversals equals what the distinct events
        charged. ``warn_only``: findings of a detection (a warning), not a failed recovery."""
        unmarked = self.unmarked
        return Checks(
            [
                check(
                    f"{prefix}no_unmarked_duplicates",
                    not unmarked,
                    expected="every duplicate event marked (duplicate_of its original)",
                    observed=f"{len(unmarked)} unmarked: " + ", ".join(str(d.row.id) for d in unmarked[:20])
                    if unmarked
                    else f"none ({len(self.duplicates)} marked)",
                    detail=f"{self.table}; rules: provider event id, idempotency key, payload hash in the window",
                    warn_only=warn_only,
                ),
                check(
                    f"{prefix}totals_after_reversal",
                    self.net == self.distinct,
                    expected=f"the distinct events' {_totals_text(self.distinct)}",
                    observed=_totals_text(self.net),
                    detail=f"charged {_totals_text(self.charged)}, marked reversed {_totals_text(self.reversed)}",
                    warn_only=warn_only,
                ),
            ]
        )


def _sums(rows: Iterable[EventRow]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row.currency] += row.amount
    return dict(totals)


def _minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b))}


# -- reading the table ------------------------------------------------------------------------
def _table(settings: BillingSettings) -> sql.Identifier:
    return sql.Identifier(*settings.events_table.split("."))


def _column(settings: BillingSettings, key: str) -> sql.Composable:
    name: str = getattr(settings, key)
    return sql.Identifier(name) if name else sql.SQL("NULL")


def check_events_table(target: PgTarget, settings: BillingSettings) -> None:
    """The events table exists with every column the profile names; :class:`ConfigError` says which not."""
    schema, _, name = settings.events_table.rpartition(".")
    with target.connect() as conn, sql_errors(target, doing=f"reading the columns of {settings.events_table}"):
        found = {
            str(r[0])
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) "
                "AND attnum > 0 AND NOT attisdropped",
                (schema or "public", name),
            )
        }
    if not found:
        raise ConfigError(
            f"the billing events table {settings.events_table} does not exist in {target.name}: set "
            "events_table under the profile's [billing] (on the sandbox: drlib sandbox up adds it)"
        )
    missing = [
        f"{key} = {getattr(settings, key)!r}" for key in COLUMN_KEYS if getattr(settings, key) not in found | {""}
    ]
    if missing:
        raise ConfigError(
            f"{settings.events_table} has no column for {', '.join(missing)}: set the column names under the "
            'profile\'s [billing] ("" for an idempotency key or payload hash the table does not have)'
        )


def scan_duplicates(target: PgTarget, settings: BillingSettings) -> DuplicateScan:
    """Every duplicate event of the table, with the charge it caused, and the totals."""
    started = time.monotonic()
    check_events_table(target, settings)
    table = _table(settings)
    col = {key: _column(settings, key) for key in COLUMN_KEYS}
    not_probe = sql.SQL("NOT starts_with({e}, {p})").format(e=col["event_id_column"], p=sql.Literal(PROBE_PREFIX))
    shared = [
        sql.SQL("{c} IN (SELECT {c} FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)").format(
            c=col[key], t=table
        )
        for key in ("event_id_column", "idempotency_key_column", "payload_hash_column")
        if getattr(settings, key)
    ]
    doing = f"scanning {settings.events_table} for duplicates"
    with target.connect() as conn, sql_errors(target, doing=doing), conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for all reads
        counts = conn.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE NOT ({np})) FROM {t}").format(np=not_probe, t=table)
        ).fetchone()
        charged = conn.execute(
            sql.SQL("SELECT {cur}, sum({amt})::bigint FROM {t} WHERE {np} GROUP BY 1").format(
                cur=col["currency_column"], amt=col["amount_column"], t=table, np=not_probe
            )
        ).fetchall()
        reversed_ = conn.execute(
            sql.SQL("SELECT {cur}, sum({amt})::bigint FROM {t} WHERE {np} AND {st} = ANY(%s) GROUP BY 1").format(
                cur=col["currency_column"],
                amt=col["amount_column"],
                t=table,
                np=not_probe,
                st=col["reversal_state_column"],
            ),
            (list(REVERSED_STATES),),
        ).fetchall()
        involved = conn.execute(
            sql.SQL(
                "SELECT {id}, {ev}, {ik}, {ph}, {amt}, {cur}, {cus}, {at}, {dup}, {st} FROM {t} "
                "WHERE {shared} ORDER BY {at}, {id}"
            ).format(
                id=col["id_column"],
                ev=col["event_id_column"],
                ik=col["idempotency_key_column"],
                ph=col["payload_hash_column"],
                amt=col["amount_column"],
                cur=col["currency_column"],
                cus=col["customer_column"],
                at=col["received_at_column"],
                dup=col["duplicate_of_column"],
                st=col["reversal_state_column"],
                t=table,
                shared=sql.SQL(" OR ").join(shared),
            )
        ).fetchall()
    rows = [
        EventRow(
            id=int(r[0]),
            event_id=str(r[1]),
            idempotency_key=r[2],
            payload_hash=r[3],
            amount=int(r[4]),
            currency=str(r[5]),
            customer=str(r[6]),
            received_at=r[7],
            duplicate_of=r[8],
            reversal_state=r[9],
        )
        for r in involved
    ]
    events, probes = (int(counts[0]), int(counts[1])) if counts else (0, 0)
    return DuplicateScan(
        table=settings.events_table,
        events=events,
        probes=probes,
        duplicates=tuple(find_duplicates(rows, window=timedelta(seconds=settings.duplicate_window))),
        charged={str(c): int(v) for c, v in charged},
        reversed={str(c): int(v) for c, v in reversed_},
        seconds=round(time.monotonic() - started, 2),
    )


def find_duplicates(rows: Iterable[EventRow], *, window: timedelta) -> list[Duplicate]:
    """The duplicates among ``rows`` (in ``received_at``, id order), each with its group's original."""
    original: dict[int, EventRow] = {}
    by_event: dict[str, EventRow] = {}
    by_key: dict[str, EventRow] = {}
    last_payload: dict[str, EventRow] = {}
    found: list[Duplicate] = []
    for row in rows:
        matches = [
            ("provider event id", by_event.get(row.event_id)),
            ("idempotency key", by_key.get(row.idempotency_key) if row.idempotency_key else None),
        ]
        seen = last_payload.get(row.payload_hash) if row.payload_hash else None
        if seen is not None and row.received_at - seen.received_at <= window:
            matches.append(("payload hash", seen))
        hits = [(rule, original[m.id]) for rule, m in matches if m is not None]
        if hits:
            rule, first = min(hits, key=lambda hit: (hit[1].received_at, hit[1].id))
            original[row.id] = first
            found.append(Duplicate(row=row, original=first, rule=rule))
        else:
            original[row.id] = row
        by_event.setdefault(row.event_id, row)
        if row.idempotency_key:
            by_key.setdefault(row.idempotency_key, row)
        if row.payload_hash:
            last_payload[row.payload_hash] = row
    return found


# -- marking ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkResult:
    """What marking changed: rows marked (id -> reversal state) and those already marked by someone else."""

    marked: dict[int, str]
    skipped: tuple[int, ...]
    seconds: float


def mark_duplicates(
    target: PgTarget, settings: BillingSettings, duplicates: Iterable[Duplicate], *, confirm: bool = False
) -> MarkResult | RestorePlan:
    """Mark each unmarked duplicate in one transaction: ``duplicate_of`` its original, ``marked_at`` now,
    ``reversal_state`` requested (a charge) or not_needed. Nothing is deleted; a row marked since the scan
    is left as it is. Without ``confirm``: the plan."""
    todo = [d for d in duplicates if not d.marked]
    table = _table(settings)
    col = {key: _column(settings, key) for key in COLUMN_KEYS}
    if not confirm:
        lines = [
            f"UPDATE {settings.events_table} SET {settings.duplicate_of_column} = {d.original.id}, "
            f"{settings.marked_at_column} = now(), {settings.reversal_state_column} = '{d.reversal}' "
            f"WHERE {settings.id_column} = {d.row.id}  -- {d.row.event_id}, {d.rule}, "
            f"{format_amount(d.row.amount, d.row.currency)} from {d.row.customer}"
            for d in todo[:SHOWN]
        ]
        if len(todo) > SHOWN:
            lines.append(f"… and {len(todo) - SHOWN} more")
        return RestorePlan(action=f"marking {len(todo)} duplicate event(s) in one transaction", steps=tuple(lines))
    started = time.monotonic()
    update = sql.SQL(
        "UPDATE {t} SET {dup} = %s, {at} = now(), {st} = %s WHERE {id} = %s AND {dup} IS NULL RETURNING {id}"
    ).format(
        t=table,
        dup=col["duplicate_of_column"],
        at=col["marked_at_column"],
        st=col["reversal_state_column"],
        id=col["id_column"],
    )
    marked: dict[int, str] = {}
    skipped: list[int] = []
    doing = f"marking duplicates in {settings.events_table}"
    with target.connect() as conn, sql_errors(target, doing=doing), conn.transaction():
        for d in todo:
            if conn.execute(update, (d.original.id, d.reversal, d.row.id)).fetchone():
                marked[d.row.id] = d.reversal
            else:
                skipped.append(d.row.id)
    return MarkResult(marked=marked, skipped=tuple(skipped), seconds=round(time.monotonic() - started, 2))


def missing_rows(target: PgTarget, settings: BillingSettings, ids: Iterable[int]) -> list[int]:
    """Which of the rows ``ids`` are no longer in the events table (deleted evidence)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    query = sql.SQL("SELECT {id} FROM {t} WHERE {id} = ANY(%s)").format(
        id=_column(settings, "id_column"), t=_table(settings)
    )
    with target.connect() as conn, sql_errors(target, doing=f"reading {settings.events_table}"):
        present = {int(r[0]) for r in conn.execute(query, (wanted,))}
    return [i for i in wanted if i not in present]


def count_rows(target: PgTarget, settings: BillingSettings) -> int:
    """How many rows the events table has (marking must not change it)."""
    with target.connect() as conn, sql_errors(target, doing=f"counting {settings.events_table}"):
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(settings))).fetchone()
    return int(row[0]) if row else 0
