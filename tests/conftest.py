"""Shared fixtures. Tests never reach a model hub: everything is built locally or read from data/."""

from __future__ import annotations

import os
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
