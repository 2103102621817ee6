"""The few records every stage passes around.

They mirror RankLLM's request format (query + candidates with docs), so a file written by one
stage or by RankLLM itself can be read by any other without conversion.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Qrels = dict[str, dict[str, int]]
"""qid -> docid -> graded relevance (TREC convention: > 0 is relevant)."""

Run = dict[str, dict[str, float]]
"""qid -> docid -> score (higher is better), as TREC run files and pytrec_eval use it."""


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A document as the rerankers see it: an optional title and the text."""

    docid: str
    text: str
    title: str = ""

    def full_text(self, separator: str = " ") -> str:
        """Title and text as one string (the form BM25 and cross-encoders read)."""
        return f"{self.title}{separator}{self.text}" if self.title else self.text


@dataclass(slots=True)
class Candidate:
    """A passage in a candidate list, with the score the stage that produced the list gave it."""

    passage: Passage
    score: float | None = None

    @property
    def docid(self) -> str:
        return self.passage.docid


@dataclass(slots=True)
class Request:
    """One query and its ordered candidate list: the unit every reranker consumes and produces."""

    query: Query
    candidates: list[Candidate]
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields a stage adds to the line (e.g. provenance); kept so nothing is lost on a round trip."""

    @property
    def qid(self) -> str:
        return self.query.qid

    @property
    def docids(self) -> list[str]:
        return [c.docid for c in self.candidates]

    def reordered(self, order: list[int], scores: list[float] | None = None) -> Request:
        """The same request with candidates in `order` (indices into the current list).

        `scores`, when given, are aligned with `order` and replace the candidates' scores.
        """
        if sorted(order) != list(range(len(self.candidates))):
            raise ValueError(f"order must be a permutation of 0..{len(self.candidates) - 1}, got {order}")
        if scores is not None and len(scores) != len(order):
            raise ValueError(f"got {len(scores)} scores for {len(order)} candidates")
        candidates = [
            Candidate(self.candidates[i].passage, self.candidates[i].score if scores is None else float(s))
            for i, s in zip(order, scores if scores is not None else [None] * len(order), strict=True)
        ]
        return replace(self, candidates=candidates, extra=dict(self.extra))

    def ranked_by(self, scores: Sequence[float]) -> Request:
        """Candidates best first by `scores` (aligned with the current order; ties keep it), which
        become their scores."""
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return self.reordered(order, [float(scores[i]) for i in order])


@dataclass(slots=True)
class Ranking:
    """A ranked list of docids for one query, best first, with optional scores."""

    qid: str
    docids: list[str]
    scores: list[float] | None = None

    def as_run(self) -> dict[str, float]:
        """Scores for a TREC run that reproduce this order exactly.

        The order is the truth: the scores are kept when they strictly decrease along it, and
        replaced by rank-derived ones (n, n-1, …) otherwise (no scores, ties, or a listwise
        reordering whose scores came from an earlier stage). trec_eval would otherwise break ties
        by docid and evaluate an order nobody produced.
        """
        scores = self.scores
        if scores is not None and all(a > b for a, b in itertools.pairwise(scores)):
            return {d: float(s) for d, s in zip(self.docids, scores, strict=True)}
        n = len(self.docids)
        return {d: float(n - i) for i, d in enumerate(self.docids)}

    @classmethod
    def from_request(cls, request: Request) -> Ranking:
        scores = [c.score for c in request.candidates]
        return cls(request.qid, request.docids, None if any(s is None for s in scores) else scores)  # type: ignore[arg-type]
