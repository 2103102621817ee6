"""The suite's own rule: a core test module that skips whole (a missing dependency) fails the run.

Checked on throwaway test files in a subprocess with this suite's conftest, and, as the control
that shows the check can fail, with pytest's default behaviour (no conftest): the same file passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

MISSING = "rrdistill_no_such_dependency"


def _pytest(root: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(root / "pytest.ini"),
            *files,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _suite(root: Path, with_conftest: bool) -> Path:
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    if with_conftest:
        shutil.copy(Path(__file__).with_name("conftest.py"), root / "conftest.py")
    (root / "test_core.py").write_text(
        f"import pytest\n\n{MISSING} = pytest.importorskip({MISSING!r})\n\n\ndef test_core():\n    pass\n"
    )
    for mark in ("gpu", "optional"):
        (root / f"test_{mark}.py").write_text(
            f"import pytest\n\npytestmark = [pytest.mark.{mark}]\npytest.importorskip({MISSING!r})\n\n\n"
            "def test_it():\n    pass\n"
        )
    (root / "test_plain.py").write_text("def test_plain():\n    pass\n")
    return root


def test_a_core_module_that_skips_whole_fails_the_run(tmp_path: Path) -> None:
    root = _suite(tmp_path / "suite", with_conftest=True)
    run = _pytest(root, "test_core.py", "test_plain.py")
    assert run.returncode != 0, run.stdout + run.stderr
    assert "test_core.py skipped as a whole" in run.stdout and MISSING in run.stdout, run.stdout

    control = _pytest(_suite(tmp_path / "default", with_conftest=False), "test_core.py", "test_plain.py")
    assert control.returncode == 0 and "1 skipped" in control.stdout, control.stdout  # pytest alone: silent


def test_modules_marked_optional_or_gpu_may_skip(tmp_path: Path) -> None:
    root = _suite(tmp_path / "suite", with_conftest=True)
    run = _pytest(root, "test_gpu.py", "test_optional.py", "test_plain.py", "-rs")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 2 skipped" in run.stdout, run.stdout
