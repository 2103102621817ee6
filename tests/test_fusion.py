"""Score fusion: the interpolation formula, and the rerank_file wrapper around a real bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrdistill.distill.students.label import bundle_reranker
from rrdistill.fusion import fused_reranker, interpolate, zscore
from rrdistill.io import read_rankgpt
from rrdistill.types import Candidate, Passage, Query, Request


def test_interpolation_matches_its_formula_on_random_lists() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        a, b, w = rng.normal(size=n) * 7 + 3, rng.normal(size=n), float(rng.uniform())
        expected = (1 - w) * (a - a.mean()) / (a.std() or 1) + w * (b - b.mean()) / (b.std() or 1)
        if n == 1:
            expected = np.zeros(1)
        np.testing.assert_allclose(interpolate(a, b, w), expected, atol=1e-12)
    assert zscore([2.0, 2.0, 2.0]).tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(interpolate([1, 2, 3], [3, 1, 2], 1.0), zscore([3, 1, 2]))
    with pytest.raises(ValueError, match="weight"):
        interpolate([1.0], [1.0], 1.5)


def test_fused_reranker_reorders_by_the_blend_and_records_it(tiny_bundle: Path, data_dir: Path) -> None:
    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:3]
    plain = bundle_reranker(tiny_bundle, threads=1)(requests)
    for weight in (0.0, 0.5, 1.0):
        fused = fused_reranker(bundle_reranker(tiny_bundle, threads=1), weight)(requests)
        for request, alone, result in zip(requests, plain, fused, strict=True):
            first = {c.docid: c.score for c in request.candidates}
            ce = {c.docid: c.score for c in alone.candidates}
            blend = interpolate([first[d] for d in request.docids], [ce[d] for d in request.docids], weight)
            expected = [request.docids[i] for i in sorted(range(len(blend)), key=lambda i: (-blend[i], i))]
            assert result.docids == expected
            assert result.extra["teacher"]["fusion"]["weight"] == weight
    no_scores = [Request(Query("q", "x"), [Candidate(Passage("a", "t")), Candidate(Passage("b", "u"))])]
    with pytest.raises(ValueError, match="first-stage score"):
        fused_reranker(bundle_reranker(tiny_bundle, threads=1), 0.5)(no_scores)
