"""Drill reports: ``results.json``, ``report.html`` (a summary a manager can read, then the
executed notebook), a ``SHA256SUMS`` manifest per report, and an index over time."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib.checks import CheckResult, checks_table_html
from drlib.exceptions import ConfigError
from drlib.files import write_whole
from drlib.lock import FileLock, LockBusy, take
from drlib.results import DrillResults, ResultsUnreadable
from drlib.secrets import redact, scan_for_secrets
from drlib.units import format_duration

MANIFEST_NAME = "SHA256SUMS"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328}
h1{margin-bottom:.2rem} table{border-collapse:collapse;margin:.5rem 0 1.2rem} td,th{border:1px solid #d0d7de;
padding:.3rem .6rem;text-align:left;vertical-align:top;font-size:.9rem;overflow-wrap:anywhere} th{background:#f6f8fa}
table.checks{width:100%;table-layout:fixed} table.checks th:nth-child(1){width:24%}
table.checks th:nth-child(2){width:7%} table.checks th:nth-child(3),table.checks th:nth-child(4){width:22%}
.banner{padding:.8rem 1rem;border-radius:6px;color:#fff;font-size:1.3rem;font-weight:bold}
.passed{background:#1a7f37}.failed{background:#cf222e}.error{background:#8250df}
.dry_run{background:#57606a}.refused{background:#9a6700}
.kpi{display:flex;gap:1rem;margin:1rem 0}.kpi div{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem}
.kpi b{display:block;font-size:1.4rem}.notebook{border-top:3px solid #d0d7de;margin-top:2rem;padding-top:1rem}
pre{white-space:pre-wrap;background:#f6f8fa;padding:.6rem}
"""


def _objective(label: str, seconds: float | None, target: float | None) -> str:
    ok = seconds is not None and target is not None and seconds <= target
    verdict = "within target" if ok else ("not measured" if seconds is None else "OVER TARGET")
    return (
        f"<div><span>{label}</span><b>{format_duration(seconds)}</b>target {format_duration(target)} — {verdict}</div>"
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(iso: str) -> str:
    """``2026-11-26 17:15:18`` from an ISO timestamp."""
    return html.escape(iso.replace("T", " ")[:19])


BANNERS = {
    "passed": "PASSED",
    "failed": "FAILED",
    "error": "ERROR",
    "dry_run": "DRY RUN — nothing was changed; steps that change the stack were only planned",
    "refused": "REFUSED — stopped before the first write; nothing was changed",
}


HEADINGS: dict[str, str] = {
    "drill": "DR drill",
    "restore": "DR restore",
    "verify": "DR verification",
    "undo": "DR selective undo",
}


def summary_html(results: DrillResults) -> str:
    status = results.status
    checks = [
        CheckResult(name=c.name, status=c.status, expected=c.expected, observed=c.observed, detail=c.detail)
        for c in results.checks
    ]
    failing = [c for c in checks if c.status == "fail"]
    parts = [
        f"<h1>{HEADINGS[results.kind]}: {html.escape(results.title or results.scenario)}</h1>",
        f"<p>Scenario <code>{html.escape(results.scenario)}</code> on environment "
        f"<b>{html.escape(results.environment)}</b>, {_when(results.started_at)} → "
        f"{_when(results.finished_at)} UTC. Run by {html.escape(results.run_by.user)} on "
        f"{html.escape(results.run_by.host)}, drlib {html.escape(results.drlib_version)}.</p>",
        f"<div class='banner {status}'>{html.escape(BANNERS[status])}"
        + (f" — {len(failing)} failing check(s)" if failing else "")
        + (f", {len(results.warnings)} warning(s)" if results.warnings else "")
        + "</div>",
        "<div class='kpi'>",
        _objective("Measured RTO (failure → healthy)", results.rto_seconds, results.rto_target_seconds),
        _objective("Achieved RPO (backup → failure)", results.rpo_seconds, results.rpo_target_seconds),
        "</div>",
    ]
    if results.error:
        err = results.error
        parts.append(
            f"<h2>{'Refused' if status == 'refused' else 'Error'}</h2><p>In <b>{html.escape(str(err.step))}</b>:</p>"
            f"<pre>{html.escape(err.message)}</pre>"
        )
    if results.stack_state or results.next_steps:
        rows = [{"component": k, "state": v} for k, v in results.stack_state.items()]
        parts.append("<h2>State of the stack</h2>" + (_table(rows, ["component", "state"]) if rows else ""))
        if results.next_steps:
            items = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in results.next_steps)
            parts.append(f"<p>What to do next:</p><ul>{items}</ul>")
    if results.lock and results.lock.get("took_over_stale"):
        stale = results.lock["took_over_stale"]
        parts.append(
            "<p>The drill lock was taken over from a run that no longer held it "
            f"(pid {html.escape(str(stale.get('pid')))} on {html.escape(str(stale.get('host')))}, "
            f"started {html.escape(str(stale.get('started_at')))}).</p>"
        )
    backup_name = (results.backup or {}).get("name", "none")
    if results.kind == "drill":
        parts.append(
            f"<p>Fault injected: {html.escape(str(results.fault))} at "
            f"{_when(str(results.failure_time))} UTC. Backup used: {html.escape(str(backup_name))}.</p>"
        )
    else:
        parts.append(
            f"<p>Run from the command line on the stack as it was (no fault injected); failure time "
            f"{_when(str(results.failure_time))} UTC. Backup used: {html.escape(str(backup_name))}.</p>"
        )
    if results.data_loss:
        rows = [{"data": t, **v.model_dump()} for t, v in results.data_loss.items()]
        parts.append(
            "<h2>Data lost by this drill</h2><p>Data written after the backup (rows, files, keys), and how "
            "much of it the restore could not bring back: the cost of the RPO.</p>"
            + _table(rows, ["data", "written_after_backup", "lost"])
        )
    if failing:
        parts.append("<h2>Failing checks</h2>" + checks_table_html(failing))
    steps = [s.model_dump() for s in results.steps]
    parts.append("<h2>Steps</h2>" + _table(steps, ["name", "status", "started_at", "seconds", "detail"]))
    parts.append("<h2>Checks</h2>" + checks_table_html(checks))
    return "".join(parts)


