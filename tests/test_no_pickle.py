"""Nothing rrdistill writes or loads is a pickle: safetensors, ONNX and JSON only."""

from __future__ import annotations

import re
from pathlib import Path

SAFE_BUNDLE_SUFFIXES = {".onnx", ".json", ".plan", ".txt", ".safetensors", ".onnx_data"}
UNSAFE = re.compile(
    r"\bimport pickle\b|\bpickle\.(load|loads)\b|\bjoblib\b|\bdill\b|torch\.load\((?![^)]*weights_only=True)"
)


def test_no_code_path_unpickles(repo: Path) -> None:
    offenders = []
    for folder in ("rrdistill", "distill", "export", "runtime", "benchmarks"):
        for path in (repo / folder).rglob("*.py"):
            for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                if UNSAFE.search(line):
                    offenders.append(f"{path.relative_to(repo)}:{lineno}: {line.strip()}")
    assert offenders == []


def test_bundles_hold_only_safe_formats(tiny_bundle: Path) -> None:
    suffixes = {p.suffix for p in tiny_bundle.rglob("*") if p.is_file()}
    assert suffixes <= SAFE_BUNDLE_SUFFIXES
    assert ".onnx" in suffixes
