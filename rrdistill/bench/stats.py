"""Latency percentiles, throughput, and the uncertainty of a paired quality difference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Per-call latencies of one workload (seconds) and the throughput they imply."""

    calls: int
    docs: int
    """Documents scored over all timed calls."""
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    total: float
    docs_per_second: float
    """All documents over the wall time of all timed calls (not the mean of per-call rates)."""

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile with linear interpolation between order statistics (numpy's default,
    = ``statistics.quantiles(method="inclusive")``): with few repeats p99 lies between the two
    slowest calls instead of snapping to the maximum."""
    if not values:
        raise ValueError("no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(latencies: Sequence[float], docs: Sequence[int]) -> LatencySummary:
    """Summarise timed calls; ``docs[i]`` is the number of documents call ``i`` scored."""
    if not latencies:
        raise ValueError("no timed calls to summarise")
    if len(docs) != len(latencies):
        raise ValueError("one document count per call is needed")
    if any(t <= 0 for t in latencies):
        raise ValueError("latencies must be positive")
    total = float(sum(latencies))
    return LatencySummary(
        calls=len(latencies),
        docs=int(sum(docs)),
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p99=percentile(latencies, 99),
        mean=total / len(latencies),
        min=float(min(latencies)),
        max=float(max(latencies)),
        total=total,
        docs_per_second=sum(docs) / total,
    )


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-query differences (candidate − reference) with a percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    queries: int
    confidence: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def paired_delta_by_query(
    candidate: Mapping[str, float], reference: Mapping[str, float], *, confidence: float = 0.95
) -> PairedDelta | None:
    """:func:`paired_delta` over the queries both per-query maps score (None when they share none)."""
    shared = [q for q in candidate if q in reference]
    if not shared:
        return None
    return paired_delta([candidate[q] for q in shared], [reference[q] for q in shared], confidence=confidence)


def paired_delta(
    candidate: Sequence[float],
    reference: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDelta:
    """Bootstrap the mean per-query difference: with a few hundred queries a half-point nDCG
    difference is within noise, and the interval says so."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired values must be two non-empty sequences of the same length")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return PairedDelta(
        mean=float(diff.mean()),
        low=float(np.percentile(means, tail)),
        high=float(np.percentile(means, 100 - tail)),
        queries=int(diff.size),
        confidence=confidence,
    )
