"""ONNX export of a Hugging Face cross-encoder through Optimum, and graph optimisation with ORTOptimizer.

Optimum does the export (``main_export``, task ``text-classification``; a bi-encoder's transformer
with ``feature-extraction``): it knows each
architecture's inputs and dynamic axes (BERT, MiniLM, ELECTRA, DeBERTa, RoBERTa, XLM-R, …), so
nothing here traces a model by hand. Optimisation levels are Optimum's:

- ``O1``: onnxruntime's basic graph optimisations (standard ONNX ops only: TensorRT can parse it);
- ``O2``: + transformer fusions (Attention, SkipLayerNormalization, BiasGelu: onnxruntime contrib ops);
- ``O3``: + GELU approximation;
- ``O4``: ``O3`` in mixed precision fp16 with fp32 inputs/outputs (meant for GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrdistill.export import ExportError
from rrdistill.extras import require

# The source model's identity in a bundle's provenance: the core's one rule, re-exported for export.pipeline.
from rrdistill.hashing import checkpoint_fingerprint as checkpoint_fingerprint

OPTIMIZATION_LEVELS = ("O1", "O2", "O3", "O4")
TRT_COMPATIBLE_LEVELS = (None, "O1")
"""Levels whose graphs keep to standard ONNX ops (O2+ fuse into onnxruntime-only contrib ops)."""


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX file with the names the runtime feeds and reads."""

    path: Path
    inputs: list[str]
    output: str

    @classmethod
    def read(cls, path: Path, output: str = "logits") -> OnnxModel:
        """The graph at `path`, checked to have `output` (a cross-encoder's ``logits``, an encoder's
        ``last_hidden_state``)."""
        onnx = require("onnx", "export", "reading ONNX models")
        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        outputs = [o.name for o in graph.output]
        if output not in outputs:
            raise ExportError(f"{path}: the exported graph has no {output!r} output (outputs: {outputs})")
        return cls(path, inputs, output)


def load_model_config(checkpoint: str | os.PathLike[str]) -> Any:
    """The checkpoint's transformers config (a bi-encoder's transformer needs no more than this)."""
    transformers = require("transformers", "export", "ONNX export")
    root = Path(checkpoint)
    if not (root / "config.json").is_file():
        raise ExportError(f"{root}: not a Hugging Face checkpoint folder (no config.json)")
    return transformers.AutoConfig.from_pretrained(root)


def load_cross_encoder_config(checkpoint: str | os.PathLike[str]) -> Any:
    """The checkpoint's transformers config, checked to be a one-logit sequence classifier."""
    root = Path(checkpoint)
    config = load_model_config(root)
    if config.num_labels != 1:
        raise ExportError(
            f"{root}: the model has num_labels={config.num_labels}; a cross-encoder reranker has one "
            "relevance logit (train or load it with num_labels=1)"
        )
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ExportError(
            f"{root}: architecture {', '.join(architectures)} has no classification head; a cross-encoder "
            "is a *ForSequenceClassification model (e.g. saved by sentence-transformers' CrossEncoder)"
        )
    return config


def default_max_length(config: Any, tokenizer: Any = None, cap: int = 512) -> int:
    """The model's position budget, capped at `cap`, and at the tokenizer's ``model_max_length``
    when the checkpoint sets one (sentence-transformers saves the length a CrossEncoder was trained
    with there; a fine-tuned MiniLM measured far worse at 2-5x its training length)."""
    positions = getattr(config, "max_position_embeddings", None) or cap
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        positions -= 2  # RoBERTa-style position ids start after the padding index
    trained = getattr(tokenizer, "model_max_length", None)
    if isinstance(trained, int) and 8 <= trained < 100_000:  # HF's "unset" is a huge sentinel
        positions = min(positions, trained)
    return int(min(positions, cap))


TASK_OUTPUTS = {"text-classification": "logits", "feature-extraction": "last_hidden_state"}
"""Optimum tasks export runs, and the output the runtime reads: a cross-encoder's relevance logit,
a bi-encoder's token states (pooled by the runtime as the manifest says)."""


def export_onnx(
    checkpoint: str | os.PathLike[str],
    out_dir: Path,
    opset: int | None = None,
    task: str = "text-classification",
) -> OnnxModel:
    """Export `checkpoint` (fp32) with Optimum's exporter into `out_dir`/model.onnx."""
    exporters = require("optimum.exporters.onnx", "export", "ONNX export")
    exporters.main_export(
        str(checkpoint),
        out_dir,
        task=task,
        # a CrossEncoder folder, or a SentenceTransformer's Transformer module, is a transformers checkpoint
        library_name="transformers",
        opset=opset,
        do_validation=False,  # parity is measured on the final bundle (export/validate.py)
    )
    return OnnxModel.read(out_dir / "model.onnx", TASK_OUTPUTS[task])


def optimization_config(level: str | None, *, fp16: bool = False, for_gpu: bool = False) -> Any:
    """Optimum's config for `level`; `fp16` adds mixed precision to any level (``O4`` has it built in).

    ``level=None`` with `fp16` converts the plain graph (O1 rules, no fusions), the form TensorRT
    parses and runs strongly typed.
    """
    configuration = require("optimum.onnxruntime.configuration", "export", "ONNX optimisation")
    if level is None:
        if not fp16:
            raise ValueError("nothing to optimise: give a level or fp16")
        return configuration.OptimizationConfig(
            optimization_level=1,
            enable_transformers_specific_optimizations=False,
            optimize_for_gpu=True,
            fp16=True,
        )
    if level not in OPTIMIZATION_LEVELS:
        raise ExportError(
            f"unknown optimisation level {level!r}: use one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    config = configuration.AutoOptimizationConfig.with_optimization_level(level, for_gpu=for_gpu or fp16)
    config.fp16 = config.fp16 or fp16
    return config


def optimize_onnx(
    model: OnnxModel, model_config: Any, out_dir: Path, level: str | None, *, fp16: bool = False
) -> OnnxModel:
    """Optimise `model` with ORTOptimizer into `out_dir` (optionally converting it to fp16)."""
    optimization = require("optimum.onnxruntime", "export", "ONNX optimisation")
    config = optimization_config(level, fp16=fp16)
    optimizer = optimization.ORTOptimizer([model.path], config=model_config)
    optimizer.optimize(config, out_dir, file_suffix="optimized")
    return OnnxModel.read(out_dir / f"{model.path.stem}_optimized.onnx", model.output)


def fused_operators(model: OnnxModel) -> dict[str, int]:
    """Counts of the onnxruntime contrib ops in the graph (what an optimisation level fused)."""
    onnx = require("onnx", "export", "reading ONNX models")
    counts: dict[str, int] = {}
    for node in onnx.load(str(model.path), load_external_data=False).graph.node:
        if node.domain not in ("", "ai.onnx"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
