"""Notebooks are reviewed like code: no outputs, a tagged parameters cell matching the scenario,
thin steps; and each one executes (a dry run here; the drills execute them for real)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from drlib.notebooks import render
from drlib.scenarios import SCENARIOS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAX_STEP_LINES = 3


def load(scenario_id: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{scenario_id}.ipynb", as_version=4)


def test_every_scenario_has_a_notebook_and_every_notebook_a_scenario() -> None:
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == set(SCENARIOS)


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_the_committed_notebook_is_exactly_what_the_scenario_model_generates(scenario_id: str) -> None:
    committed = (NOTEBOOKS / f"{scenario_id}.ipynb").read_text(encoding="utf-8")
    assert committed == render(SCENARIOS[scenario_id]) + "\n", "run: .venv/bin/python -m drlib.notebooks"


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_every_step_has_a_title_and_all_four_texts(scenario_id: str) -> None:
    steps = SCENARIOS[scenario_id].steps
    assert steps, "a scenario has steps"
    for spec in steps:
        doc = spec.doc
        for part in ("title", "what", "why", "if_fails", "roll_back"):
            assert getattr(doc, part).strip(), f"{scenario_id}.{spec.method} has no {part}"
        assert f"**What:** {doc.what}" in doc.markdown() and f"**Roll back:** {doc.roll_back}" in doc.markdown()


def test_step_names_and_methods_are_unique_within_a_scenario() -> None:
    for scenario in SCENARIOS.values():
        methods = [s.method for s in scenario.steps]
        names = [s.name for s in scenario.steps]
        assert len(set(methods)) == len(methods) and len(set(names)) == len(names), scenario.id


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_notebooks_are_committed_without_outputs(scenario_id: str) -> None:
    for cell in load(scenario_id).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_the_parameters_cell_declares_exactly_the_scenarios_parameters(scenario_id: str) -> None:
    cells = [c for c in load(scenario_id).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assigned = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), "parameters are literals, one per line"
        assigned[node.targets[0].id] = ast.literal_eval(node.value)  # type: ignore[attr-defined]
    assert assigned == {p.name: p.default for p in SCENARIOS[scenario_id].params}


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_every_step_is_a_markdown_cell_then_one_short_call(scenario_id: str) -> None:
    cells = load(scenario_id).cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        assert cells[index - 1].cell_type == "markdown", f"cell {index} has no explanation above it"
        lines = [line for line in cell.source.splitlines() if line.strip()]
        assert len(lines) <= MAX_STEP_LINES, f"cell {index} is not thin: {cell.source}"


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_the_notebook_executes_as_a_dry_run_without_touching_anything(
    scenario_id: str, healthy_sandbox, target, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with target.connect() as conn:
        before = conn.execute("SELECT count(*) FROM content_jobs").fetchone()
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{scenario_id}.ipynb"),
        str(output),
        parameters={"confirm": False, "evidence_path": str(tmp_path / "evidence.json")},
        progress_bar=False,
        cwd=str(NOTEBOOKS.parent),
    )
    executed = nbformat.read(output, as_version=4)
    summary = "".join(str(o) for o in executed.cells[-1].outputs)
    assert "DRY RUN — nothing changed" in summary
    writes = {s.name for s in SCENARIOS[scenario_id].steps if s.dry_run != "run" and not s.composite}
    statuses = {s["name"]: s["status"] for s in json.loads((tmp_path / "evidence.json").read_text())["steps"]}
    assert writes <= set(statuses), f"steps not recorded: {writes - set(statuses)}"
    assert all(statuses[name] == "skipped" for name in writes), statuses
    with target.connect() as conn:
        assert conn.execute("SELECT count(*) FROM content_jobs").fetchone() == before
    assert healthy_sandbox.api_running()
