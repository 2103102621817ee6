"""The cascade: answer with the fast model, reason only about the queries it is unsure of.

Reasoning costs one to two orders of magnitude more than a fast pass, and most queries do not
need it. The fast model's scores say how sure it is — the probability margin between its first
and second passage (:func:`margin_confidence`) — and only queries below a threshold have their
head (the fast top-``head``) reranked by the reasoning mode.

The threshold is calibrated, not guessed: :func:`cascade_curve` replays a labelled set at every
escalation share from 0 to 100 % (quality and mean latency), and :func:`pick_threshold` takes
the cheapest point within a tolerance of the best quality on that curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rrdistill.runtime.bundle import Manifest
from rrdistill.runtime.reranker import (
    Counters,
    Mode,
    PassageInput,
    RankedList,
    RequestInput,
    Reranker,
    RerankResult,
    _as_passage,
    check_activation,
    check_mode,
)
from rrdistill.types import Request


def margin_confidence(scores: Sequence[float]) -> float:
    """``p1 − p2`` of the softmax over `scores`: 1 for a clear winner, 0 when the top two tie."""
    if len(scores) < 2:
        return 1.0
    values = np.asarray(scores, dtype=np.float64)
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    top = np.sort(probabilities)[::-1]
    return float(top[0] - top[1])


@dataclass(frozen=True)
class CascadePoint:
    share: float
    """Fraction of queries escalated to the reasoning mode."""
    threshold: float
    """Escalate when confidence < threshold (this share on the calibration set)."""
    quality: float
    latency_ms: float
    escalated: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cascade_curve(
    confidence: Sequence[float],
    fast_quality: Sequence[float],
    reasoning_quality: Sequence[float],
    fast_ms: Sequence[float],
    reasoning_ms: Sequence[float],
    shares: Sequence[float] = tuple(i / 10 for i in range(11)),
) -> list[CascadePoint]:
    """Quality and mean latency per query when the least confident `share` of queries is escalated.

    All arrays are per query; `reasoning_ms` is the extra time of the reasoning pass (the fast pass
    always runs first).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    fast, slow = np.asarray(fast_quality, dtype=np.float64), np.asarray(reasoning_quality, dtype=np.float64)
    fast_t, slow_t = np.asarray(fast_ms, dtype=np.float64), np.asarray(reasoning_ms, dtype=np.float64)
    n = len(conf)
    if not n or not (len(fast) == len(slow) == len(fast_t) == len(slow_t) == n):
        raise ValueError("cascade_curve needs equally long, non-empty per-query arrays")
    order = np.argsort(conf, kind="stable")
    points = []
    for share in shares:
        k = round(share * n)
        escalate = np.zeros(n, dtype=bool)
        escalate[order[:k]] = True
        if k == 0:
            threshold = float(conf.min())  # nothing is below the smallest confidence
        elif k == n:
            threshold = math.nextafter(float(conf.max()), math.inf)
        else:
            threshold = float((conf[order[k - 1]] + conf[order[k]]) / 2)
        quality = float(np.where(escalate, slow, fast).mean())
        latency = float((fast_t + np.where(escalate, slow_t, 0.0)).mean())
        points.append(CascadePoint(float(share), threshold, quality, latency, int(k)))
    return points


def pick_threshold(curve: Sequence[CascadePoint], tolerance: float = 0.005) -> CascadePoint:
    """The cheapest point whose quality is within `tolerance` of the best point on the curve."""
    best = max(p.quality for p in curve)
    return min((p for p in curve if p.quality >= best - tolerance), key=lambda p: p.latency_ms)


@dataclass
class CascadeStats(Counters):
    """The cascade's own counters; ``to_dict`` adds the fast model's and the reasoner's."""

    queries: int = 0
    escalations: int = 0
    """Queries whose head the reasoner reranked."""

    def __post_init__(self) -> None:
        self._parts: dict[str, Counters] = {}

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **{name: part.to_dict() for name, part in self._parts.items()}}


