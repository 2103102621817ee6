"""Lazy imports of optional dependencies, with an error that says which extra to install.

The base install is the lean runtime; everything heavier (bm25s, torch, transformers, trl,
optimum, tensorrt, …) is an extra and is imported only inside the function that needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
from collections.abc import Iterable
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise :class:`MissingExtraError` telling the user what to install.

    >>> require("json", "dev", "reading JSON").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}). Install the extra: pip install 'rrdistill[{extra}]'"
        ) from exc


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones left out), for provenance records.

    >>> "numpy" in package_versions(["numpy", "surely-not-installed-xyz"])
    True
    """
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions
