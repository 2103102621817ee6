"""The GRPO reward against independent references: pytrec_eval (nDCG@10, Recall@10) and RBO from
ir-measures, on thousands of random windows; malformed completions; the trl adapter."""

from __future__ import annotations

import random

import pytest
import pytrec_eval
from references import rbo_reference

from rrdistill.distill.teacher.rewards import RankingReward, completion_text, ranking_reward
from rrdistill.prompts import format_ranking


def reference_reward(pred: list[int], relevant: set[int], reference: list[int], p: float) -> float:
    """ReasonRank's reward computed the way its verl code does: pytrec_eval + RBO (its code uses the
    rbo package's ``RankingSimilarity(pred, reference).rbo(p=p)``; ``rbo_reference`` is equal to it)."""
    run = {"q": {str(d): float(-(i + 1)) for i, d in enumerate(pred)}}
    qrels = {"q": {str(d): 1 for d in relevant}}
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10"}).evaluate(run)["q"]
    overlap = rbo_reference(pred, reference, p=p)
    return scores["ndcg_cut_10"] + 0.2 * scores["recall_10"] + 0.1 * overlap


def completion(order_1based: list[int], reasoning: str = "because") -> str:
    return f"<think>{reasoning}</think>\n<answer>{format_ranking([i - 1 for i in order_1based])}</answer>"


def test_matches_pytrec_eval_and_rbo_on_random_windows() -> None:
    rng = random.Random(7)
    for case in range(1500):
        n = rng.randint(1, 20)
        pred = rng.sample(range(1, n + 1), n)
        reference = rng.sample(range(1, n + 1), n)
        relevant = set(rng.sample(range(1, n + 1), rng.randint(1, n)))
        p = 1.0 if case % 3 else rng.choice([0.5, 0.8, 0.9, 0.95])
        got = ranking_reward(completion(pred, f"case {case} [3] > [1]"), n, relevant, reference, rbo_p=p)
        assert got == pytest.approx(reference_reward(pred, relevant, reference, p), abs=1e-9), (
            n,
            pred,
            relevant,
            reference,
            p,
        )


def test_no_relevant_passage_leaves_only_rbo() -> None:
    assert ranking_reward(completion([2, 1, 3]), 3, set(), [2, 1, 3]) == pytest.approx(0.1)


def test_perfect_answer_scores_the_maximum() -> None:
    assert ranking_reward(completion([3, 1, 2]), 3, {3, 1}, [3, 1, 2]) == pytest.approx(1.3)


@pytest.mark.parametrize(
    "text",
    [
        "[2] > [1] > [3]",  # no tags at all
        "<answer>[2] > [1] > [3]</answer>",  # no think block
        "<think>reasoning</think> [2] > [1] > [3]",  # no answer block
        "<think>reasoning</think><answer>[2] > [1] > [3]",  # unterminated answer
        "<think>reasoning <answer>[2] > [1] > [3]</answer>",  # unterminated think
        "",
    ],
)
def test_broken_format_is_penalised(text: str) -> None:
    assert ranking_reward(text, 3, {1}, [1, 2, 3]) == -1.0


@pytest.mark.parametrize(
    "answer",
    [
        "[2] > [1]",  # missing id
        "[2] > [1] > [1]",  # duplicate instead of [3]
        "[2] > [1] > [3] > [3]",  # duplicate on top
        "[2] > [1] > [3] > [4]",  # out of range
        "[0] > [1] > [2]",  # 0-based ids
        "",  # empty answer
        "none of them",
    ],
)
def test_wrong_identifier_set_scores_zero(answer: str) -> None:
    assert ranking_reward(f"<think>x</think><answer>{answer}</answer>", 3, {1}, [1, 2, 3]) == 0.0


