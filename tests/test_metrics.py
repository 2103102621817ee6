"""Metrics against pytrec_eval and ir-measures (RBO) on thousands of random cases."""

from __future__ import annotations

import random

import numpy as np
import pytest
import pytrec_eval
from references import rbo_reference
from scipy.stats import kendalltau

from rrdistill.metrics import (
    evaluate,
    kendall_tau,
    mrr_at_k,
    ndcg_at_k,
    ndcg_vs_reference,
    parse_metric,
    ranked_docids,
    rbo,
    recall_at_k,
    reference_gains,
    topk_kendall_tau,
)

CUTS = (1, 3, 5, 10, 20, 100)


def random_case(rng: random.Random) -> tuple[dict, dict]:
    """Random qrels and run: graded and negative grades, score ties, missing and empty queries."""
    pool = [f"d{i}" for i in range(rng.randint(1, 40))]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(rng.randint(1, 6)):
        qid = f"q{q}"
        judged = rng.sample(pool, rng.randint(1, len(pool)))
        qrels[qid] = {d: rng.choice([-1, 0, 0, 1, 1, 2, 3]) for d in judged}
        fate = rng.random()
        if fate < 0.15:
            continue  # judged query missing from the run
        if fate < 0.25:
            run[qid] = {}  # an empty ranking
            continue
        retrieved = rng.sample(pool + [f"x{i}" for i in range(10)], rng.randint(1, len(pool)))
        ties = rng.random() < 0.5
        run[qid] = {d: float(rng.randint(0, 4)) if ties else rng.uniform(-5, 5) for d in retrieved}
    if rng.random() < 0.2:
        run["unjudged"] = {"d0": 1.0}
    return qrels, run


def test_matches_pytrec_eval_on_random_runs() -> None:
    rng = random.Random(1234)
    cut_list = ",".join(map(str, CUTS))
    measures = {f"ndcg_cut.{cut_list}", f"recall.{cut_list}", "recip_rank"}
    names = [f"{m}@{k}" for m in ("ndcg", "recall", "mrr") for k in CUTS]
    compared = 0
    for _ in range(1500):
        qrels, run = random_case(rng)
        reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        ours = evaluate(run, qrels, names)
        assert set(ours.per_query) == set(qrels)
        for qid, values in ours.per_query.items():
            if qid not in run:
                assert qid not in reference and all(v == 0.0 for v in values.values())
                continue
            ranked = ranked_docids(run[qid])
            for k in CUTS:
                assert values[f"ndcg@{k}"] == pytest.approx(reference[qid][f"ndcg_cut_{k}"], abs=1e-9)
                assert values[f"recall@{k}"] == pytest.approx(reference[qid][f"recall_{k}"], abs=1e-9)
                # MRR@k is trec_eval's recip_rank on the run cut at k.
                cut_run = {qid: {d: run[qid][d] for d in ranked[:k]}}
                rr = pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate(cut_run)
                assert values[f"mrr@{k}"] == pytest.approx(rr[qid]["recip_rank"] if rr else 0.0, abs=1e-9)
            compared += 1
        # Means count judged queries missing from the run as 0 (trec_eval -c).
        for name in names:
            assert ours.means[name] == pytest.approx(
                np.mean([v[name] for v in ours.per_query.values()]), abs=1e-12
            )
        judged_in_run = evaluate(run, qrels, ["ndcg@10"], only_run_queries=True)
        assert set(judged_in_run.per_query) == set(reference)
        if reference:
            expected = np.mean([v["ndcg_cut_10"] for v in reference.values()])
            assert judged_in_run.means["ndcg@10"] == pytest.approx(expected, abs=1e-9)
    assert compared > 3000


