"""Independent reference implementations that tests compare the project's own code against."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def rbo_reference(
    first: Sequence[Hashable], second: Sequence[Hashable], p: float = 1.0, depth: int | None = None
) -> float:
    """Rank-biased overlap at depth k (Webber et al. 2010, Eq. 4 / Eq. 7), computed by ir-measures.

    ir-measures' ``Compat`` (Clarke et al. 2021) is RBO of a run against an ideal ranking; with
    ``normalize=False`` it is ``Σ_{d≤k} p^(d-1)·A_d / Σ_{d≤k} p^(d-1)``, k the longer list's length
    and ``A_d`` the overlap of the two depth-d prefixes over d. With both lists cut to
    ``k = min(len(S), len(T), depth)``, Webber's ``RBO@k = (1-p)·Σ_{d≤k} p^(d-1)·A_d`` is that
    value times ``1 - p^k``; at ``p = 1`` (the average overlap) it is the value itself. Empty lists
    follow the ``rbo`` package's convention (both empty: 1, one empty: 0).
    """
    import ir_measures

    if not first and not second:
        return 1.0
    if not first or not second:
        return 0.0
    k = min(len(first), len(second), depth if depth is not None else len(first))
    if k <= 0:
        return 0.0
    ideal = [ir_measures.Qrel("q", str(item), k - rank) for rank, item in enumerate(second[:k])]
    run = [ir_measures.ScoredDoc("q", str(item), float(k - rank)) for rank, item in enumerate(first[:k])]
    measure = ir_measures.Compat(p=p, normalize=False)
    compat = ir_measures.calc_aggregate([measure], ideal, run)[measure]
    return compat if p == 1.0 else compat * (1.0 - p**k)
