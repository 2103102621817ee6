"""Teacher permutations → training labels for cross-encoder losses.

A listwise teacher gives an order, not scores. Pairwise and listwise losses read relative
labels, so the order is turned into labels that decrease with rank; the scheme decides how much
the head of the list matters more than the tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

TargetScheme = Literal["reciprocal", "linear", "graded"]
DEFAULT_GRADES: tuple[tuple[int, float], ...] = ((5, 3.0), (10, 2.0), (20, 1.0))
"""``(last rank, label)`` bands for the graded scheme: ranks 1–5 → 3, 6–10 → 2, 11–20 → 1, rest → 0."""


def permutation_targets(
    n: int, scheme: TargetScheme = "reciprocal", grades: Sequence[tuple[int, float]] = DEFAULT_GRADES
) -> list[float]:
    """Labels for ranks 1..n, best first.

    - ``reciprocal``: ``1/r`` (RankNet on 1/rank; Sun et al. 2023 distil RankGPT this way);
    - ``linear``: ``(n - r + 1) / n``, evenly spaced;
    - ``graded``: relevance-like bands by position (for gain-based losses such as LambdaLoss).
    """
    if n < 0:
        raise ValueError("n must be ≥ 0")
    if scheme == "reciprocal":
        return [1.0 / r for r in range(1, n + 1)]
    if scheme == "linear":
        return [(n - r + 1) / n for r in range(1, n + 1)]
    if scheme == "graded":
        bands = sorted(grades)
        return [next((label for last, label in bands if r <= last), 0.0) for r in range(1, n + 1)]
    raise ValueError(f"unknown target scheme {scheme!r}: use reciprocal, linear or graded")
