"""The project keeps its promises: the README documents every CLI command, every command has
--help, environment.yml stays in step with pyproject.toml, and CI runs the README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from drlib.cli import main

ROOT = Path(__file__).resolve().parent.parent


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(commands(command, path))
    return found


@pytest.mark.parametrize("path", commands(main), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(
    "path",
    [p for p in commands(main) if not isinstance(main.commands.get(p[0]), click.Group) or len(p) > 1],
    ids=" ".join,
)
def test_the_readme_documents_every_command(path: tuple[str, ...]) -> None:
    assert f"drlib {' '.join(path)}" in (ROOT / "README.md").read_text()


def test_environment_yml_installs_the_same_packages_as_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = (
        set(pyproject["dependencies"])
        | set(pyproject["optional-dependencies"]["dev"])
        | set(pyproject["optional-dependencies"]["lab"])
        | set(pyproject["optional-dependencies"]["sandbox"])
    )
    env = (ROOT / "environment.yml").read_text()
    listed = set(re.findall(r"^\s+- ([A-Za-z][\w.\[\]-]*[<>!~]=[^\s#]*)\s*$", env, re.MULTILINE))
    assert listed == wanted
    assert re.search(r"^\s+- postgresql", env, re.MULTILINE) and re.search(r"^\s+- redis-server", env, re.MULTILINE)


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
