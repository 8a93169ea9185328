# mypy: disallow-untyped-calls=False, warn-return-any=False
"""Scenario notebooks, generated from the scenario model: an introduction, the parameters (documented
and in a ``parameters``-tagged cell), a start cell, then per step its markdown (what, why, if it
fails, roll back) and one call, and the summary. ``python -m drlib.notebooks`` rewrites
``notebooks/``; a test checks the committed notebooks are exactly what this produces."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from drlib.scenarios import SCENARIOS
from drlib.scenarios.base import SOURCE_NOTEBOOKS, Scenario


def _parameters_doc(scenario: Scenario) -> str:
    return "\n".join(
        f"- `{p.name}` ({p.type.__name__}, default `{p.default!r}`): {p.doc}"
        + (f"; one of {', '.join(map(repr, p.choices))}" if p.choices else "")
        for p in scenario.params
    )


def build_notebook(scenario: Scenario) -> nbformat.NotebookNode:
    """The notebook of ``scenario``, without outputs."""
    runbook = scenario.runbook
    cells = [
        new_markdown_cell(
            f"# {scenario.title}\n{scenario.summary}\n\nRun it cell by cell during an incident, or headless "
            f"with `drlib drill run {scenario.id}`. With `confirm = False` (the default) every destructive "
            "step only shows what it *would* do, and the summary says DRY RUN."
        ),
        new_markdown_cell(
            "## Parameters\nSecrets are never parameters: they come from the environment or the "
            f"profile's secrets file.\n\n{_parameters_doc(scenario)}"
        ),
    ]
    params_cell = new_code_cell("\n".join(f"{p.name} = {p.default!r}  # {p.doc}" for p in scenario.params))
    params_cell.metadata["tags"] = ["parameters"]
    cells.append(params_cell)
    cells.append(new_markdown_cell("## Start\nValidates the parameters and loads the profile before any step runs."))
    cells.append(
        new_code_cell(
            f"from {runbook.__module__} import {runbook.__name__}\n\n"
            f"runbook = {runbook.__name__}.from_namespace(globals())"
        )
    )
    for spec in scenario.steps:
        cells.append(new_markdown_cell(spec.doc.markdown()))
        cells.append(new_code_cell(f"runbook.{spec.method}()"))
    cells.append(
        new_markdown_cell(
            "## Summary\nEvery step with its duration and every check with expected and observed values; "
            "a dry run says DRY RUN. Drills turn this into the dated report."
        )
    )
    cells.append(new_code_cell("runbook.summary()"))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{scenario.id[:20]}-{index:02d}"
    return notebook


def render(scenario: Scenario) -> str:
    """The notebook file's text, exactly as committed."""
    return str(nbformat.writes(build_notebook(scenario)))


def write_notebooks(folder: Path = SOURCE_NOTEBOOKS) -> list[Path]:
    written = []
    for scenario in SCENARIOS.values():
        path = folder / f"{scenario.id}.ipynb"
        path.write_text(render(scenario) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_notebooks(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_NOTEBOOKS):
        print(f"wrote {path}")
