"""Cross-encoder students: a teacher's permutations → a small cross-encoder (sentence-transformers).

The teacher's global order of each query's top-k becomes one training list ``(query, [passages
in teacher order], [targets])``; the targets decrease with rank (:mod:`.targets`) and a
sentence-transformers listwise or pairwise loss (:mod:`.losses`) reads them. Only what that
library lacks lives here: the permutation → list conversion and a layer-truncated initial model
(a faster student from any HF encoder). The trainer is the one
supervised training uses (:func:`~.cross_encoder.fit_cross_encoder`), runs are cached by a hash
of everything that determines them, and the output is a plain HF checkpoint that
``rrdistill export`` turns into a bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rrdistill import __version__
from rrdistill.checkpoint_names import BLOCKS_RECORD, checkpoint_name
from rrdistill.distill.students.label import read_labels, results_path_for
from rrdistill.distill.students.losses import STUDENT_LOSSES, student_loss
from rrdistill.distill.students.targets import permutation_targets
from rrdistill.distill.students.trainer import (
    LIBRARIES,
    CrossEncoderTrainConfig,
    FitSettings,
    RankingList,
    TrainedCrossEncoder,
    fit_cross_encoder,
    train_or_cached,
)
from rrdistill.extras import package_versions, require
from rrdistill.hashing import model_fingerprint, sha256_file, sha256_json
from rrdistill.io import atomic_directory, read_requests

_LAYER_KEY = re.compile(r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\.")
"""Transformer block index in a weight name: BERT/RoBERTa/ELECTRA/DeBERTa (``encoder.layer.N.``)
and ModernBERT (``layers.N.``)."""


@dataclass(frozen=True)
class CrossEncoderStudentConfig:
    base_model: str
    """Any HF encoder folder (a bi-encoder, a pretrained LM, or a trained cross-encoder)."""
    labels: str
    """Label JSONL from ``rrdistill label`` (teacher permutations)."""
    requests: str | None = None
    """Request JSONL with the passage texts; default: the labels' ``.results.jsonl`` beside them."""
    data: str | None = None
    """BEIR folder, only for the supervised baseline of the same architecture."""
    layers: int | None = None
    """Keep N transformer blocks of `base_model` (None: all)."""
    layer_selection: str = "spread"
    """``spread`` (first and last block, evenly spaced between) or ``first`` (see :func:`kept_layers`)."""
    loss: str = "listmle"
    targets: str | None = None
    """reciprocal | linear | graded; default: linear for lambdaloss (its gains 2^label − 1 need
    spread-out labels), reciprocal (1/rank) otherwise."""
    list_size: int = 20
    """The teacher's top-N of each query is one training list."""
    max_queries: int | None = None
    margin_negatives: int = 7
    """margin-mse: passages below the teacher's top one, each paired with it."""
    max_length: int = 96
    epochs: float = 2.0
    batch_size: int = 4
    """Query lists per optimizer step."""
    learning_rate: float = 1e-4
    head_learning_rate: float | None = 1e-3
    warmup_ratio: float = 0.1
    seed: int = 12
    name: str = "student"

    def __post_init__(self) -> None:
        if self.loss not in STUDENT_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(STUDENT_LOSSES)}, got {self.loss!r}")
        if self.loss == "weighted-ranknet" and self.target_scheme != "reciprocal":
            raise ValueError("weighted-ranknet recovers ranks from 1/rank targets: use targets: reciprocal")
        if self.list_size < 2:
            raise ValueError("list_size must be at least 2")
        if len(set(permutation_targets(self.list_size, self.target_scheme))) == 1:  # type: ignore[arg-type]
            raise ValueError(
                f"targets {self.target_scheme!r} give every one of the top {self.list_size} the same label: "
                "nothing to learn; use a longer list or another scheme"
            )
        if self.layers is not None and self.layers < 1:
            raise ValueError("layers must be at least 1")

    @property
    def target_scheme(self) -> str:
        return self.targets or ("linear" if self.loss == "lambdaloss" else "reciprocal")

    @property
    def requests_path(self) -> Path:
        return Path(self.requests) if self.requests else results_path_for(self.labels)


def student_hash(config: CrossEncoderStudentConfig) -> str:
    """What determines the student's weights: settings, base model, labels and passage texts."""
    identity = {
        k: v
        for k, v in asdict(config).items()
        if k not in {"base_model", "labels", "requests", "data", "name"}
    }
    identity["base_model"] = model_fingerprint(config.base_model)
    identity["blocks"] = student_blocks(config)  # a new selection rule must not return an old student
    identity["labels"] = sha256_file(config.labels)
    identity["requests"] = sha256_file(config.requests_path)
    identity["trainer"] = package_versions(["sentence-transformers", "transformers"])
    return sha256_json(identity)[:12]


# ----------------------------------------------------------------------------------------------
# A smaller initial model: the first N transformer blocks
# ----------------------------------------------------------------------------------------------


