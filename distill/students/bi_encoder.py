"""Bi-encoder students: a teacher's scored lists → a sentence-embedding reranker (sentence-transformers).

A cross-encoder student starts from the teacher's cross-encoder blocks and learns SciFact's labels
again; what the teacher knows beyond them (the zero-shot bi-encoder of the ensemble, pretrained on
a billion pairs) does not reach it in a CPU budget, and out of domain it ranks 10–15 points below
BM25. A bi-encoder student starts from that bi-encoder's weights instead and learns the teacher's
preferences on the collection's queries: ``DistillKLDivLoss`` (Lin et al., 2020) matches its
softmax over each list (cosine × `scale`) to the teacher's softmax over its scores. The qrels-only
baseline of the same architecture trains ``MultipleNegativesRankingLoss`` on the judged positives
with BM25 hard negatives (the cross-encoder baseline's data).

A query and a passage are embedded apart, so a passage's vector does not depend on the query: a
service can embed its passages once. The output is a sentence-transformers folder (transformer,
mean pooling, normalisation) that ``rrdistill export`` turns into a ``bi-encoder`` bundle. Runs are
cached by a hash of everything that determines them, like the cross-encoder students.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rrdistill import __version__
from rrdistill.checkpoint_names import checkpoint_name
from rrdistill.distill.students.cross_encoder import (
    initial_model,
    permutation_lists,
    student_blocks,
    teacher_info,
)
from rrdistill.distill.students.label import results_path_for
from rrdistill.distill.students.trainer import (
    LIBRARIES,
    CrossEncoderTrainConfig,
    RankingList,
    TrainedCrossEncoder,
    data_fingerprint,
    hard_negative_lists,
    train_or_cached,
)
from rrdistill.extras import package_versions, require
from rrdistill.hashing import model_fingerprint, sha256_file, sha256_json

BI_ENCODER_LOSSES = ("kl", "mnrl")
"""``kl``: the teacher's scores (distillation); ``mnrl``: the qrels with BM25 hard negatives (baseline)."""


@dataclass(frozen=True)
class BiEncoderStudentConfig:
    base_model: str
    """A sentence-transformers or plain HF encoder folder (e.g. all-MiniLM-L6-v2); mean pooling is used."""
    labels: str | None = None
    """Label JSONL with teacher scores (``loss: kl``)."""
    requests: str | None = None
    """Request JSONL with the passage texts; default: the labels' ``.results.jsonl`` beside them."""
    data: str | None = None
    """BEIR folder with qrels (``loss: mnrl``, the baseline)."""
    loss: str = "kl"
    layers: int | None = None
    """Keep N transformer blocks of `base_model` (None: all), chosen as for cross-encoders."""
    layer_selection: str = "spread"
    list_size: int = 8
    """Passages per query for ``kl``: the teacher's top half of them, the rest spread over its list."""
    max_queries: int | None = None
    negatives: int = 3
    """``mnrl``: BM25 hard negatives per positive (judged passages never are)."""
    scale: float = 20.0
    """Cosine × scale are the student's logits (the softmax of a raw cosine in [−1, 1] is almost flat)."""
    temperature: float = 1.0
    """Softens both distributions of ``kl``."""
    max_length: int = 256
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    seed: int = 12
    name: str = "bi-student"

    def __post_init__(self) -> None:
        if self.loss not in BI_ENCODER_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(BI_ENCODER_LOSSES)}, got {self.loss!r}")
        if self.loss == "kl" and self.labels is None:
            raise ValueError("loss kl distils teacher scores: give `labels` (from `rrdistill label`)")
        if self.loss == "mnrl" and self.data is None:
            raise ValueError("loss mnrl trains on qrels: give `data` (a BEIR folder)")
        if self.list_size < 2:
            raise ValueError("list_size must be at least 2")
        if self.layers is not None and self.layers < 1:
            raise ValueError("layers must be at least 1")

    @property
    def requests_path(self) -> Path:
        if self.requests:
            return Path(self.requests)
        if self.labels is None:
            raise ValueError("no labels, so no requests beside them")
        return results_path_for(self.labels)


