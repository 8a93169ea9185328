"""Heavy third-party modules loaded on first use: a command that never shows a table, talks to S3
or to Redis starts without importing pandas, boto3 or redis (a second or so of a CLI's start).

Usage, keeping the real module's types for mypy::

    if TYPE_CHECKING:
        import botocore.exceptions
    else:
        botocore = lazy_module("botocore.exceptions")
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for a top-level package; the first attribute read imports it and the submodules named
    (``importlib`` holds the import lock, so threads that race here import it once)."""

    def __init__(self, package: str, modules: tuple[str, ...]) -> None:
        super().__init__(package)
        self._drlib_modules = modules

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute == "_drlib_modules":
            raise AttributeError(attribute)
        for name in self._drlib_modules:
            importlib.import_module(name)
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(*names: str) -> Any:
    """A stand-in for the top-level package of ``names`` (all under one package) that imports them
    when first used: ``lazy_module("boto3.s3.transfer")`` reads as ``boto3``."""
    packages = {name.split(".")[0] for name in names}
    if len(packages) != 1:
        raise ValueError(f"lazy_module takes modules of one package, not {sorted(packages)}")
    return LazyModule(packages.pop(), names)
