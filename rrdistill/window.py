"""Sliding-window listwise reranking over any window ranker.

A listwise model sees at most ``window_size`` passages at once, so a top-100 list is reranked
in overlapping windows from the back to the front (RankGPT / RankLLM / ReasonRank): each window
moves its best passages forward into the next one, and after one pass the best
``window_size - step`` passages are at the top in order.

Windows of one query depend on each other; windows of different queries do not. So every step
collects the next window of *every* query and hands them to the ranker in one call: a GPU
backend or an inference server sees a batch of windows, not one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rrdistill.prompts import Repairs, repair_order
from rrdistill.types import Request


@dataclass(frozen=True)
class WindowConfig:
    window_size: int = 20
    step: int = 10
    top_k: int = 100
    """Only the first `top_k` candidates are reranked; the rest keep their order behind them."""

    def __post_init__(self) -> None:
        if self.window_size < 2:
            raise ValueError("window_size must be ≥ 2")
        if not 1 <= self.step <= self.window_size:
            raise ValueError("step must be between 1 and window_size")
        if self.top_k < 1:
            raise ValueError("top_k must be ≥ 1")


@dataclass
class WindowOutput:
    """What a window ranker returns for one window when it has more to say than a permutation."""

    order: Sequence[int]
    """0-based positions within the window, best first (repaired if incomplete or invalid)."""
    text: str | None = None
    """The raw generation, when the ranker is generative."""
    reasoning: str | None = None
    repairs: Repairs = field(default_factory=Repairs)
    """Repairs the ranker already made while parsing its own output."""
    generated_tokens: int | None = None
    """Tokens the ranker generated for this window, when it is generative and knows the count."""
    scores: Sequence[float] | None = None
    """Per-passage scores in input order, when the ranker has them (FIRST logits): confidence."""


Permutation = Sequence[int] | WindowOutput
BatchRanker = Callable[[list[Request]], Sequence[Permutation]]
"""Ranks a batch of windows (each a Request of ≤ window_size candidates) in one call."""


@dataclass
class WindowRecord:
    """One window as it was ranked: where it sat, what went in, the order that came out."""

    start: int
    end: int
    docids: list[str]
    order: list[int]
    reasoning: str | None = None
    text: str | None = None
    repairs: Repairs = field(default_factory=Repairs)
    generated_tokens: int | None = None
    scores: list[float] | None = None
    """The ranker's per-passage scores, aligned with `docids` (input order), when it has them."""

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "docids": self.docids,
            "order": self.order,
        }
        if self.reasoning is not None:
            record["reasoning"] = self.reasoning
        if self.text is not None:
            record["text"] = self.text
        if self.repairs.any:
            record["repairs"] = self.repairs.to_dict()
        if self.generated_tokens is not None:
            record["generated_tokens"] = self.generated_tokens
        if self.scores is not None:
            record["scores"] = self.scores
        return record


@dataclass
class WindowedRanking:
    request: Request
    """The input request with its candidates in the final order."""
    windows: list[WindowRecord]

    @property
    def repairs(self) -> Repairs:
        total = Repairs()
        for window in self.windows:
            total = total + window.repairs
        return total

    @property
    def generated_tokens(self) -> int | None:
        """Tokens generated over all windows; None unless every window reported its count."""
        counts = [w.generated_tokens for w in self.windows]
        return None if not counts or None in counts else sum(c for c in counts if c is not None)


def window_spans(n: int, window_size: int = 20, step: int = 10) -> list[tuple[int, int]]:
    """``[start, end)`` spans of one back-to-front pass over a list of `n` (RankLLM's schedule).

    >>> window_spans(100)[:3], window_spans(100)[-1]
    ([(80, 100), (70, 90), (60, 80)], (0, 20))
    """
    if n <= 0:
        return []
    spans = []
    end = n
    while True:
        start = max(end - window_size, 0)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


def per_window(rank_window: Callable[[Request], Permutation]) -> BatchRanker:
    """Adapt a ranker that takes one window at a time to the batched interface."""

    def rank_windows(windows: list[Request]) -> list[Permutation]:
        return [rank_window(w) for w in windows]

    return rank_windows


def _as_output(result: Permutation) -> WindowOutput:
    return result if isinstance(result, WindowOutput) else WindowOutput(order=result)


def sliding_window(
    requests: Sequence[Request],
    rank_windows: BatchRanker,
    config: WindowConfig | None = None,
    *,
    on_windows: Callable[[int], None] | None = None,
) -> list[WindowedRanking]:
    """Rerank every request with one back-to-front pass, batching windows across requests.

    `rank_windows` receives lists of window requests and returns one permutation (or
    :class:`WindowOutput`) per window; invalid permutations are repaired and counted.
    `on_windows(k)` is called after each batch with the number of windows it ranked.
    """
    config = config or WindowConfig()
    current = [list(r.candidates) for r in requests]
    schedules = [window_spans(min(len(c), config.top_k), config.window_size, config.step) for c in current]
    records: list[list[WindowRecord]] = [[] for _ in requests]
    for step in range(max((len(s) for s in schedules), default=0)):
        active = [i for i, spans in enumerate(schedules) if step < len(spans)]
        windows = []
        for i in active:
            start, end = schedules[i][step]
            windows.append(Request(requests[i].query, current[i][start:end]))
        outputs = list(rank_windows(windows))
        if len(outputs) != len(windows):
            raise ValueError(f"the window ranker returned {len(outputs)} results for {len(windows)} windows")
        for i, window, raw in zip(active, windows, outputs, strict=True):
            output = _as_output(raw)
            start, end = schedules[i][step]
            n = end - start
            order, repairs = repair_order([int(p) + 1 for p in output.order], n)
            current[i][start:end] = [window.candidates[p] for p in order]
            records[i].append(
                WindowRecord(
                    start,
                    end,
                    window.docids,
                    order,
                    output.reasoning,
                    output.text,
                    output.repairs + repairs,
                    output.generated_tokens,
                    None if output.scores is None else [float(x) for x in output.scores],
                )
            )
        if on_windows is not None:
            on_windows(len(windows))
    results = []
    for request, candidates, windows in zip(requests, current, records, strict=True):
        reranked = Request(request.query, candidates, dict(request.extra))
        results.append(WindowedRanking(reranked, windows))
    return results