def spread_ranks(length: int, size: int) -> list[int]:
    """`size` of a list's `length` ranks: the top half of `size`, the rest evenly spaced below it.

    The head decides nDCG@10; the spread keeps passages the teacher ranks low in every list, so the
    student also learns what to push down among the 50 it will rerank.
    """
    if length <= size:
        return list(range(length))
    head = size - size // 2
    rest = size - head
    below = length - head
    return list(range(head)) + [head + (i * below) // rest for i in range(rest)]


def teacher_lists(config: BiEncoderStudentConfig) -> list[RankingList]:
    """One list per labelled query with the teacher's scores, passages chosen by :func:`spread_ranks`."""
    whole = permutation_lists(replace(config, list_size=sys.maxsize), teacher_scores=True)
    lists = []
    for r in whole:
        keep = spread_ranks(len(r.docids), config.list_size)
        if len(keep) < config.list_size:
            continue  # the loss reads a fixed number of columns
        lists.append(
            RankingList(
                r.qid,
                r.query,
                [r.docids[i] for i in keep],
                [r.passages[i] for i in keep],
                [r.labels[i] for i in keep],
            )
        )
    if not lists:
        raise ValueError(f"{config.labels}: no query with {config.list_size} labelled passages")
    return lists


def qrels_lists(config: BiEncoderStudentConfig) -> list[RankingList]:
    """The cross-encoder baseline's data: judged positives + seeded BM25 hard negatives."""
    return hard_negative_lists(
        CrossEncoderTrainConfig(
            base_model=config.base_model,
            data=str(config.data),
            max_queries=config.max_queries,
            negatives=config.negatives,
            seed=config.seed,
        )
    )


def training_dataset(lists: list[RankingList], config: BiEncoderStudentConfig) -> Any:
    """Columns ``query, positive, negative_1..`` (+ ``label`` = the teacher's scores for ``kl``)."""
    datasets = require("datasets", "train", "bi-encoder distillation")
    rows = []
    for r in lists:
        if config.loss == "kl":
            rows.append((r.query, r.passages, r.labels))
        else:  # one row per positive, the list's negatives after it
            negatives = [p for p, y in zip(r.passages, r.labels, strict=True) if y <= 0]
            rows.extend(
                (r.query, [p, *negatives], None) for p, y in zip(r.passages, r.labels, strict=True) if y > 0
            )
    width = min(len(passages) for _, passages, _ in rows)
    columns: dict[str, list[Any]] = {"query": [q for q, _, _ in rows], "positive": [p[0] for _, p, _ in rows]}
    for i in range(1, width):
        columns[f"negative_{i}"] = [p[i] for _, p, _ in rows]
    if config.loss == "kl":
        columns["label"] = [labels[:width] for _, _, labels in rows]
    return datasets.Dataset.from_dict(columns)


def student_model(config: BiEncoderStudentConfig, run_dir: str | Path) -> Any:
    """Transformer (its first/spread `layers` blocks) → mean pooling → L2 normalisation."""
    st = require("sentence_transformers", "train", "bi-encoder distillation")
    modules = require(
        "sentence_transformers.sentence_transformer.modules", "train", "bi-encoder distillation"
    )
    base = initial_model(config, run_dir)  # type: ignore[arg-type]
    transformer = modules.Transformer(str(base), max_seq_length=config.max_length)
    pooling = modules.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return st.SentenceTransformer(modules=[transformer, pooling, modules.Normalize()], device="cpu")


def _loss(model: Any, config: BiEncoderStudentConfig) -> Any:
    losses = require("sentence_transformers.sentence_transformer.losses", "train", "bi-encoder distillation")
    util = require("sentence_transformers.util", "train", "bi-encoder distillation")
    if config.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, scale=config.scale)
    scale = config.scale

    def scaled_cosine(a: Any, b: Any) -> Any:
        return scale * util.pairwise_cos_sim(a, b)

    return losses.DistillKLDivLoss(model, similarity_fct=scaled_cosine, temperature=config.temperature)


