"""Named sets of hand-written checks a profile adds to the discovered ones (``database.check_set``).

``content_crew`` is the runbook's own verification: its four tables must exist and its orphan
query (``content_jobs`` whose user is gone) must find nothing."""

from __future__ import annotations

from dataclasses import dataclass

from drlib.config import DatabaseSettings, OrphanCheck


@dataclass(frozen=True)
class CheckSet:
    tables: tuple[str, ...]
    orphan_checks: tuple[OrphanCheck, ...]


CHECK_SETS: dict[str, CheckSet] = {
    "content_crew": CheckSet(
        tables=("users", "organizations", "content_jobs", "content_artifacts"),
        orphan_checks=(OrphanCheck("orphaned_jobs", "content_jobs", "user_id", "users", "id"),),
    )
}


def _chosen(settings: DatabaseSettings) -> CheckSet:
    return CHECK_SETS[settings.check_set] if settings.check_set else CheckSet((), ())


def required_tables(settings: DatabaseSettings) -> tuple[str, ...]:
    """Tables that must exist: the profile's own, then its check set's."""
    tables = list(settings.tables)
    tables += [t for t in _chosen(settings).tables if t not in tables]
    return tuple(tables)


def hand_written_orphan_checks(settings: DatabaseSettings) -> tuple[OrphanCheck, ...]:
    """The check set's orphan queries, then the profile's own."""
    return (*_chosen(settings).orphan_checks, *settings.orphan_checks)
