"""A backend as a batched window ranker: prompts, parse + repair, failures, token counts, and
sliding windows of many queries sharing one backend call."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted import ScriptedLabeller

from rrdistill.distill.backends import SamplingParams
from rrdistill.distill.window_ranker import GenerativeRanker
from rrdistill.prompts import PROMPT_VERSION, Repairs
from rrdistill.types import Candidate, Passage, Query, Request
from rrdistill.window import WindowConfig, sliding_window


def request(qid: str, text: str, n: int, good: set[int]) -> Request:
    return Request(
        Query(qid, text),
        [
            Candidate(Passage(f"{qid}-{i}", f"passage {i} {'GOOD' if i in good else 'plain'}"))
            for i in range(n)
        ],
    )


def test_windows_of_all_queries_share_each_backend_call() -> None:
    labeller = ScriptedLabeller()
    ranker = GenerativeRanker(labeller, SamplingParams(max_new_tokens=32), max_passage_tokens=None)
    requests = [
        request("a", "claim a", 30, {25, 28}),
        request("b", "claim b", 20, {19}),
        request("c", "claim c", 8, {7}),
    ]
    results = sliding_window(requests, ranker, WindowConfig(window_size=10, step=5, top_k=30))
    # a: 5 windows, b: 3, c: 1 — step k carries the k-th window of every query still going
    assert labeller.calls == [3, 2, 2, 1, 1]
    assert [r.request.docids[:2] for r in results] == [["a-25", "a-28"], ["b-19", "b-0"], ["c-7", "c-0"]]
    assert ranker.stats.windows == 9 and ranker.stats.failed == 0 and ranker.stats.format_ok == 9
    assert ranker.stats.generated_tokens == [11] * 9
    assert all(w.generated_tokens == 11 for r in results for w in r.windows)
    assert results[0].generated_tokens == 5 * 11
    assert all(w.reasoning and w.reasoning.startswith("passages") for r in results for w in r.windows)


def test_malformed_and_failed_generations_are_repaired_and_counted() -> None:
    labeller = ScriptedLabeller()
    ranker = GenerativeRanker(labeller, SamplingParams())
    windows = [
        request("fail", "FAIL claim", 4, {1}),
        request("mumble", "MUMBLE claim", 4, {1}),
        request("repeat", "REPEAT claim", 4, {2}),
        request("ok", "claim", 4, {3}),
    ]
    failed, mumbled, repeated, fine = ranker(windows)
    assert list(failed.order) == [0, 1, 2, 3] and failed.text is None and failed.generated_tokens is None
    assert failed.repairs == Repairs(missing=4, no_answer=1)
    assert list(mumbled.order) == [0, 1, 2, 3] and mumbled.repairs.no_answer == 1
    assert list(repeated.order) == [2, 0, 1, 3] and repeated.repairs == Repairs(duplicates=1, missing=1)
    assert list(fine.order) == [3, 0, 1, 2] and not fine.repairs.any
    stats = ranker.stats.to_json()
    assert (
        stats["windows"] == 4 and stats["failed"] == 1 and stats["repaired"] == 3 and stats["format_ok"] == 3
    )
    assert ranker.stats.errors == ["HTTP 503: unavailable"]
    assert stats["windows_with_token_counts"] == 3


def test_prompts_cut_passages_with_the_models_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ranker = GenerativeRanker(ScriptedLabeller(), max_passage_tokens=4, tokenizer=tokenizer)
    long = Request(
        Query("q", "what [1] is it"), [Candidate(Passage("d", "alpha beta gamma delta epsilon zeta eta"))] * 2
    )
    user = ranker.messages(long)[1]["content"]
    cut = tokenizer.convert_tokens_to_string(
        tokenizer.tokenize("alpha beta gamma delta epsilon zeta eta")[:4]
    )
    assert f"[1] {cut}\n" in user and "zeta" not in user
    assert "what (1) is it" in user  # brackets in the query cannot pose as identifiers
    assert ranker.truncator is not None and ranker.truncator.truncated == 2
    assert PROMPT_VERSION


@pytest.mark.parametrize("reasoning", [True, False])
def test_fast_mode_parses_answers_without_a_think_block(reasoning: bool) -> None:
    ranker = GenerativeRanker(ScriptedLabeller(), reasoning=reasoning)
    (output,) = ranker([request("x", "NOTHINK claim", 3, {2})])
    assert list(output.order) == [2, 0, 1]
    assert ranker.stats.format_ok == (0 if reasoning else 1)