def student_hash(config: BiEncoderStudentConfig) -> str:
    """What determines the weights: settings, base model, labels or qrels, passage texts, libraries."""
    identity: dict[str, Any] = {
        k: v
        for k, v in asdict(config).items()
        if k not in {"base_model", "labels", "requests", "data", "name"}
    }
    identity["base_model"] = model_fingerprint(config.base_model)
    identity["blocks"] = student_blocks(config)  # type: ignore[arg-type]
    if config.loss == "kl":
        identity["labels"] = sha256_file(config.labels)  # type: ignore[arg-type]
        identity["requests"] = sha256_file(config.requests_path)
    else:
        identity["data"] = data_fingerprint(config.data, "train")  # type: ignore[arg-type]
    identity["trainer"] = package_versions(["sentence-transformers", "transformers"])
    return sha256_json(identity)[:12]


def _progress(progress: Callable[[int, int], None] | None) -> Any:
    transformers = require("transformers", "train", "bi-encoder distillation")

    class Progress(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)

    return Progress()


def distill_bi_encoder(
    config: BiEncoderStudentConfig,
    run_dir: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedCrossEncoder:
    """Train (or return the cached) bi-encoder under `run_dir`/<name>-<hash>; provenance in the folder."""

    def train(staging: Path) -> dict[str, Any]:
        st = require("sentence_transformers", "train", "bi-encoder distillation")
        transformers = require("transformers", "train", "bi-encoder distillation")
        started = time.perf_counter()
        lists = teacher_lists(config) if config.loss == "kl" else qrels_lists(config)
        transformers.set_seed(config.seed)
        model = student_model(config, run_dir)
        dataset = training_dataset(lists, config)
        with tempfile.TemporaryDirectory(prefix="rrdistill-bi-") as scratch:
            steps = -(-len(dataset) // config.batch_size)
            args = st.SentenceTransformerTrainingArguments(
                output_dir=scratch,
                num_train_epochs=config.epochs,
                per_device_train_batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                warmup_ratio=config.warmup_ratio,
                seed=config.seed,
                data_seed=config.seed,
                logging_steps=max(1, int(steps * config.epochs) // 20),
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                # in-batch negatives must not be another copy of the query's own positive
                batch_sampler="no_duplicates" if config.loss == "mnrl" else "batch_sampler",
            )
            trainer = st.SentenceTransformerTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                loss=_loss(model, config),
                callbacks=[_progress(progress)],
            )
            trainer.remove_callback(transformers.PrinterCallback)
            fit_started = time.perf_counter()
            result = trainer.train()
            train_seconds = time.perf_counter() - fit_started
        model.save(str(staging))
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        blocks = student_blocks(config)  # type: ignore[arg-type]
        return {
            "kind": "bi-encoder-student" if config.loss == "kl" else "bi-encoder",
            "config": asdict(config),
            "base_model_name": checkpoint_name(config.base_model),
            "base_model_sha256": model_fingerprint(config.base_model),
            "initial_model": {"layers": len(blocks), "blocks": blocks},
            "teacher": teacher_info(Path(config.labels)) if config.labels else {},
            "data": {
                "source": Path(config.labels).name if config.loss == "kl" else Path(str(config.data)).name,
                "queries": len(lists),
                "examples": len(dataset),
                "list_size": len(dataset.column_names) - (2 if config.loss == "kl" else 1),
                "targets": "teacher scores (softmax)"
                if config.loss == "kl"
                else "qrels + BM25 hard negatives",
            },
            "seed": config.seed,
            "timing": {
                "train_seconds": round(train_seconds, 2),
                "total_seconds": round(time.perf_counter() - started, 2),
            },
            "metrics": {
                "steps": int(result.global_step),
                "train_loss": float(result.training_loss),
                "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None,
                "loss_log": losses,
            },
            "libraries": package_versions(LIBRARIES),
            "rrdistill": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    return train_or_cached(run_dir, config.name, student_hash(config), train)


__all__ = [
    "BI_ENCODER_LOSSES",
    "BiEncoderStudentConfig",
    "distill_bi_encoder",
    "spread_ranks",
    "teacher_lists",
    "training_dataset",
]
