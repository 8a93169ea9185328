"""Notebook parameters: declared once per scenario, validated before the first step runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drlib.exceptions import ParameterError
from drlib.secrets import looks_like_secret_name


@dataclass(frozen=True)
class Param:
    """One notebook parameter: name, type, default, allowed values and what it means."""

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: raises :class:`ParameterError` when the value is not acceptable (e.g. not an ISO 8601 time)
    check: Callable[[Any], Any] | None = None


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(param: Param, value: Any) -> Any:
    """Turn a value (a string from the command line, or a literal) into the parameter's type."""
    if param.type is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ParameterError(f"parameter {param.name!r} must be true or false, not {value!r}")
    if param.type is int:
        if isinstance(value, bool):
            raise ParameterError(f"parameter {param.name!r} must be a whole number, not {value!r}")
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ParameterError(f"parameter {param.name!r} must be a whole number, not {value!r}") from None
    if param.type is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {param.name!r} must be a number, not {value!r}") from None
    if not isinstance(value, str):
        raise ParameterError(f"parameter {param.name!r} must be text, not {type(value).__name__} {value!r}")
    return value


def validate(params: tuple[Param, ...], values: Mapping[str, Any], *, scenario: str) -> dict[str, Any]:
    """Every parameter with its default filled in; unknown, secret-like or invalid ones refused."""
    spec = {p.name: p for p in params}
    for name in values:
        if looks_like_secret_name(name) and name not in spec:
            raise ParameterError(
                f"{name!r} looks like a secret: secrets are never parameters. Put it in the "
                "environment or the profile's secrets file instead."
            )
        if name not in spec:
            raise ParameterError(f"unknown parameter {name!r} for scenario {scenario!r}; known: {', '.join(spec)}")
    resolved: dict[str, Any] = {}
    for param in params:
        value = coerce(param, values[param.name]) if param.name in values else param.default
        if param.choices is not None and value not in param.choices:
            raise ParameterError(
                f"parameter {param.name!r} is {value!r}; allowed: {', '.join(map(repr, param.choices))}"
            )
        if param.minimum is not None and value < param.minimum:
            raise ParameterError(f"parameter {param.name!r} must be at least {_bound(param.minimum)}, not {value!r}")
        if param.maximum is not None and value > param.maximum:
            raise ParameterError(f"parameter {param.name!r} must be at most {_bound(param.maximum)}, not {value!r}")
        if param.check is not None and param.name in values:
            param.check(value)
        resolved[param.name] = value
    return resolved


def _bound(value: float) -> str:
    """A limit as an operator types it: ``67108864``, ``0.5`` (never ``6.71089e+07``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