def kept_layers(total: int, layers: int, selection: str = "spread") -> list[int]:
    """Which of `total` blocks a `layers`-block student keeps.

    ``spread`` keeps the first and the last block and evenly spaced ones between, rounding down
    (4 of 6: blocks 0, 1, 3, 5). Both ends matter: the trained head reads the [CLS] that only the
    top block shapes (in all-MiniLM-L6-v2 it is the same vector for any input up to block 4), and
    without block 0 the next kept block reads raw embeddings it never saw. Distilling the SciFact
    reference into 4 of its 6 blocks for 100 ListMLE steps (3 seeds, nDCG@10 on 100 test queries ×
    BM25 top-100, reference 0.614): blocks 0, 1, 3, 5 reached 0.54–0.57, blocks 0, 2, 3, 5 0.39,
    and 3-block cuts without block 0 (1, 3, 5) stayed near 0.1. ``first`` keeps blocks 0..layers−1.
    """
    if not 1 <= layers <= total:
        raise ValueError(f"cannot keep {layers} of {total} layers")
    if selection == "first":
        return list(range(layers))
    if selection == "spread":
        if layers == 1:
            return [total - 1]
        return [i * (total - 1) // (layers - 1) for i in range(layers)]
    raise ValueError(f"layer selection must be 'spread' or 'first', not {selection!r}")


def truncate_layers(
    base_model: str | os.PathLike[str], layers: int, output: str | os.PathLike[str], selection: str = "spread"
) -> Path:
    """Write `base_model` with `layers` of its transformer blocks (:func:`kept_layers`), weights copied exactly."""
    safetensors_torch = require("safetensors.torch", "train", "layer truncation")
    source, output = Path(base_model), Path(output)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    total = int(config.get("num_hidden_layers", 0))
    if not 1 <= layers <= total:
        raise ValueError(f"{source}: has {total} layers; cannot keep {layers}")
    renumber = {old: new for new, old in enumerate(kept_layers(total, layers, selection))}
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{source}: layer truncation needs safetensors weights")
    with atomic_directory(output, overwrite=True) as staging:
        for file in source.iterdir():
            if file.is_file() and file.suffix != ".safetensors" and file.name != "config.json":
                shutil.copy2(file, staging / file.name)
        for file in weights:
            tensors = safetensors_torch.load_file(str(file))
            kept = {}
            for name, tensor in tensors.items():
                match = _LAYER_KEY.search(name)
                if match is None:
                    kept[name] = tensor
                elif int(match.group(1)) in renumber:
                    start, end = match.span(1)
                    kept[name[:start] + str(renumber[int(match.group(1))]) + name[end:]] = tensor
            safetensors_torch.save_file(kept, str(staging / file.name), metadata={"format": "pt"})
        config["num_hidden_layers"] = layers
        if isinstance(config.get("layer_types"), list):  # ModernBERT-style per-layer settings
            config["layer_types"] = [config["layer_types"][i] for i in sorted(renumber)]
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        record = {"source": str(source), "source_name": checkpoint_name(source), "blocks": sorted(renumber)}
        (staging / BLOCKS_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return output


def student_blocks(config: CrossEncoderStudentConfig) -> list[int]:
    """The base model's blocks the student keeps (all of them when `layers` is None)."""
    total = int(
        json.loads((Path(config.base_model) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    )
    return (
        list(range(total))
        if config.layers is None
        else kept_layers(total, config.layers, config.layer_selection)
    )


def initial_model(config: CrossEncoderStudentConfig, run_dir: str | os.PathLike[str]) -> Path:
    """The student's starting checkpoint: `base_model`, or its truncation (cached under `run_dir`)."""
    if config.layers is None:
        return Path(config.base_model)
    key = model_fingerprint(config.base_model)[:12]
    blocks = "-".join(map(str, student_blocks(config)))
    target = Path(run_dir) / f"base-{key}-blocks-{blocks}"  # named by what it holds, not how it was chosen
    if not (target / "config.json").exists():
        truncate_layers(config.base_model, config.layers, target, config.layer_selection)
    return target


# ----------------------------------------------------------------------------------------------
# Permutations → training lists
# ----------------------------------------------------------------------------------------------


def permutation_lists(config: Any, *, teacher_scores: bool | None = None) -> list[RankingList]:
    """One list per labelled query: the teacher's top `list_size`, best first, with rank targets
    (or the teacher's own scores: `teacher_scores`, default for margin-mse).

    `config` is a student config with ``labels``, ``requests_path``, ``max_queries``, ``list_size``
    and, for rank targets, ``target_scheme`` (cross-encoder and bi-encoder students share this).
    """
    if teacher_scores is None:
        teacher_scores = config.loss == "margin-mse"
    requests = list(read_requests(config.requests_path))
    texts = {r.qid: {c.docid: c.passage.full_text() for c in r.candidates} for r in requests}
    queries = {r.qid: r.query.text for r in requests}
    lists = []
    for label in read_labels(config.labels):
        if config.max_queries is not None and len(lists) >= config.max_queries:
            break
        passages = texts.get(label.qid)
        if passages is None:
            raise ValueError(
                f"{config.labels}: query {label.qid!r} has no passages in {config.requests_path}"
            )
        docids = [d for d in label.docids if d in passages][: config.list_size]
        if len(docids) < 2:
            continue
        if teacher_scores:
            if label.scores is None:
                raise ValueError(
                    f"{config.labels}: {config.loss} needs teacher scores (label with a scoring teacher, e.g. a bundle)"
                )
            score = dict(zip(label.docids, label.scores, strict=True))
            targets = [float(score[d]) for d in docids]
        else:
            targets = permutation_targets(len(docids), config.target_scheme)  # type: ignore[arg-type]
        query = label.query or queries[label.qid]
        lists.append(RankingList(label.qid, query, docids, [passages[d] for d in docids], targets))
    if not lists:
        raise ValueError(f"{config.labels}: no query with at least two labelled passages")
    return lists


def student_dataset(lists: list[RankingList], config: CrossEncoderStudentConfig) -> Any:
    datasets = require("datasets", "train", "cross-encoder distillation")
    if config.loss == "margin-mse":  # (query, teacher's top passage, passages below it) + teacher scores
        width = min(config.margin_negatives, min(len(r.passages) for r in lists) - 1)
        columns: dict[str, list[Any]] = {
            "query": [r.query for r in lists],
            "positive": [r.passages[0] for r in lists],
        }
        for i in range(width):
            columns[f"negative_{i + 1}"] = [r.passages[i + 1] for r in lists]
        columns["labels"] = [r.labels[: width + 1] for r in lists]
        return datasets.Dataset.from_dict(columns)
    return datasets.Dataset.from_dict(
        {
            "query": [r.query for r in lists],
            "docs": [r.passages for r in lists],
            "labels": [r.labels for r in lists],
        }
    )


def teacher_info(labels: Path) -> dict[str, Any]:
    first = next(iter(read_labels(labels)), None)
    return dict(first.teacher) if first is not None else {}


def distill_cross_encoder(
    config: CrossEncoderStudentConfig,
    run_dir: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedCrossEncoder:
    """Train (or return the cached) student under `run_dir`/<name>-<hash>; provenance in the folder."""

    def train(staging: Path) -> dict[str, Any]:
        ce = require("sentence_transformers.cross_encoder", "train", "cross-encoder distillation")
        transformers = require("transformers", "train", "cross-encoder distillation")
        started = time.perf_counter()
        base = initial_model(config, run_dir)
        blocks = student_blocks(config)
        lists = permutation_lists(config)
        transformers.set_seed(config.seed)
        model = ce.CrossEncoder(str(base), num_labels=1, max_length=config.max_length)
        fitted = fit_cross_encoder(
            model,
            student_dataset(lists, config),
            student_loss(model, config.loss),
            FitSettings.of(config),
            staging,
            progress=progress,
        )
        return {
            "kind": "cross-encoder-student",
            "config": asdict(config),
            "base_model_name": checkpoint_name(config.base_model),
            "base_model_sha256": model_fingerprint(config.base_model),
            "initial_model": {"layers": len(blocks), "blocks": blocks},
            "teacher": teacher_info(Path(config.labels)),
            "data": {
                "labels": Path(config.labels).name,
                "labels_sha256": sha256_file(config.labels),
                "queries": len(lists),
                "passages": int(sum(len(r.passages) for r in lists)),
                "targets": "teacher scores" if config.loss == "margin-mse" else config.target_scheme,
                "list_size": config.list_size,
            },
            "seed": config.seed,
            "timing": {
                "train_seconds": round(fitted.pop("train_seconds"), 2),
                "total_seconds": round(time.perf_counter() - started, 2),
            },
            "metrics": fitted,
            "libraries": package_versions(LIBRARIES),
            "rrdistill": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    return train_or_cached(run_dir, config.name, student_hash(config), train)


def supervised_baseline_config(
    student: CrossEncoderStudentConfig, run_dir: str | os.PathLike[str], **overrides: Any
) -> CrossEncoderTrainConfig:
    """The same architecture and budget trained on the qrels alone: what distillation must beat."""
    if student.data is None:
        raise ValueError("the supervised baseline needs `data` (a BEIR folder with qrels)")
    base = initial_model(student, run_dir)
    settings: dict[str, Any] = {
        "base_model": str(base),
        "data": student.data,
        "max_queries": student.max_queries,
        "max_length": student.max_length,
        "epochs": student.epochs,
        "learning_rate": student.learning_rate,
        "head_learning_rate": student.head_learning_rate,
        "warmup_ratio": student.warmup_ratio,
        "seed": student.seed,
        "name": "baseline",
    }
    settings.update(overrides)
    return CrossEncoderTrainConfig(**settings)


def with_loss(config: CrossEncoderStudentConfig, loss: str) -> CrossEncoderStudentConfig:
    """The same student with another loss (its default targets), for loss comparisons."""
    return replace(config, loss=loss, targets=None, name=f"{config.name}-{loss}")


__all__ = [
    "STUDENT_LOSSES",
    "CrossEncoderStudentConfig",
    "distill_cross_encoder",
    "initial_model",
    "permutation_lists",
    "student_blocks",
    "student_dataset",
    "student_loss",
    "supervised_baseline_config",
    "teacher_info",
    "truncate_layers",
    "with_loss",
]
