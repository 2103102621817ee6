"""Shared fixtures. Tests never reach a model hub: everything is built locally or read from data/."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


OPTIONAL_MARKS = frozenset({"gpu", "optional"})
"""A test module marked with one of these (``pytestmark``, set before its imports) may skip whole."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "optional: the module may skip whole when its dependencies are missing (not CI's core)"
    )


def _module_marks(excinfo: pytest.ExceptionInfo[BaseException], path: Path) -> set[str]:
    """Names of the marks in `pytestmark` of the module at `path`, as its top level had set them when
    it raised (the module object itself is gone after a failed import; its frame is not)."""
    names: set[str] = set()
    tb = excinfo.tb
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>" and Path(frame.f_code.co_filename) == path:
            marks = frame.f_globals.get("pytestmark", [])
            for mark in marks if isinstance(marks, list | tuple) else [marks]:
                names.add(getattr(mark, "name", ""))
        tb = tb.tb_next
    return names


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A test module that skips whole (``importorskip`` of a missing dependency) is an error.

    Otherwise ``pip install -e ".[dev]" && pytest`` passes while whole files never ran. Only a
    module marked ``gpu`` or ``optional`` before the import that skips may skip.
    """
    report = yield
    call = getattr(report, "call", None)
    if not (report.skipped and isinstance(collector, pytest.Module) and call is not None and call.excinfo):
        return report
    if _module_marks(call.excinfo, collector.path) & OPTIONAL_MARKS:
        return report
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{collector.nodeid} skipped as a whole ({reason}). A core test module must run: install the "
        f"test dependencies (pip install -e '.[dev]'), or mark the module optional "
        f"(pytestmark = pytest.mark.optional, before the import) if it really is."
    )
    return report


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import tiny_cross_encoder

    return tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import onnx_bundle_from_checkpoint

    return onnx_bundle_from_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("bundles") / "tiny-fp32")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2 checkpoint (BPE trained on a slice of SciFact, Qwen2.5 template)."""
    pytest.importorskip("trl")
    from rrdistill.distill.tiny import TinyModelConfig, build_tiny_model

    config = TinyModelConfig(
        corpus=str(DATA / "scifact"),
        max_documents=300,
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
    )
    return build_tiny_model(config, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def lm_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny listwise LMs exported as bundles: plain BPE identifiers, and whole-token ones (FIRST)."""
    from rrdistill.distill.tiny import TinyModelConfig, build_tiny_model
    from rrdistill.export.causal_lm import ListwiseExportConfig, export_listwise_lm

    root = tmp_path_factory.mktemp("listwise")
    tiny = {
        "corpus": str(DATA / "scifact"),
        "max_documents": 300,
        "vocab_size": 600,
        "hidden_size": 32,
        "intermediate_size": 64,
    }
    plain = build_tiny_model(TinyModelConfig(**tiny), root / "plain-ckpt")
    first = build_tiny_model(TinyModelConfig(**tiny, identifier_tokens=20), root / "first-ckpt")
    config = ListwiseExportConfig(passage_max_tokens=24, max_new_tokens_fast=12, max_new_tokens_reasoning=16)
    return {
        "plain-ckpt": plain,
        "first-ckpt": first,
        "plain": export_listwise_lm(plain, root / "plain", config),
        "first": export_listwise_lm(first, root / "first", config),
    }
