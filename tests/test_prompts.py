"""The listwise prompt's exact wording, and parsing/repair of well- and ill-formed answers."""

from __future__ import annotations

import hashlib

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from rrdistill import prompts
from rrdistill.prompts import (
    PROMPT_VERSION,
    Repairs,
    TokenTruncator,
    build_messages,
    format_answer,
    parse_answer,
    repair_order,
)
from rrdistill.types import Passage

PASSAGES = [Passage("a", "Cats [1] purr.", "On cats"), Passage("b", "Dogs\n bark.")]

EXPECTED_USER = (
    "I will provide you with 2 passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: why do cats (2) purr?.\n"
    "\n"
    "[1] Title: On cats Content: Cats (1) purr.\n"
    "[2] Dogs bark.\n"
    "Search Query: why do cats (2) purr?.\n"
    "Rank the 2 passages above based on their relevance to the search query. All the passages should be "
    "included and listed using identifiers, in descending order of relevance. The format of the answer "
    "should be [] > [], e.g., [2] > [1]."
)


def test_user_prompt_is_reasonranks_wording() -> None:
    messages = build_messages("why do cats [2] purr?", PASSAGES)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == EXPECTED_USER
    assert "<think>" in messages[0]["content"] and "<answer>" in messages[0]["content"]


def test_fast_variant_drops_only_the_think_block() -> None:
    fast = build_messages("why do cats [2] purr?", PASSAGES, reasoning=False)
    assert fast[1]["content"] == EXPECTED_USER
    assert "<think>" not in fast[0]["content"] and "<answer>" in fast[0]["content"]


def test_prompt_version_is_bumped_with_the_wording() -> None:
    """Artifacts record PROMPT_VERSION; changing a template without bumping it must fail here."""
    text = "".join(
        [prompts.SYSTEM_PROMPT_REASONING, prompts.SYSTEM_PROMPT_FAST, prompts._PREFIX, prompts._SUFFIX]
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    assert (PROMPT_VERSION, digest) == ("reasonrank-listwise-1", "e46a71a2b1db")


def test_answer_format_round_trips() -> None:
    text = format_answer([1, 0, 2], reasoning="b is the best match.")
    assert text == "<think>b is the best match.</think>\n<answer>[2] > [1] > [3]</answer>"
    parsed = parse_answer(text, 3)
    assert parsed.order == [1, 0, 2]
    assert parsed.format_ok and not parsed.repairs.any
    assert parsed.reasoning == "b is the best match."
    fast = parse_answer(format_answer([2, 0, 1]), 3, reasoning=False)
    assert fast.order == [2, 0, 1] and fast.format_ok and fast.reasoning is None


@pytest.mark.parametrize(
    ("text", "order", "format_ok", "repairs"),
    [
        # no tags at all: a bare ranking is still read, but the strict format failed
        ("[3] > [1] > [2]", [2, 0, 1], False, Repairs()),
        # duplicated ids: the first mention wins, the missing one is appended
        (
            "<think>x</think><answer>[2] > [2] > [1]</answer>",
            [1, 0, 2],
            True,
            Repairs(duplicates=1, missing=1),
        ),
        # out-of-range ids are dropped
        (
            "<think>x</think> <answer>[4] > [0] > [3] > [1] > [2]</answer>",
            [2, 0, 1],
            True,
            Repairs(out_of_range=2),
        ),
        # prose without identifiers: input order, counted as no answer
        ("I think the first passage is great.", [0, 1, 2], False, Repairs(missing=3, no_answer=1)),
        # empty completion
        ("", [0, 1, 2], False, Repairs(missing=3, no_answer=1)),
        # generation cut inside the think block: identifiers in the reasoning are not an answer
        ("<think>[3] looks good, [1] maybe", [0, 1, 2], False, Repairs(missing=3, no_answer=1)),
        # answer tag never closed: text after <answer> is used, format fails
        ("<think>ok</think><answer>[3] > [2]", [2, 1, 0], False, Repairs(missing=1)),
        # answer after </think> without tags
        ("<think>ok</think> [2] > [3] > [1]", [1, 2, 0], False, Repairs()),
        # spaces inside brackets and extra prose inside the answer
        ("<think>r</think>\n<answer>Ranking: [ 2 ] > [3] > [1].</answer>", [1, 2, 0], True, Repairs()),
        # bare numbers when nothing is bracketed (ReasonRank's own parser keeps digits)
        ("<think>r</think><answer>2 > 1 > 3</answer>", [1, 0, 2], True, Repairs()),
    ],
)
def test_malformed_answers_are_repaired_and_counted(
    text: str, order: list[int], format_ok: bool, repairs: Repairs
) -> None:
    parsed = parse_answer(text, 3)
    assert parsed.order == order
    assert parsed.format_ok is format_ok
    assert parsed.repairs == repairs
    assert sorted(parsed.order) == [0, 1, 2]


def test_reasoning_is_kept_even_when_the_answer_is_broken() -> None:
    parsed = parse_answer("<think>passage 2 answers it</think><answer>[2] > [9]", 3)
    assert parsed.reasoning == "passage 2 answers it"
    assert parsed.ids == [2, 9]


def test_repair_order_counts_and_completes() -> None:
    order, repairs = repair_order([5, 5, 0, 2, 7], 5)
    assert order == [4, 1, 0, 2, 3]
    assert repairs == Repairs(out_of_range=2, duplicates=1, missing=3)
    assert repairs + repairs == Repairs(4, 2, 6, 0)


def _word_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "on", "mat", "a"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def test_token_truncation_is_counted_and_keeps_text_verbatim() -> None:
    truncate = TokenTruncator(3, _word_tokenizer())
    assert truncate("the  cat sat on the mat") == "the  cat sat"
    assert truncate("a cat") == "a cat"
    assert (truncate.seen, truncate.truncated) == (2, 1)
    words = TokenTruncator(2)
    assert words("one two three") == "one two"
    messages = build_messages(
        "q", [Passage("x", "the cat sat on the mat")], truncate=TokenTruncator(2, _word_tokenizer())
    )
    assert "[1] the cat\n" in messages[1]["content"]


def test_relevance_judgment_prompt_and_parser() -> None:
    from rrdistill.prompts import SYSTEM_PROMPT_JUDGE, build_judgment_messages, parse_judgment

    messages = build_judgment_messages("is [3] tall?", [Passage("a", "x [2] y"), Passage("b", "z", "T")])
    assert messages[0]["content"] == SYSTEM_PROMPT_JUDGE
    user = messages[1]["content"]
    assert "Identify the passages that are relevant to the search query: is (3) tall?." in user
    assert "[1] x (2) y\n[2] Title: T Content: z\n" in user
    assert user.endswith("If no passage is relevant, answer with an empty list [].")
    judged = parse_judgment("<think>b is</think><answer>[2], [7], [2], [1]</answer>", 2)
    assert (judged.relevant, judged.out_of_range, judged.format_ok, judged.answered) == (
        [1, 0],
        1,
        True,
        True,
    )
    assert parse_judgment("<think>none</think><answer>[]</answer>", 2).relevant == []
    assert parse_judgment("<think>none</think><answer>[]</answer>", 2).answered
    cut_off = parse_judgment("<think>still thinking", 2)
    assert not cut_off.answered and cut_off.reasoning == "still thinking"
