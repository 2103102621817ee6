"""Ranking metrics in pure numpy, defined exactly as trec_eval (and so pytrec_eval) defines them.

Conventions that matter when comparing numbers:
- a run is ordered by score descending, ties broken by docid descending (trec_eval's rule);
- nDCG gain is the judged grade (negative grades count as 0), discount ``1/log2(rank+1)``,
  ideal list = the query's judged grades sorted, both cut at k;
- a document is relevant for Recall/MRR when its grade is ≥ ``relevance_level`` (default 1);
- :func:`evaluate` averages over every judged query; a judged query absent from the run scores 0
  (``trec_eval -c``), so a system cannot look better by skipping hard queries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrdistill.types import Qrels, Run

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
_METRIC = re.compile(r"^(ndcg|recall|mrr)@(\d+)$")


def ranked_docids(scores: Mapping[str, float]) -> list[str]:
    """Docids in trec_eval order: score descending, then docid descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def ndcg_at_k(ranked: Sequence[str], judgments: Mapping[str, int], k: int) -> float:
    gains = np.array([max(judgments.get(d, 0), 0) for d in ranked[:k]], dtype=np.float64)
    ideal = np.sort(np.array([g for g in judgments.values() if g > 0], dtype=np.float64))[::-1][:k]
    if ideal.size == 0:
        return 0.0
    dcg = float(np.sum(gains / np.log2(np.arange(2, gains.size + 2))))
    idcg = float(np.sum(ideal / np.log2(np.arange(2, ideal.size + 2))))
    return dcg / idcg


def recall_at_k(
    ranked: Sequence[str], judgments: Mapping[str, int], k: int, relevance_level: int = 1
) -> float:
    relevant = {d for d, g in judgments.items() if g >= relevance_level}
    if not relevant:
        return 0.0
    return sum(1 for d in ranked[:k] if d in relevant) / len(relevant)


def mrr_at_k(ranked: Sequence[str], judgments: Mapping[str, int], k: int, relevance_level: int = 1) -> float:
    for rank, docid in enumerate(ranked[:k], start=1):
        if judgments.get(docid, 0) >= relevance_level:
            return 1.0 / rank
    return 0.0


def rbo(
    first: Sequence[Hashable], second: Sequence[Hashable], p: float = 1.0, depth: int | None = None
) -> float:
    """Rank-biased overlap of two rankings (Webber et al. 2010, Eq. 4 / Eq. 7, no extrapolation).

    ``RBO = Σ_{d=1..k} w_d · |S:d ∩ T:d| / d`` with ``k = min(len(S), len(T), depth)`` and
    ``w_d = (1-p)·p^(d-1)``; ``p = 1`` is the unweighted average overlap (``w_d = 1/k``), which
    ReasonRank's reward uses. Identical to the ``rbo`` package's ``RankingSimilarity.rbo``.
    Items must be unique within each list.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if len(set(first)) != len(first) or len(set(second)) != len(second):
        raise ValueError("rbo needs rankings without duplicate items")
    if not first and not second:
        return 1.0
    if not first or not second:
        return 0.0
    k = min(len(first), len(second), depth if depth is not None else math.inf)
    k = int(k)
    if k <= 0:
        return 0.0
    position = {item: i for i, item in enumerate(second[:k])}
    # An item shared by both prefixes enters the overlap at depth max(rank in S, rank in T) + 1.
    entry_depths = [max(i, position[item]) for i, item in enumerate(first[:k]) if item in position]
    overlap = np.cumsum(np.bincount(np.array(entry_depths, dtype=np.int64), minlength=k)[:k])
    agreement = overlap / np.arange(1, k + 1)
    if p == 1.0:
        value = float(agreement.mean())
    else:
        weights = (1.0 - p) * p ** np.arange(k)
        value = float(np.dot(weights, agreement))
    return min(max(value, 0.0), 1.0)


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; raises ValueError naming the accepted forms."""
    match = _METRIC.match(name.strip().lower())
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"unknown metric {name!r}: use ndcg@k, recall@k or mrr@k with k ≥ 1")
    return match.group(1), int(match.group(2))


