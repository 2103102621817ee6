"""The cascade: confidence, the escalation curve, threshold choice, and both cascade shapes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from rrdistill.io import read_rankgpt
from rrdistill.runtime import Reranker
from rrdistill.runtime.cascade import CascadeReranker, cascade_curve, margin_confidence, pick_threshold
from rrdistill.runtime.reasoning import ListwiseReranker
from rrdistill.types import Request
from rrdistill.window import WindowConfig, WindowOutput


def reversing_reasoner() -> ListwiseReranker:
    """A listwise reranker whose engine reverses every window it is given and says so: an order
    the fast model never produces, so the cascade's output shows whose order it kept."""

    def engine(windows: list[Request], reasoning: bool) -> list[WindowOutput]:
        assert reasoning
        return [
            WindowOutput(
                order=list(range(len(w.candidates)))[::-1], reasoning=f"reversed {len(w.candidates)}"
            )
            for w in windows
        ]

    return ListwiseReranker(engine, WindowConfig(window_size=20, step=10), "reverser")


def test_margin_confidence() -> None:
    assert margin_confidence([5.0, 5.0, 1.0]) == pytest.approx(0.0)
    assert margin_confidence([20.0, 0.0]) == pytest.approx(1.0, abs=1e-6)
    assert margin_confidence([1.0]) == 1.0
    assert 0 < margin_confidence([2.0, 1.0, 0.0]) < 1


def test_curve_endpoints_and_threshold_semantics() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        conf = [rng.choice([0.1, 0.5, rng.random()]) for _ in range(n)]
        fast, slow = [rng.random() for _ in range(n)], [rng.random() for _ in range(n)]
        fast_ms, slow_ms = [rng.uniform(1, 5) for _ in range(n)], [rng.uniform(50, 90) for _ in range(n)]
        curve = cascade_curve(conf, fast, slow, fast_ms, slow_ms)
        assert curve[0].quality == pytest.approx(np.mean(fast)) and curve[0].escalated == 0
        assert curve[-1].quality == pytest.approx(np.mean(slow)) and curve[-1].escalated == n
        assert curve[-1].latency_ms == pytest.approx(np.mean(fast_ms) + np.mean(slow_ms))
        assert [p.escalated for p in curve] == sorted(p.escalated for p in curve)
        for point in curve:  # "escalate when confidence < threshold" reproduces the share, ties aside
            below = sum(c < point.threshold for c in conf)
            if len(set(conf)) == n:
                assert below == point.escalated


def test_pick_threshold_takes_the_cheapest_near_best_point() -> None:
    conf = [0.1, 0.2, 0.3, 0.9]
    fast, slow = [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]  # only the two least confident need reasoning
    curve = cascade_curve(conf, fast, slow, [1] * 4, [100] * 4, shares=[0, 0.25, 0.5, 0.75, 1])
    chosen = pick_threshold(curve)
    assert chosen.share == 0.5 and chosen.quality == 1.0
    assert 0.2 < chosen.threshold < 0.3
    worse = cascade_curve(conf, [1.0] * 4, [0.0] * 4, [1] * 4, [100] * 4)
    assert pick_threshold(worse).share == 0.0  # reasoning that does not help is never chosen


def test_cross_encoder_fast_listwise_reasoner(
    tiny_bundle: Path, lm_bundles: dict[str, Path], data_dir: Path
) -> None:
    fast = Reranker.load(tiny_bundle)
    reasoner = Reranker.load(lm_bundles["plain"])
    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:4]
    never = CascadeReranker(fast, reasoner, threshold=0.0).rerank_many(requests)
    always = CascadeReranker(fast, reasoner, threshold=1.1).rerank_many(requests)
    for request, quick, slow in zip(requests, never, always, strict=True):
        assert not quick.escalated and slow.escalated
        assert quick.confidence == slow.confidence
        assert [r.index for r in quick] == [
            r.index for r in fast.rerank(request.query.text, [c.passage for c in request.candidates])
        ]
        assert sorted(r.index for r in slow) == list(range(len(request.candidates)))
        assert slow.windows and all(w.text is not None for w in slow.windows)
        assert [r.id for r in slow] == [request.candidates[r.index].docid for r in slow]


def test_an_escalated_query_takes_the_reasoners_order_for_its_head(tiny_bundle: Path, data_dir: Path) -> None:
    fast = Reranker.load(tiny_bundle)
    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:3]
    head = 8
    cascade = CascadeReranker(fast, reversing_reasoner(), threshold=1.1, head=head)
    for request, slow in zip(requests, cascade.rerank_many(requests), strict=True):
        quick = [r.index for r in fast.rerank(request.query.text, [c.passage for c in request.candidates])]
        assert slow.escalated
        assert [r.index for r in slow] == quick[:head][::-1] + quick[head:]
        assert [r.id for r in slow] == [request.candidates[r.index].docid for r in slow]
        assert [r.score for r in slow] == [float(len(quick) - rank) for rank in range(len(quick))]
        assert slow.explanation == f"reversed {head}"
    stats = cascade.stats.to_dict()
    assert stats["queries"] == 3 and stats["escalations"] == 3
    assert stats["reasoner"]["windows"] == 3 and stats["fast"] == fast.stats.to_dict()
    assert cascade.kind == "cascade" and cascade.bundle == tiny_bundle
    assert [r.index for r in cascade.rerank_many(requests[:1], reasoning=False)[0]] == [
        r.index for r in fast.rerank_many(requests[:1])[0]
    ]
    with pytest.raises(ValueError, match="cannot reason, so it cannot be the reasoner"):
        CascadeReranker(fast, fast, threshold=0.5)


def test_listwise_auto_uses_the_bundles_threshold(
    lm_bundles: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    from rrdistill.runtime.bundle import MANIFEST_NAME, Manifest, write_manifest

    request = read_rankgpt(data_dir / "noveleval" / "data.json")[0]
    passages = [c.passage for c in request.candidates]
    with pytest.raises(ValueError, match="no calibrated cascade threshold"):
        Reranker.load(lm_bundles["first"]).rerank(request.query.text, passages, reasoning="auto")
    copy = shutil.copytree(lm_bundles["first"], tmp_path / "calibrated")
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["extra"]["cascade"] = {"threshold": 1.1}
    write_manifest(copy, Manifest.from_json(data))
    ranked = Reranker.load(copy).rerank(request.query.text, passages, reasoning="auto")
    assert ranked.escalated and 0.0 <= ranked.confidence <= 1.0
    assert sorted(r.index for r in ranked) == list(range(20))
