"""The import directions that keep the layout honest.

core (``rrdistill/*.py``) ← runtime ← export; core ← runtime ← distill; the applications (CLI
commands, pipeline, bench) sit on top and nothing below imports them. The bundle format lives in
``runtime/`` because it is the contract export writes and the runtime reads: the runtime must load
a bundle with nothing from ``export/`` or ``distill/`` installed.

Lazy imports inside functions count: a dependency is a dependency whenever it is taken.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "export": {"core", "runtime", "export"},
    "distill": {"core", "runtime", "distill"},
    "app": {"core", "runtime", "export", "distill", "app"},
}
APPLICATIONS = ("commands", "pipeline", "bench")


def layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "rrdistill":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] in ("distill", "export", "runtime"):
        return parts[1]
    if parts[1] in (*APPLICATIONS, "cli"):
        return "app"
    return "core"


def layer_of_file(path: Path) -> str:
    relative = path.relative_to(REPO)
    top = relative.parts[0]
    if top in ("distill", "export", "runtime"):
        return top
    if relative.parts[1] in APPLICATIONS or relative.name == "cli.py":
        return "app"
    return "core"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def source_files() -> list[Path]:
    return [
        f for folder in ("rrdistill", "distill", "export", "runtime") for f in (REPO / folder).rglob("*.py")
    ]


def test_no_relative_imports() -> None:
    """Relative imports would hide an edge from the check below (and break the folder mapping)."""
    offenders = [
        str(f.relative_to(REPO))
        for f in source_files()
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(f.read_text())))
    ]
    assert offenders == []


def test_every_import_goes_in_an_allowed_direction() -> None:
    violations: dict[str, list[str]] = defaultdict(list)
    for path in source_files():
        source = layer_of_file(path)
        for module in imported_modules(path):
            target = layer_of_module(module)
            if target is not None and target not in ALLOWED[source]:
                violations[f"{source} → {target}"].append(f"{path.relative_to(REPO)}: {module}")
    assert dict(violations) == {}


def test_the_check_sees_a_forbidden_edge(tmp_path: Path) -> None:
    """The walker is not vacuous: a lazy import of export inside a runtime function is found."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from rrdistill.export.pipeline import export_bundle\n")
    targets = {layer_of_module(m) for m in imported_modules(module)}
    assert "export" in targets and "export" not in ALLOWED["runtime"]


@pytest.mark.parametrize(
    "module",
    [
        "rrdistill.runtime",
        "rrdistill.runtime.reranker",
        "rrdistill.runtime.reasoning",
        "rrdistill.runtime.cascade",
        "rrdistill.runtime.bundle",
    ],
)
def test_importing_the_runtime_loads_no_stage_but_itself(module: str) -> None:
    code = (
        f"import sys, json, {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('rrdistill.export', "
        "'rrdistill.distill', 'rrdistill.commands', 'rrdistill.pipeline', 'rrdistill.bench', "
        "'torch', 'transformers')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, check=True)
    assert json.loads(out.stdout) == []