class CascadeReranker(Reranker):
    """Fast model first (a cross-encoder, or a listwise LM's fast mode); reasoning for the unsure.

    ``manifest``, ``bundle`` and ``providers`` are the fast model's (it answers every query).
    Scores: the fast model's raw scores for a query that was not escalated, rank-based (n − rank)
    for one that was — so ``activation="sigmoid"`` is refused. Confidence is the softmax margin of
    the fast model's raw logits (a cross-encoder) or of its FIRST scores (a listwise fast mode).
    """

    kind: ClassVar[str] = "cascade"
    supports_reasoning: ClassVar[bool] = True

    def __init__(self, fast: Reranker, reasoner: Reranker, threshold: float, head: int = 20) -> None:
        if not reasoner.supports_reasoning:
            raise ValueError(
                f"{reasoner.name}: a {reasoner.kind} cannot reason, so it cannot be the reasoner"
            )
        if head < 1:
            raise ValueError(f"head must be at least 1, not {head}")
        self.fast, self.reasoner, self.threshold, self.head = fast, reasoner, threshold, head
        self.stats = CascadeStats()
        self.stats._parts = {"fast": fast.stats, "reasoner": reasoner.stats}

    @property
    def name(self) -> str:
        return f"{self.fast.name}+{self.reasoner.name}"

    @property
    def manifest(self) -> Manifest | None:  # type: ignore[override]
        return self.fast.manifest

    @property
    def bundle(self) -> Path | None:  # type: ignore[override]
        return self.fast.bundle

    @property
    def providers(self) -> list[str]:
        return self.fast.providers

    def rerank(
        self,
        query: str,
        passages: Sequence[PassageInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = "auto",
        activation: str | None = None,
    ) -> RankedList:
        return self.rerank_many(
            [(query, passages)], top_k, batch_size, reasoning=reasoning, activation=activation
        )[0]

    def rerank_many(
        self,
        requests: Sequence[RequestInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = "auto",
        activation: str | None = None,
    ) -> list[RankedList]:
        """``"auto"`` escalates the unsure, ``True`` every query, ``False`` none (the fast model alone)."""
        reasoning = check_mode(reasoning)
        if check_activation(activation) == "sigmoid":
            raise ValueError(
                f"{self.name}: escalated queries score by rank (n − rank), which has no sigmoid; "
                "use activation None or 'identity'"
            )
        items = [
            (r.query.text, [c.passage for c in r.candidates])
            if isinstance(r, Request)
            else (r[0], list(r[1]))
            for r in requests
        ]
        # Raw logits: the calibrated confidence is a margin over logits, whatever the fast default.
        fast_lists = self.fast.rerank_many(
            items, batch_size=batch_size, reasoning=False, activation="identity"
        )
        confidences = [self._confidence(ranked) for ranked in fast_lists]
        escalate = [reasoning is True or (reasoning == "auto" and c < self.threshold) for c in confidences]
        heads = []
        for (query, passages), ranked, go in zip(items, fast_lists, escalate, strict=True):
            if go:
                heads.append((query, [passages[r.index] for r in ranked[: self.head]]))
        reasoned = iter(self.reasoner.rerank_many(heads, reasoning=True) if heads else [])
        out = []
        for (_, passages), ranked, go, conf in zip(items, fast_lists, escalate, confidences, strict=True):
            if go:
                head = ranked[: self.head]
                thought = next(reasoned)
                order = [head[r.index].index for r in thought] + [r.index for r in ranked[self.head :]]
                n = len(order)
                results = [
                    RerankResult(i, _as_passage(passages[i], i)[0], float(n - rank))
                    for rank, i in enumerate(order)
                ]
                final = RankedList(results, thought.explanation, thought.windows)
            else:
                final = RankedList(ranked, None, ranked.windows)
            final.confidence, final.escalated = conf, go
            out.append(final.head(top_k))
        self.stats.add(queries=len(items), escalations=sum(escalate))
        return out

    def _confidence(self, ranked: RankedList) -> float:
        if not ranked.windows:  # a pointwise fast model: its scores are the logits
            return margin_confidence([r.score for r in ranked[: self.head]])
        scores = ranked.windows[-1].scores  # the front window, which decided the head
        if scores is None:
            raise ValueError(
                f"{self.fast.name}: the fast mode reports no scores (no FIRST identifiers): it cannot gate a cascade"
            )
        return margin_confidence(scores)
