"""The one step mechanism. A runbook step is a method decorated with :func:`step`, which holds the
step's notebook text (what, why, if it fails, roll back) next to its code and says how it behaves in
a dry run. Running a step times it, records its checks and status in the evidence, skips or plans it
when ``confirm`` is off, and on an error records the state the stack is left in.

Dry-run behaviour (``dry_run=``):

- ``"run"``: the step only reads (checklists, verification of what is there): it always runs.
- ``"plan"``: the step passes ``confirm`` to the library, which returns a :class:`RestorePlan`
  saying what it *would* do; the plan is shown and nothing is touched.
- ``"skip"``: the step writes (stop a service) or checks what an earlier write did: without
  ``confirm`` it is skipped and shows ``would``.

A ``composite=True`` step is made of other runbooks' steps, which record themselves: it keeps its
notebook text but its body is called directly, so nothing is recorded twice in the evidence.

``needs=`` names the optional components (``app``, ``redis``, ``storage``) a step cannot run without.
On a profile that lacks one, the step is not run: it is recorded ``not_configured`` with a detail that
says which section is missing, and it does not fail the run (in a dry run too). A step that ends the
outage (``ends_outage=True``: the application is healthy again) ends it, without an application, when
the data is back: every check so far passed.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from drlib.checks import Checks, checks_table_html
from drlib.config import Component
from drlib.lazy import lazy_module
from drlib.plans import RestorePlan

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

if TYPE_CHECKING:
    from drlib.scenarios.base import Runbook

DryRun = Literal["run", "plan", "skip"]


def combined(title: str, *outcomes: Outcome) -> Outcome:
    """One outcome of several sub-steps' (a step made of another runbook's steps): their facts and checks."""
    return Outcome(
        title,
        facts={k: v for o in outcomes for k, v in o.facts.items()},
        checks=Checks(c for o in outcomes for c in o.checks),
    )


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A step's table of ``rows`` (pandas is imported here, when a notebook or report shows it: call it
    from ``Outcome.table``'s callable)."""
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class StepDoc:
    """The notebook text of a step: every step has all four parts."""

    title: str
    what: str
    why: str
    if_fails: str
    roll_back: str

    def markdown(self) -> str:
        return (
            f"## {self.title}\n**What:** {self.what}\n\n**Why:** {self.why}\n\n"
            f"**If it fails:** {self.if_fails}\n\n**Roll back:** {self.roll_back}"
        )


@dataclass(frozen=True)
class StepSpec:
    """A runbook step: its evidence name, the method the notebook calls, its text and dry-run mode."""

    name: str
    method: str
    doc: StepDoc
    dry_run: DryRun
    would: str
    composite: bool = False
    needs: tuple[Component, ...] = ()
    ends_outage: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one step did, shown as a small table in the notebook."""

    title: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: Checks = field(default_factory=Checks)
    #: a table shown under the facts, built only when shown (so a command never imports pandas)
    table: Callable[[], pd.DataFrame] | None = None

    @property
    def passed(self) -> bool:
        return self.checks.passed

    @property
    def dry_run(self) -> bool:
        return bool(self.facts.get("dry_run"))

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        if self.facts:
            rows = "".join(
                f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                for k, v in self.facts.items()
            )
            parts.append(f"<table>{rows}</table>")
        if self.table is not None:
            parts.append(self.table().to_html(index=False))
        if self.checks:
            parts.append(checks_table_html(self.checks))
        return "".join(parts)

    def __repr__(self) -> str:
        lines = [self.title, *(f"  {k}: {v}" for k, v in self.facts.items())]
        if self.checks:
            lines.append(repr(self.checks))
        return "\n".join(lines)


R = TypeVar("R", bound="Runbook")
Body = Callable[[R], "Outcome | RestorePlan"]


def step(
    name: str,
    *,
    title: str,
    what: str,
    why: str,
    if_fails: str,
    roll_back: str,
    dry_run: DryRun = "run",
    would: str = "",
    composite: bool = False,
    needs: tuple[Component, ...] = (),
    ends_outage: bool = False,
) -> Callable[[Body[R]], Callable[[R], Outcome]]:
    """Declare a runbook step (see the module docstring for ``dry_run``, ``composite``, ``needs``, ``ends_outage``)."""
    doc = StepDoc(
        title=title,
        what=" ".join(what.split()),
        why=" ".join(why.split()),
        if_fails=" ".join(if_fails.split()),
        roll_back=" ".join(roll_back.split()),
    )

    def decorate(body: Body[R]) -> Callable[[R], Outcome]:
        spec = StepSpec(
            name=name,
            method=body.__name__,
            doc=doc,
            dry_run=dry_run,
            would=would,
            composite=composite,
            needs=needs,
            ends_outage=ends_outage,
        )

        @functools.wraps(body)
        def run(runbook: R) -> Outcome:
            if composite and not runbook.missing(spec):
                result = body(runbook)
                assert isinstance(result, Outcome), f"composite step {name} returns an Outcome"
                return result
            return runbook.run_step(spec, lambda: body(runbook))

        run.__step__ = spec  # type: ignore[attr-defined]
        return run

    return decorate


def step_specs(cls: type) -> list[StepSpec]:
    """The steps a runbook class declares, in the order it declares them (base classes first)."""
    seen: dict[str, StepSpec] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            spec = getattr(value, "__step__", None)
            if isinstance(spec, StepSpec):
                seen[spec.method] = spec
    return list(seen.values())


def not_configured_outcome(spec: StepSpec, detail: str) -> Outcome:
    """How a step shows when the profile lacks a component it needs: not run, and why."""
    return Outcome(f"{spec.doc.title}: not configured", facts={"not configured": detail})


def dry_run_outcome(spec: StepSpec, result: Outcome | RestorePlan | None, *, would: str) -> Outcome:
    """How a step shows in a dry run: the plan it would carry out, or what it would do."""
    if isinstance(result, RestorePlan):
        return Outcome(spec.doc.title, facts={"dry_run": True, "plan": str(result)})
    if isinstance(result, Outcome):
        return Outcome(result.title, facts={"dry_run": True, **result.facts}, checks=result.checks, table=result.table)
    return Outcome(spec.doc.title, facts={"dry_run": True, "would": would or "change the stack (skipped)"})
