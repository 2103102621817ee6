"""Sliding window: the schedule, its guarantee with a perfect ranker, batching, repairs."""

from __future__ import annotations

import random

import pytest

from rrdistill.prompts import Repairs
from rrdistill.types import Candidate, Passage, Query, Request
from rrdistill.window import WindowConfig, WindowOutput, per_window, sliding_window, window_spans


def request(qid: str, relevance: list[float]) -> Request:
    """Candidates whose text is their true relevance, so an oracle ranker can sort them."""
    return Request(
        Query(qid, "q"), [Candidate(Passage(f"{qid}-{i}", str(r))) for i, r in enumerate(relevance)]
    )


def oracle(windows: list[Request]) -> list[list[int]]:
    return [
        sorted(range(len(w.candidates)), key=lambda i: -float(w.candidates[i].passage.text)) for w in windows
    ]


def test_schedule_is_rankllms_back_to_front_pass() -> None:
    assert window_spans(100) == [
        (80, 100),
        (70, 90),
        (60, 80),
        (50, 70),
        (40, 60),
        (30, 50),
        (20, 40),
        (10, 30),
        (0, 20),
    ]
    assert window_spans(25) == [(5, 25), (0, 15)]
    assert window_spans(20) == [(0, 20)]
    assert window_spans(7) == [(0, 7)]
    assert window_spans(0) == []
    assert window_spans(10, window_size=4, step=4) == [(6, 10), (2, 6), (0, 2)]


def test_perfect_ranker_puts_the_true_top_in_order_after_one_pass() -> None:
    """With window W and step S, one pass guarantees the top W−S are correct (RankGPT's property)."""
    rng = random.Random(3)
    for _ in range(300):
        window, step = rng.choice([(20, 10), (4, 2), (10, 5), (6, 3)])
        n = rng.randint(1, 120)
        relevance = [rng.random() for _ in range(n)]
        (result,) = sliding_window([request("q", relevance)], oracle, WindowConfig(window, step, top_k=n))
        got = [float(c.passage.text) for c in result.request.candidates]
        assert sorted(got) == sorted(relevance)
        best = sorted(relevance, reverse=True)[: window - step]
        assert got[: len(best)] == best


def test_windows_of_all_queries_are_batched_per_step() -> None:
    lengths = [100, 100, 25, 100, 7]
    requests = [request(f"q{i}", [random.random() for _ in range(n)]) for i, n in enumerate(lengths)]
    batch_sizes: list[int] = []

    def ranker(windows: list[Request]) -> list[list[int]]:
        batch_sizes.append(len(windows))
        assert len({w.qid for w in windows}) == len(windows)  # one window per query per step
        return oracle(windows)

    progressed: list[int] = []
    sliding_window(requests, ranker, on_windows=progressed.append)
    assert batch_sizes == [5, 4, 3, 3, 3, 3, 3, 3, 3]
    assert progressed == batch_sizes
    assert sum(batch_sizes) == sum(len(window_spans(n)) for n in lengths)


def test_only_top_k_is_reranked() -> None:
    relevance = list(range(30))  # ascending: the oracle wants to reverse the list
    (result,) = sliding_window([request("q", relevance)], oracle, WindowConfig(20, 10, top_k=20))
    texts = [int(c.passage.text) for c in result.request.candidates]
    assert texts[:20] == list(range(19, -1, -1))
    assert texts[20:] == list(range(20, 30))


def test_invalid_permutations_are_repaired_and_counted() -> None:
    def sloppy(windows: list[Request]) -> list[WindowOutput]:
        return [
            WindowOutput(order=[1, 1, 99], text="[2] > [2] > [100]", repairs=Repairs(no_answer=0))
            for _ in windows
        ]

    (result,) = sliding_window([request("q", [0.0] * 5)], sloppy, WindowConfig(5, 2))
    (window,) = result.windows
    assert window.order == [1, 0, 2, 3, 4]
    assert window.repairs == Repairs(out_of_range=1, duplicates=1, missing=4)
    assert result.repairs == window.repairs
    assert window.to_json()["repairs"]["duplicates"] == 1
    assert [c.docid for c in result.request.candidates] == ["q-1", "q-0", "q-2", "q-3", "q-4"]


def test_per_window_adapter_and_records() -> None:
    calls: list[str] = []

    def one(window: Request) -> list[int]:
        calls.append(window.qid)
        return list(reversed(range(len(window.candidates))))

    results = sliding_window([request("a", [0] * 3), request("b", [0] * 3)], per_window(one))
    assert calls == ["a", "b"]
    assert results[0].windows[0].to_json() == {
        "start": 0,
        "end": 3,
        "docids": ["a-0", "a-1", "a-2"],
        "order": [2, 1, 0],
    }


def test_a_ranker_returning_the_wrong_number_of_results_is_an_error() -> None:
    with pytest.raises(ValueError, match="returned 0 results for 1 windows"):
        sliding_window([request("a", [0, 1])], lambda windows: [])


@pytest.mark.parametrize(("window", "step", "top_k"), [(1, 1, 5), (5, 0, 5), (5, 6, 5), (5, 2, 0)])
def test_config_is_validated(window: int, step: int, top_k: int) -> None:
    with pytest.raises(ValueError):
        WindowConfig(window, step, top_k)


def test_generated_tokens_are_kept_per_window_and_summed() -> None:
    requests = [request("q", [float(i) for i in range(6)])]

    def ranker(windows: list[Request]) -> list[WindowOutput]:
        return [WindowOutput(list(range(len(w.candidates))), generated_tokens=7) for w in windows]

    (ranked,) = sliding_window(requests, ranker, WindowConfig(window_size=4, step=2))
    assert [w.generated_tokens for w in ranked.windows] == [7, 7]
    assert ranked.generated_tokens == 14
    assert ranked.windows[0].to_json()["generated_tokens"] == 7
    (unknown,) = sliding_window(requests, oracle, WindowConfig(window_size=4, step=2))
    assert unknown.generated_tokens is None and "generated_tokens" not in unknown.windows[0].to_json()
