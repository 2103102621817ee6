"""One evaluated system: its ranking of the evaluation queries, its metrics and its cost.

Every row of the report is a :class:`SystemRecord` written by the stage that measured it, so the
report only gathers figures and never recomputes them. A record names the model behind the
figure and what it was trained on, because on a CPU machine the teacher is tiny and the students
learn from the best ranker available offline: the reader must be able to tell which is which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.io import atomic_writer, read_run
from rrdistill.metrics import evaluate
from rrdistill.types import Qrels

METRICS = ("ndcg@10", "recall@10")


@dataclass
class SystemRecord:
    system: str
    kind: str
    """``bm25``, ``teacher``, ``cross-encoder`` or ``listwise-lm``."""
    mode: str | None
    """``fast``, ``reasoning``, ``auto`` for listwise models; None otherwise."""
    precision: str | None
    bundle: str | None
    model: str
    """Which model produced the figures, in words (architecture, size, origin)."""
    trained_on: str
    queries: int
    depth: int
    """Candidates per query the system reranked (the rest keep the BM25 order)."""
    metrics: dict[str, float]
    latency_ms_per_query: float | None
    size_bytes: int | None = None
    parity: dict[str, Any] | None = None
    per_query: dict[str, float] = field(default_factory=dict)
    """nDCG@10 per query (for the per-query delta plot and the shared-subset columns)."""
    notes: dict[str, Any] = field(default_factory=dict)
    run_file: str | None = None
    """The TREC run behind the figures (the report measures agreement between runs from it)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """What the model is, read from its bundle's manifest (see :func:`model_provenance`)."""
    roles: list[str] = field(default_factory=list)
    """``labeller`` for the system that labelled the students' training queries (from the config)."""
    dataset: str = "scifact"
    """The collection the row was judged on: the in-domain data folder's name, or an
    out-of-domain set's (records written before the field existed were all SciFact's)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SystemRecord:
        return cls(**obj)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as handle:
            json.dump(self.to_json(), handle, indent=2)

    @classmethod
    def load(cls, path: Path) -> SystemRecord:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class EvalSet:
    """A query set systems are judged on: its first-stage candidates, its qrels, where its rows go."""

    dataset: str
    """Written in every row judged on it."""
    requests: Path
    qrels: Qrels
    out_of_domain: str | None = None
    """None for the in-domain set (rows in ``eval/``); the set's name otherwise (``eval/<name>/``)."""


def run_metrics(trec: Path, qrels: Qrels) -> tuple[dict[str, float], dict[str, float], int]:
    """Means over the judged queries the run ranks, per-query nDCG@10, and how many queries."""
    run = read_run(trec)
    judged = {qid: qrels[qid] for qid in run if qid in qrels}
    evaluation = evaluate(run, judged, METRICS)
    per_query = {qid: values["ndcg@10"] for qid, values in evaluation.per_query.items()}
    return evaluation.means, per_query, len(judged)


def bundle_size(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _base_layers(path: str | None) -> int | None:
    """Transformer layers of a checkpoint folder, from its config.json (None when unreadable)."""
    if not path:
        return None
    config = Path(path) / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


def _base_name(training: dict[str, Any], base: str | None) -> str | None:
    """The starting checkpoint's name as training recorded it (older bundles: its folder name)."""
    recorded = training.get("base_model_name") or (training.get("base_source") or {}).get("name")
    if recorded:
        return str(recorded)
    return Path(base).name if base else None


def model_provenance(bundle: Path) -> dict[str, Any]:
    """What is behind a bundle, from its manifest: kind, precision, source checkpoint and training run.

    The report describes every model from here (and not from the pipeline's own idea of what it
    trained), so a row says what the bundle actually holds.
    """
    from rrdistill.runtime.bundle import load_manifest

    manifest = load_manifest(bundle)
    provenance = manifest.provenance or {}
    training = provenance.get("training") or {}
    config = training.get("config") or {}
    source = (provenance.get("source") or {}).get("path") or provenance.get("source_checkpoint")
    base = (
        config.get("base_model")
        or (config.get("model") or {}).get("name_or_path")
        or training.get("base_model")  # a listwise LM's training record
    )
    initial = training.get("initial_model") or {}
    layers = initial.get("layers") or _base_layers(base) or _base_layers(source)
    data = training.get("data") or {}
    return {
        "kind": manifest.kind,
        "precision": manifest.precision,
        "source_checkpoint": Path(source).name if source else None,
        "base_checkpoint": _base_name(training, base),
        "layers": layers,
        "blocks": initial.get("blocks"),
        "loss": config.get("loss"),
        "learning_rate": config.get("learning_rate"),
        "training_kind": training.get("kind"),
        "teacher": training.get("teacher") or None,
        "data": {k: data[k] for k in ("dataset", "split", "labels", "queries") if k in data} or None,
    }


def describe_model(provenance: dict[str, Any]) -> str:
    """One line naming the model behind a row: base checkpoint, layers, loss, precision."""
    parts = [provenance.get("kind") or "model"]
    if provenance.get("base_checkpoint"):
        parts.append(f"from {provenance['base_checkpoint']}")
    if provenance.get("layers"):
        blocks = provenance.get("blocks")
        parts.append(f"{provenance['layers']} layers" + (f" (blocks {blocks})" if blocks else ""))
    if provenance.get("loss"):
        parts.append(f"{provenance['loss']} loss")
    if provenance.get("learning_rate") is not None:
        parts.append(f"lr {provenance['learning_rate']:g}")
    if provenance.get("precision"):
        parts.append(str(provenance["precision"]))
    return ", ".join(parts)
