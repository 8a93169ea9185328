"""Notebooks are reviewed like code: no outputs, a tagged parameters cell matching the scenario,
thin steps; and each one executes (a dry run here; the drills execute them for real)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

from drlib.scenarios import SCENARIOS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAX_STEP_LINES = 3


def load(scenario_id: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{scenario_id}.ipynb", as_version=4)


def test_every_scenario_has_a_notebook_and_every_notebook_a_scenario() -> None:
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == set(SCENARIOS)


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
        parameters={"confirm": False},
        progress_bar=False,
        cwd=str(NOTEBOOKS.parent),
    )
    executed = nbformat.read(output, as_version=4)
    text = "".join(str(o) for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "Dry run" in text or "dry_run" in text
    with target.connect() as conn:
        assert conn.execute("SELECT count(*) FROM content_jobs").fetchone() == before
    assert healthy_sandbox.api_running()
