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