_FUNCTIONS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def score_ranking(
    ranked: Sequence[str], judgments: Mapping[str, int], metrics: Sequence[str]
) -> dict[str, float]:
    """Every metric in `metrics` for one ranked list."""
    values = {}
    for name in metrics:
        kind, k = parse_metric(name)
        values[name] = _FUNCTIONS[kind](ranked, judgments, k)
    return values


@dataclass
class Evaluation:
    """Mean metrics over the judged queries plus the per-query values they came from."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    missing: list[str] = field(default_factory=list)
    """Judged queries that the run has no ranking for (scored 0 and included in the means)."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.means,
            "num_queries": len(self.per_query),
            "missing_queries": self.missing,
            "per_query": self.per_query,
        }


def evaluate(
    run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *, only_run_queries: bool = False
) -> Evaluation:
    """Evaluate a run against qrels; see the module docstring for the conventions.

    `only_run_queries` averages over judged queries that the run ranks (pytrec_eval's default
    aggregation) instead of counting the missing ones as 0.
    """
    for name in metrics:
        parse_metric(name)
    per_query: dict[str, dict[str, float]] = {}
    missing = []
    for qid, judgments in qrels.items():
        if qid not in run:
            missing.append(qid)
            if only_run_queries:
                continue
        per_query[qid] = score_ranking(ranked_docids(run.get(qid, {})), judgments, metrics)
    means = {
        name: float(np.mean([values[name] for values in per_query.values()])) if per_query else 0.0
        for name in metrics
    }
    return Evaluation(means, per_query, missing)


# Fidelity: how closely a student reproduces its teacher's ranking (no qrels involved).


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b of two paired samples (ties adjusted), as ``scipy.stats.kendalltau`` computes it.

    ``(C − D) / sqrt((n0 − n1)·(n0 − n2))`` with ``n0 = n(n−1)/2`` and ``n1``, ``n2`` the pairs
    tied in `x` and in `y`. NaN when either side is constant (nothing to correlate), as scipy.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("kendall_tau needs two equally long 1-d samples")
    n = a.size
    if n < 2:
        return math.nan
    upper = np.triu_indices(n, k=1)
    dx = np.sign(a[:, None] - a[None, :])[upper]
    dy = np.sign(b[:, None] - b[None, :])[upper]
    pairs = n * (n - 1) / 2
    denominator = math.sqrt((pairs - np.sum(dx == 0)) * (pairs - np.sum(dy == 0)))
    if denominator == 0:
        return math.nan
    return float(np.sum(dx * dy) / denominator)


def topk_kendall_tau(reference: Sequence[str], ranked: Sequence[str], k: int = 10) -> float:
    """Kendall τ-b between the reference's top-`k` order and the positions `ranked` gives those items.

    Items of the reference's top-k that `ranked` lacks (it reranked fewer candidates) share the
    position after its last one: they are tied, which τ-b accounts for, rather than dropped.
    """
    head = list(reference[:k])
    position = {docid: i for i, docid in enumerate(ranked)}
    return kendall_tau(range(len(head)), [position.get(d, len(ranked)) for d in head])


def reference_gains(reference: Sequence[str], depth: int = 10) -> dict[str, int]:
    """Graded judgments from a reference order: rank r ≤ depth → gain ``depth + 1 − r`` (r = 1 → depth)."""
    return {docid: depth - i for i, docid in enumerate(reference[:depth])}


def ndcg_vs_reference(reference: Sequence[str], ranked: Sequence[str], k: int = 10, depth: int = 10) -> float:
    """nDCG@k of `ranked` judged by the reference order (:func:`reference_gains`): 1 when it matches it.

    Position-graded gains (linear, as trec_eval's nDCG uses grades) make the top of the
    reference count most, and stay integer so ``pytrec_eval`` can check the value.
    """
    return ndcg_at_k(ranked, reference_gains(reference, depth), k)