def test_random_garbage_never_leaves_the_reward_range() -> None:
    rng = random.Random(11)
    alphabet = list("[]<>/ 0123456789thinkanswer>\n")
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        if rng.random() < 0.5:
            text = f"<think>{text}</think><answer>{text}</answer>"
        value = ranking_reward(text, 5, {1, 2}, [1, 2, 3, 4, 5])
        assert value in (-1.0, 0.0) or 0.0 < value <= 1.3 + 1e-9


def test_trl_adapter_reads_chat_and_text_completions_with_dataset_columns() -> None:
    reward = RankingReward(rbo_p=1.0)
    assert reward.__name__ == "ranking_reward"
    chat = [
        [{"role": "assistant", "content": completion([2, 1])}],
        [{"role": "assistant", "content": "oops"}],
    ]
    values = reward(
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=chat,
        n=[2, 2],
        relevant=[[2], [2]],
        reference=[[2, 1], [2, 1]],
        qid=["a", "b"],
        trainer_state=None,
    )
    assert values == [pytest.approx(1.3), -1.0]
    assert reward(completions=[completion([1, 2])], n=[2], relevant=[[2]], reference=[[2, 1]]) == [
        pytest.approx(reference_reward([1, 2], {2}, [2, 1], 1.0))
    ]
    with pytest.raises(ValueError, match="same length"):
        reward(completions=["x"], n=[2, 3], relevant=[[1]], reference=[[1, 2]])
    with pytest.raises(ValueError, match="rbo_p"):
        RankingReward(rbo_p=0.0)
    assert (
        completion_text([{"role": "user", "content": "no"}, {"role": "assistant", "content": "yes"}]) == "yes"
    )


def fast_completion(order_1based: list[int]) -> str:
    return f"<answer>{format_ranking([i - 1 for i in order_1based])}</answer>"


def test_fast_mode_reward_matches_the_references_on_random_windows() -> None:
    """A fast-mode prompt asks for the answer block alone; its correct answers earn the full reward."""
    rng = random.Random(5)
    for _ in range(500):
        n = rng.randint(1, 20)
        pred = rng.sample(range(1, n + 1), n)
        reference = rng.sample(range(1, n + 1), n)
        relevant = set(rng.sample(range(1, n + 1), rng.randint(1, n)))
        got = ranking_reward(fast_completion(pred), n, relevant, reference, reasoning=False)
        assert got == pytest.approx(reference_reward(pred, relevant, reference, 1.0), abs=1e-9)
        # the same answer judged by the reasoning format is a format error: the old contract's bug
        assert ranking_reward(fast_completion(pred), n, relevant, reference) == -1.0


@pytest.mark.parametrize(
    "text",
    [
        "<think>x</think><answer>[2] > [1] > [3]</answer>",  # a think block the fast prompt did not ask for
        "[2] > [1] > [3]",  # no answer block
        "Sure! <answer>[2] > [1] > [3]</answer>",  # chatter around the block
        "<answer>[2] > [1] > [3]",  # unterminated
    ],
)
def test_fast_mode_format_is_strict(text: str) -> None:
    assert ranking_reward(text, 3, {1}, [1, 2, 3], reasoning=False) == -1.0


def test_fast_mode_wrong_identifier_set_scores_zero() -> None:
    assert ranking_reward("<answer>[2] > [1] > [1]</answer>", 3, {1}, [1, 2, 3], reasoning=False) == 0.0


def test_trl_adapter_follows_each_rows_mode() -> None:
    reward = RankingReward()
    values = reward(
        completions=[fast_completion([2, 1]), completion([2, 1]), fast_completion([2, 1])],
        n=[2, 2, 2],
        relevant=[[2], [2], [2]],
        reference=[[2, 1]] * 3,
        reasoning=[False, True, True],
    )
    assert values == [pytest.approx(1.3), pytest.approx(1.3), -1.0]
    assert RankingReward(reasoning=False)(
        completions=[fast_completion([2, 1])], n=[2], relevant=[[2]], reference=[[2, 1]]
    ) == [pytest.approx(1.3)]
