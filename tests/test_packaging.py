"""The distribution: folder → subpackage mapping in a built wheel and in an editable install,
and the import-cost contract of the lean core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SUBPACKAGES = (
    "rrdistill",
    "rrdistill.bench",
    "rrdistill.commands",
    "rrdistill.pipeline",
    "rrdistill.distill",
    "rrdistill.distill.teacher",
    "rrdistill.distill.students",
    "rrdistill.export",
    "rrdistill.runtime",
)
HEAVY = ("torch", "transformers", "optimum", "trl", "sentence_transformers", "onnx", "datasets")
IMPORT_CHECK = (
    "import importlib, json, sys; "
    f"mods = {list(SUBPACKAGES)!r}; "
    "files = {m: importlib.import_module(m).__file__ for m in mods}; "
    "print(json.dumps(files))"
)


def uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", "")}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "uv", *args], cwd=cwd, env=env, text=True, capture_output=True, check=True
    )


def fresh_venv(where: Path) -> Path:
    uv("venv", "-q", "--python", sys.executable, str(where / "venv"), cwd=where)
    return where / "venv" / "bin" / "python"


def imported_files(python: Path, cwd: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-c", IMPORT_CHECK], cwd=cwd, text=True, capture_output=True, check=True
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def wheel(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--wheel", "--no-build-isolation", "--out-dir", str(out), str(repo), cwd=out)
    (built,) = out.glob("rrdistill-*.whl")
    return built


def test_wheel_maps_the_stage_folders_to_subpackages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in SUBPACKAGES:
        assert package.replace(".", "/") + "/__init__.py" in names
    assert {
        "rrdistill/io.py",
        "rrdistill/metrics.py",
        "rrdistill/prompts.py",
        "rrdistill/window.py",
        "rrdistill/cli.py",
    } <= names
    # the stage folders must not also be installed as top-level packages
    assert not any(n.split("/")[0] in {"distill", "export", "runtime", "tests", "data"} for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rrdistill = rrdistill.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_installs_and_imports_every_subpackage(wheel: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path)
    uv("pip", "install", "-q", "--python", str(python), str(wheel), cwd=tmp_path)
    files = imported_files(python, tmp_path)
    assert all("site-packages" in f for f in files.values())
    assert files["rrdistill.runtime"].endswith(os.path.join("rrdistill", "runtime", "__init__.py"))
    cli = subprocess.run(
        [str(python.parent / "rrdistill"), "--help"], text=True, capture_output=True, check=True
    )
    assert "retrieve" in cli.stdout


def test_editable_install_imports_the_source_folders(repo: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path)
    uv("pip", "install", "-q", "--python", str(python), "-e", str(repo), cwd=tmp_path)
    files = imported_files(python, tmp_path)
    assert files["rrdistill"] == str(repo / "rrdistill" / "__init__.py")
    for stage in ("distill", "export", "runtime"):
        assert files[f"rrdistill.{stage}"] == str(repo / stage / "__init__.py")


def test_core_and_runtime_import_without_heavy_frameworks(repo: Path, tmp_path: Path) -> None:
    code = (
        "import sys, json; import rrdistill, rrdistill.runtime, rrdistill.io, rrdistill.metrics, "
        "rrdistill.prompts, rrdistill.window, rrdistill.types, rrdistill.cli; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, text=True, capture_output=True, check=True
    )
    assert json.loads(out.stdout) == []