def test_tie_break_is_trec_eval_docid_descending() -> None:
    assert ranked_docids({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


def test_hand_checked_values() -> None:
    judgments = {"a": 2, "b": 0, "c": 1}
    assert ndcg_at_k(["a", "c", "b"], judgments, 10) == pytest.approx(1.0)
    # DCG = 1/log2(3) + 2/log2(4); IDCG = 2 + 1/log2(3)
    expected = (1 / np.log2(3) + 1.0) / (2 + 1 / np.log2(3))
    assert ndcg_at_k(["z", "c", "a"], judgments, 10) == pytest.approx(expected)
    assert recall_at_k(["z", "c"], judgments, 2) == pytest.approx(0.5)
    assert mrr_at_k(["z", "b", "c"], judgments, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["z", "b", "c"], judgments, 2) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0  # no relevant documents: 0, not NaN


def test_rbo_matches_ir_measures_on_random_lists() -> None:
    rng = random.Random(7)
    for trial in range(1500):
        universe = list(range(rng.randint(1, 30)))
        first = rng.sample(universe, rng.randint(0, len(universe)))
        second = rng.sample(universe, rng.randint(0, len(universe)))
        p = rng.choice([1.0, 0.9, 0.5, 0.98, rng.uniform(0.05, 0.99)])
        depth = rng.choice([None, rng.randint(1, 30)])
        expected = rbo_reference(first, second, p=p, depth=depth)
        assert rbo(first, second, p=p, depth=depth) == pytest.approx(expected, abs=1e-9), (
            trial,
            first,
            second,
            p,
        )


def test_rbo_known_values_and_errors() -> None:
    assert rbo([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert rbo([1, 2, 3], [4, 5, 6]) == 0.0
    assert rbo([1, 2], [2, 1]) == pytest.approx((0 + 1) / 2)
    with pytest.raises(ValueError, match="duplicate"):
        rbo([1, 1], [1, 2])
    with pytest.raises(ValueError, match="p must be"):
        rbo([1], [1], p=0.0)


@pytest.mark.parametrize("name", ["ndcg@0", "map@10", "ndcg", "recall@x"])
def test_unknown_metric_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(name)


def test_kendall_tau_matches_scipy_tau_b_on_random_samples_with_ties() -> None:
    rng = random.Random(11)
    compared = 0
    for _ in range(1500):
        n = rng.randint(0, 25)
        levels = rng.choice([2, 4, 1000])
        x = [float(rng.randint(0, levels)) for _ in range(n)]
        y = [float(rng.randint(0, levels)) for _ in range(n)]
        expected = kendalltau(x, y).statistic if n >= 2 else float("nan")
        ours = kendall_tau(x, y)
        if np.isnan(expected):
            assert np.isnan(ours), (x, y)
            continue
        assert ours == pytest.approx(expected, abs=1e-9), (x, y)
        compared += 1
    assert compared > 1000


def test_topk_tau_matches_scipy_on_the_teacher_top_k_positions() -> None:
    rng = random.Random(5)
    for _ in range(1000):
        pool = [f"d{i}" for i in range(rng.randint(2, 40))]
        teacher = rng.sample(pool, len(pool))
        student = rng.sample(pool, rng.randint(1, len(pool)))  # may rerank fewer passages
        k = rng.choice([3, 5, 10, 20])
        head = teacher[:k]
        positions = [student.index(d) if d in student else len(student) for d in head]
        expected = kendalltau(list(range(len(head))), positions).statistic
        ours = topk_kendall_tau(teacher, student, k)
        assert (np.isnan(ours) and np.isnan(expected)) or ours == pytest.approx(expected, abs=1e-9)
    assert topk_kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert topk_kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == pytest.approx(-1.0)


def test_ndcg_vs_teacher_matches_pytrec_eval_with_qrels_from_the_teacher_order() -> None:
    rng = random.Random(3)
    for _ in range(800):
        pool = [f"d{i}" for i in range(rng.randint(1, 40))]
        teacher = rng.sample(pool, len(pool))
        depth = rng.choice([5, 10, 20])
        scores = {d: float(rng.randint(0, 5)) if rng.random() < 0.3 else rng.uniform(-3, 3) for d in pool}
        qrels = {"q": reference_gains(teacher, depth)}
        # rank r → gain depth + 1 − r over the teacher's top `depth`
        assert [qrels["q"][d] for d in teacher[:depth]] == list(
            range(depth, depth - min(depth, len(pool)), -1)
        )
        expected = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate({"q": scores})
        ours = ndcg_vs_reference(teacher, ranked_docids(scores), 10, depth)
        assert ours == pytest.approx(expected["q"]["ndcg_cut_10"], abs=1e-9)
    assert ndcg_vs_reference(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert ndcg_vs_reference(["a", "b"], ["b", "a"]) < 1.0
