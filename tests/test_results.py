"""The typed results schema: the committed JSON Schema is the one the models produce, results.json
files written before the schema existed still load, and every status renders in the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drlib.report import index_entry, render_report, write_checksums, write_index
from drlib.results import SCHEMA_FILE, DrillResults, ResultsUnreadable, results_schema

DATA = Path(__file__).resolve().parent / "data"


def test_the_committed_json_schema_is_the_one_the_models_produce() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(results_schema(), sort_keys=True))


def test_a_results_json_written_before_schema_versions_still_loads() -> None:
    old = DrillResults.load(DATA / "results-schema1.json")
    assert old.schema_version == 1 and old.status == "error"
    assert old.error is not None and old.error.step == "restore_database"
    assert old.data_loss["content_jobs"].lost == 25
    assert [c.name for c in old.failing_checks] == ["row_count:users", "rto:database_loss"]
    assert old.stack_state == {} and old.next_steps == []


def test_something_that_is_not_results_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"scenario": 3}')
    with pytest.raises(ResultsUnreadable, match=r"not a readable drlib results\.json"):
        DrillResults.load(tmp_path / "results.json")


@pytest.mark.parametrize("status", ["passed", "failed", "error", "dry_run", "refused"])
def test_every_status_renders_a_report_with_its_banner(status: str, tmp_path: Path) -> None:
    results = DrillResults.load(DATA / "results-schema1.json").model_copy(update={"status": status, "notebooks": []})
    page = render_report(results, tmp_path)
    assert {"dry_run": "DRY RUN", "refused": "REFUSED"}.get(status, status.upper()) in page


def test_the_index_lists_a_folder_without_results_as_incomplete(tmp_path: Path) -> None:
    done = tmp_path / "2026-11-26" / "163239-postgres_database_loss"
    done.mkdir(parents=True)
    shutil.copy(DATA / "results-schema1.json", done / "results.json")
    broken = tmp_path / "2026-11-26" / "170000-redis_loss"
    broken.mkdir()
    write_index(tmp_path)
    entries = json.loads((tmp_path / "index.json").read_text())
    assert {e["folder"]: e["status"] for e in entries} == {
        "2026-11-26/170000-redis_loss": "incomplete",
        "2026-11-26/163239-postgres_database_loss": "error",
    }
    assert index_entry(tmp_path, done)["intact"] == "ALTERED"  # no SHA256SUMS: never written by drlib


def _report(root: Path, name: str) -> Path:
    folder = root / "2026-11-26" / name
    folder.mkdir(parents=True)
    shutil.copy(DATA / "results-schema1.json", folder / "results.json")
    write_checksums(folder)
    return folder


def test_a_run_updates_its_own_row_of_the_index_and_keeps_the_others(tmp_path: Path) -> None:
    first, second = _report(tmp_path, "163239-postgres_database_loss"), _report(tmp_path, "170000-redis_loss")
    write_index(tmp_path)
    (first / "results.json").write_text((first / "results.json").read_text() + " ")  # altered after indexing
    third = _report(tmp_path, "180000-storage_loss")  # never indexed: read although another run is named
    shutil.rmtree(second)  # gone: dropped from the index
    write_index(tmp_path, changed=third)
    rows = {e["folder"]: e["intact"] for e in json.loads((tmp_path / "index.json").read_text())}
    assert rows == {"2026-11-26/163239-postgres_database_loss": "yes", "2026-11-26/180000-storage_loss": "yes"}
    write_index(tmp_path, changed=first)  # the folder a run names is always read again
    rows = {e["folder"]: e["intact"] for e in json.loads((tmp_path / "index.json").read_text())}
    assert rows["2026-11-26/163239-postgres_database_loss"] == "ALTERED"
    (third / "results.json").write_text((third / "results.json").read_text() + " ")
    write_index(tmp_path)  # `drlib reports index`: every folder checked again
    rows = {e["folder"]: e["intact"] for e in json.loads((tmp_path / "index.json").read_text())}
    assert rows["2026-11-26/180000-storage_loss"] == "ALTERED"


@pytest.mark.parametrize(
    "index",
    [
        "not json",
        '{"folder": "x"}',
        '[{"folder": "2026-11-26/163239-postgres_database_loss", "status": 1}]',
        '[{"folder": "2026-11-26/163239-postgres_database_loss", "status": "passed", "intact": "yes", '
        '"rto_seconds": "<script>"}]',
    ],
)
def test_an_index_json_that_is_not_an_index_is_rebuilt_from_the_folders(tmp_path: Path, index: str) -> None:
    folder = _report(tmp_path, "163239-postgres_database_loss")
    (tmp_path / "index.json").write_text(index)
    write_index(tmp_path, changed=tmp_path / "2026-11-26" / "170000-other")
    entries = json.loads((tmp_path / "index.json").read_text())
    assert entries == [index_entry(tmp_path, folder)]
    assert "<script>" not in (tmp_path / "index.html").read_text()


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999", "true"])
def test_a_kept_row_with_a_number_that_is_not_a_duration_is_read_again(tmp_path: Path, number: str) -> None:
    folder = _report(tmp_path, "163239-postgres_database_loss")
    row = f'{{"folder": "{folder.relative_to(tmp_path).as_posix()}", "status": "passed", "intact": "yes", '
    (tmp_path / "index.json").write_text(f'[{row}"rto_seconds": {number}, "rpo_seconds": null}}]')
    write_index(tmp_path, changed=_report(tmp_path, "170000-redis_loss"))  # a run's last step: must not raise
    entries = json.loads((tmp_path / "index.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert index_entry(tmp_path, folder) in entries


INDEX_READER = """
import json, sys, time
from pathlib import Path
index, torn, end = Path(sys.argv[1]) / "index.json", 0, time.monotonic() + 1.5
while time.monotonic() < end:
    try:
        json.loads(index.read_text())
    except ValueError:
        torn += 1
print(torn)
"""


def test_the_index_is_never_seen_half_written(tmp_path: Path) -> None:
    for n in range(40):
        _report(tmp_path, f"{n:06d}-redis_loss")
    write_index(tmp_path)
    reader = subprocess.Popen([sys.executable, "-c", INDEX_READER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    while reader.poll() is None:  # another run finishing, over and over, while the index is read
        write_index(tmp_path, changed=tmp_path / "2026-11-26" / "000000-redis_loss")
    assert reader.communicate()[0].strip() == "0"


INDEX_WRITER = """
import sys, time
from pathlib import Path
from drlib.report import _index_locked
with _index_locked(Path(sys.argv[1])):
    print("writing", flush=True)
    time.sleep(1)
"""


def test_a_run_s_index_waits_for_the_index_another_run_is_writing(tmp_path: Path) -> None:
    _report(tmp_path, "163239-postgres_database_loss")
    other = subprocess.Popen([sys.executable, "-c", INDEX_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None and other.stdout.readline() == "writing\n"
    started = time.monotonic()
    write_index(tmp_path, changed=_report(tmp_path, "170000-redis_loss"))  # read after the other run's write
    assert time.monotonic() - started > 0.5
    assert other.wait(timeout=30) == 0