def notebook_html(path: Path) -> str:
    if not path.is_file():
        return "<p>The notebook did not produce an output file.</p>"
    try:
        import nbformat  # here, not at the top: only a report with a notebook needs nbconvert (1/3 s to import)
        from nbconvert import HTMLExporter

        notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)  # type: ignore[no-untyped-call]
    except Exception as exc:  # a notebook cut short by a kill is often half-written: say so, keep the report
        return (
            f"<p>The executed notebook {html.escape(path.name)} could not be read ({html.escape(type(exc).__name__)}): "
            "the run was cut short while papermill was writing it.</p>"
        )
    return str(body)


def render_report(results: DrillResults, folder: Path) -> str:
    title = f"{HEADINGS[results.kind]} {results.scenario} {results.started_at}"
    notebooks = "".join(
        f"<div class='notebook'><h2>Executed notebook: {html.escape(name)}</h2>{notebook_html(folder / name)}</div>"
        for name in results.notebooks
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{summary_html(results)}{notebooks}</body></html>"
    )


def write_report_folder(folder: Path, results: DrillResults) -> None:
    """results.json, report.html, then a secret scan and the folder's checksum manifest."""
    (folder / "results.json").write_text(redact(results.to_json()), encoding="utf-8")
    (folder / "report.html").write_text(render_report(results, folder), encoding="utf-8")
    for leaking in scan_for_secrets(folder):
        leaking.write_text(redact(leaking.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
    write_checksums(folder)
    write_index(folder.parent.parent, changed=folder)


def write_checksums(folder: Path) -> None:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(folder).as_posix()}")
    (folder / MANIFEST_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


def verify_checksums(folder: Path) -> list[str]:
    """Files of a report that changed (or vanished) since it was written."""
    changed = []
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return [MANIFEST_NAME]
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            changed.append(name)
    return changed


def index_entry(root: Path, folder: Path) -> dict[str, Any]:
    """One row of the index: a report folder, read through the results schema."""
    entry: dict[str, Any] = {"folder": folder.relative_to(root).as_posix(), "scenario": folder.name.split("-", 1)[-1]}
    try:
        results = DrillResults.load(folder / "results.json")
    except ResultsUnreadable:
        return {**entry, "status": "incomplete", "intact": "no results.json", "started_at": folder.parent.name}
    return {
        **entry,
        "scenario": results.scenario,
        "environment": results.environment,
        "started_at": results.started_at,
        "status": results.status,
        "rto_seconds": results.rto_seconds,
        "rpo_seconds": results.rpo_seconds,
        "intact": "yes" if not verify_checksums(folder) else "ALTERED",
    }


def _newest_first(entry: dict[str, Any]) -> tuple[str, str, str]:
    """Day and second from the folder's name, then the exact start: two runs in one second (a verification
    right after a drill) are in the order they started, not in the order of their names."""
    day, _, name = str(entry["folder"]).partition("/")
    return day, name[:6], str(entry.get("started_at", ""))


def _indexed(root: Path) -> dict[str, dict[str, Any]]:
    """The rows of the ``index.json`` already in ``root`` by folder (none when it is missing or not an index)."""
    try:
        rows = json.loads((root / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(rows, list):
        return {}
    return {
        row["folder"]: row
        for row in rows
        if isinstance(row, dict)
        and isinstance(row.get("folder"), str)
        and isinstance(row.get("status"), str)
        and isinstance(row.get("intact"), str)
        and all(_a_duration(row.get(key)) for key in ("rto_seconds", "rpo_seconds"))
    }


def _a_duration(value: object) -> bool:
    """None or a finite number of seconds: what :func:`index_entry` writes (``Infinity``, ``NaN`` or ``true``
    in a hand-edited index would stop the page's rendering, or be written back as JSON no parser reads)."""
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: held while a run reads and writes the index, so two runs ending together each keep the other's row
INDEX_LOCK = ".index.lock"


@contextlib.contextmanager
def _index_locked(root: Path) -> Iterator[None]:
    """The index's lock for the ``with`` block: another run's index is written first (30 s at most; then
    the index is written without the lock, still whole: see :func:`~drlib.files.write_whole`)."""
    try:
        held: FileLock | None = take(root / INDEX_LOCK, purpose="reports index", timeout=30)
    except (LockBusy, OSError):
        held = None
    try:
        yield
    finally:
        if held is not None:
            held.release()


def write_index(root: Path, *, changed: Path | None = None) -> Path:
    """``index.html`` and ``index.json`` over every report folder under ``root``, newest first; a folder
    without readable results is listed as ``incomplete``, never skipped.

    Every folder is read and its checksums checked, unless ``changed`` names the one folder a run just
    wrote: then the other folders keep the rows the index already has (their ``intact`` as last checked),
    so a run's cost does not grow with the archive; ``drlib reports index`` checks them all again."""
    with _index_locked(root):
        return _write_index(root, changed)


def _write_index(root: Path, changed: Path | None) -> Path:
    folders = [p for p in root.glob("*/*") if p.is_dir() and p.parent.name[:1].isdigit()]
    known = _indexed(root) if changed is not None else {}

    def entry(folder: Path) -> dict[str, Any]:
        kept = known.get(folder.relative_to(root).as_posix())
        return kept if kept is not None and folder != changed else index_entry(root, folder)

    entries = sorted((entry(folder) for folder in folders), key=_newest_first, reverse=True)
    write_whole(root / "index.json", json.dumps(entries, indent=2))
    rows = "".join(
        f"<tr><td><a href='{html.escape(e['folder'])}/report.html'>{html.escape(str(e.get('started_at')))}</a></td>"
        f"<td>{html.escape(str(e.get('scenario')))}</td><td>{html.escape(str(e.get('environment', '')))}</td>"
        f"<td>{html.escape(str(e['status']))}</td><td>{format_duration(e.get('rto_seconds'))}</td>"
        f"<td>{format_duration(e.get('rpo_seconds'))}</td><td>{html.escape(e['intact'])}</td></tr>"
        for e in entries
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>DR drill reports</title>"
        f"<style>{STYLE}</style></head><body><h1>DR drill reports</h1>"
        "<table><thead><tr><th>started (UTC)</th><th>scenario</th><th>environment</th><th>status</th>"
        f"<th>RTO</th><th>RPO</th><th>intact</th></tr></thead><tbody>{rows}</tbody></table></body></html>"
    )
    index = root / "index.html"
    write_whole(index, page)
    return index


def report_folder(root: Path, started: datetime, scenario: str) -> Path:
    """``reports/<YYYY-MM-DD>/<HHMMSS>-<scenario>/`` (a suffix keeps two runs in one second apart)."""
    base = root / f"{started:%Y-%m-%d}" / f"{started:%H%M%S}-{scenario}"
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise ConfigError(
                f"cannot create the report folder {folder} ({exc.strerror or type(exc).__name__}): "
                f"--reports / DRLIB_REPORTS must name a folder drlib can write ({root})"
            ) from exc
