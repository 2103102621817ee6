"""The listwise prompt (ReasonRank's, verbatim in meaning) and the parser for its answers.

One source of truth for every stage that talks to a generative ranker: synthesis, SFT targets,
GRPO rewards, labelling and the runtime's reasoning mode all build and parse through here, and
write :data:`PROMPT_VERSION` into their artifacts so a change of wording is never silent.

Identifiers in prompts and answers are 1-based (``[1]`` … ``[n]``) as the model sees them;
everything this module returns to code is 0-based positions into the window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rrdistill.types import Passage

PROMPT_VERSION = "reasonrank-listwise-1"
"""Bump whenever a template below changes: artifacts record it and tests pin the wording."""

SYSTEM_PROMPT_REASONING = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevance to the "
    "query. Given a query and a passage list, you first thinks about the reasoning process in the mind "
    "and then provides the answer (i.e., the reranked passage list). The reasoning process and answer "
    "are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
"""ReasonRank's system prompt for reasoning rerankers (kept word for word, grammar included)."""

SYSTEM_PROMPT_FAST = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevance to the "
    "query. Given a query and a passage list, you provide the answer (i.e., the reranked passage list) "
    "directly, without a reasoning process. The answer is enclosed within <answer> </answer> tags, i.e., "
    "<answer> answer here </answer>."
)
"""The no-reasoning variant: the same contract with the think block left out (the fast mode)."""

_PREFIX = (
    "I will provide you with {n} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n"
)
_SUFFIX = (
    "Search Query: {query}.\n"
    "Rank the {n} passages above based on their relevance to the search query. All the passages "
    "should be included and listed using identifiers, in descending order of relevance. The format "
    "of the answer should be [] > [], e.g., [2] > [1]."
)

ANSWER_PATTERN = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.DOTALL)
"""The strict format (ReasonRank's reward regex); group 1 is the reasoning, group 2 the ranking."""

_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")
_BRACKETED_ID = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_ID = re.compile(r"\d+")


def replace_brackets(text: str) -> str:
    """``[3]`` → ``(3)`` inside queries and passages, so they cannot be mistaken for identifiers."""
    return _BRACKETED_NUMBER.sub(r"(\1)", text)


def format_passage(passage: Passage, truncate: Callable[[str], str] | None = None) -> str:
    """A passage as the prompt shows it: ``Title: … Content: …`` when titled, truncated, one line."""
    content = f"Title: {passage.title} Content: {passage.text}" if passage.title else passage.text
    content = " ".join(content.split())
    if truncate is not None:
        content = truncate(content)
    return replace_brackets(content)


def build_user_prompt(
    query: str, passages: Sequence[Passage], truncate: Callable[[str], str] | None = None
) -> str:
    query = replace_brackets(" ".join(query.split()))
    n = len(passages)
    lines = [_PREFIX.format(n=n, query=query)]
    lines += [f"[{i}] {format_passage(p, truncate)}" for i, p in enumerate(passages, start=1)]
    return "\n".join(lines) + "\n" + _SUFFIX.format(n=n, query=query)


def build_messages(
    query: str,
    passages: Sequence[Passage],
    *,
    reasoning: bool = True,
    truncate: Callable[[str], str] | None = None,
) -> list[dict[str, str]]:
    """Chat messages (system + user) for ranking one window of passages."""
    system = SYSTEM_PROMPT_REASONING if reasoning else SYSTEM_PROMPT_FAST
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": build_user_prompt(query, passages, truncate)},
    ]


def format_ranking(order: Sequence[int]) -> str:
    """0-based positions → ``[2] > [1] > …``."""
    return " > ".join(f"[{i + 1}]" for i in order)


def format_answer(order: Sequence[int], reasoning: str | None = None) -> str:
    """The assistant turn a model is trained to produce (SFT target), with or without reasoning."""
    answer = f"<answer>{format_ranking(order)}</answer>"
    return f"<think>{reasoning.strip()}</think>\n{answer}" if reasoning is not None else answer


# ----------------------------------------------------------------------------------------------
# Truncation by tokens
# ----------------------------------------------------------------------------------------------


PROMPT_OVERHEAD_TOKENS = 320
"""Tokens of a window's prompt besides its passages: system prompt, instructions (twice the
query), identifiers, chat-template markup; measured on Qwen2.5 and SmolLM2 at ≈ 230–280 with
a 30-word query, rounded up."""
TOKENS_PER_WORD = 1.6
"""Passages cut by words (no tokenizer at hand) are budgeted at this many tokens a word: about
1.3 for plain English in BPE vocabularies, up to ≈ 1.6 for scientific abstracts; the upper end, so
the prompt fits."""


def passage_budget(
    context: int,
    window: int,
    max_new_tokens: int,
    *,
    by_words: bool,
    ceiling: int = 512,
    floor: int = 16,
) -> int:
    """Per-passage cut (tokens, or words when `by_words`) so a full window's prompt and the
    completion fit in `context` tokens; at most `ceiling` (ReasonRank's 512).

    Raises ValueError when even `floor` per passage would not fit: the window, the generation
    budget or the server's context has to change.
    """
    available = context - max_new_tokens - PROMPT_OVERHEAD_TOKENS
    per_passage = available / max(window, 1)
    if by_words:
        per_passage /= TOKENS_PER_WORD
    budget = min(ceiling, int(per_passage))
    if budget < floor:
        raise ValueError(
            f"a window of {window} passages and {max_new_tokens} new tokens do not fit a {context}-token "
            f"context (≈ {max(budget, 0)} {'words' if by_words else 'tokens'} per passage left): use a "
            "smaller window or generation budget, or serve the model with a longer context"
        )
    return budget


class TokenTruncator:
    """Cuts passages to `max_tokens` tokens of a tokenizer and counts how many it cut.

    Accepts a ``tokenizers.Tokenizer`` (cut at the token's character offset, so the text is
    kept verbatim) or a transformers tokenizer (anything with ``tokenize`` and
    ``convert_tokens_to_string``). Without a tokenizer it cuts by whitespace-separated words.
    """

    def __init__(self, max_tokens: int, tokenizer: Any = None) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be ≥ 1")
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.seen = 0
        self.truncated = 0

    def __call__(self, text: str) -> str:
        self.seen += 1
        cut = self._cut(text)
        if cut != text:
            self.truncated += 1
        return cut

    def _cut(self, text: str) -> str:
        tok = self.tokenizer
        if tok is None:
            words = text.split()
            return " ".join(words[: self.max_tokens]) if len(words) > self.max_tokens else text
        if hasattr(tok, "tokenize") and hasattr(tok, "convert_tokens_to_string"):
            tokens = tok.tokenize(text)
            return (
                tok.convert_tokens_to_string(tokens[: self.max_tokens])
                if len(tokens) > self.max_tokens
                else text
            )
        encoding = tok.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= self.max_tokens:
            return text
        return text[: encoding.offsets[self.max_tokens - 1][1]]


# ----------------------------------------------------------------------------------------------
# Parsing and repair
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repairs:
    """What had to change to turn a model's answer into a permutation of the window.

    Counts, so that the repairs of many windows add up (``a + b``) into a job's summary.
    """

    out_of_range: int = 0
    duplicates: int = 0
    missing: int = 0
    no_answer: int = 0
    """Answers with no identifiers at all (the window kept its input order)."""

    @property
    def any(self) -> bool:
        return bool(self.out_of_range or self.duplicates or self.missing or self.no_answer)

    def __add__(self, other: Repairs) -> Repairs:
        return Repairs(
            self.out_of_range + other.out_of_range,
            self.duplicates + other.duplicates,
            self.missing + other.missing,
            self.no_answer + other.no_answer,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParsedAnswer:
    order: list[int]
    """A complete permutation of ``range(n)`` (0-based), after repair."""
    ids: list[int]
    """The identifiers exactly as the answer wrote them (1-based, before repair)."""
    reasoning: str | None
    format_ok: bool
    """The strict format held: ``<think>…</think><answer>…</answer>`` (reasoning mode) or an
    answer with identifiers (fast mode). GRPO's format reward is built on this."""
    repairs: Repairs


def repair_order(ids: Sequence[int], n: int) -> tuple[list[int], Repairs]:
    """1-based identifiers → a 0-based permutation of ``range(n)``.

    Keeps identifiers in range, drops repeats (the first mention wins) and appends the missing
    ones in input order, which is what RankLLM does and keeps the first stage's order for
    whatever the model forgot.
    """
    order: list[int] = []
    seen: set[int] = set()
    out_of_range = duplicates = 0
    for identifier in ids:
        if not 1 <= identifier <= n:
            out_of_range += 1
            continue
        if identifier in seen:
            duplicates += 1
            continue
        seen.add(identifier)
        order.append(identifier - 1)
    missing = [i for i in range(n) if i + 1 not in seen]
    return order + missing, Repairs(out_of_range=out_of_range, duplicates=duplicates, missing=len(missing))


def extract_ids(answer: str) -> list[int]:
    """Identifiers in an answer: the bracketed ``[k]`` ones, or bare integers if none is bracketed."""
    bracketed = _BRACKETED_ID.findall(answer)
    return [int(x) for x in (bracketed or _BARE_ID.findall(answer))]


def _split(text: str) -> tuple[str | None, str | None, bool]:
    """(reasoning text, answer text, strict reasoning format held) from a raw completion."""
    strict = ANSWER_PATTERN.search(text)
    if strict:
        return strict.group(1).strip(), strict.group(2), True
    think: str | None = None
    if "<think>" in text:
        after = text.split("<think>", 1)[1]
        think = after.split("</think>", 1)[0].split("<answer>", 1)[0].strip()
    if "<answer>" in text:
        answer = text.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
        return think, answer, False
    if "</think>" in text:
        return think, text.rsplit("</think>", 1)[1], False
    if "<think>" in text:
        return think, None, False  # generation never left the think block
    return None, text, False


def parse_answer(text: str, n: int, *, reasoning: bool = True) -> ParsedAnswer:
    """Parse a completion for a window of `n` passages and repair it into a permutation.

    Reasoning mode expects ``<think>…</think><answer>…</answer>``; without it the parser falls
    back to the text after ``<answer>``, then after ``</think>``, then the whole text (a model
    that ignored the tags), and finally to the input order (``no_answer``). Fast mode reads the
    ``<answer>`` block or a bare ``[2] > [1]`` ranking.
    """
    think, answer, strict = _split(text or "")
    ids = extract_ids(answer) if answer is not None else []
    order, repairs = repair_order(ids, n)
    if not ids:
        repairs = Repairs(repairs.out_of_range, repairs.duplicates, repairs.missing, no_answer=1)
    return ParsedAnswer(order, ids, think, strict if reasoning else bool(ids), repairs)


# ----------------------------------------------------------------------------------------------
# Relevance judgment (synthesis without qrels: the labeller first picks the positives)
# ----------------------------------------------------------------------------------------------

JUDGE_PROMPT_VERSION = "relevance-judgment-1"
"""Version of the judgment prompt below; synthesis records it next to :data:`PROMPT_VERSION`."""

SYSTEM_PROMPT_JUDGE = (
    "You are RankLLM, an intelligent assistant that can judge the relevance of passages to a query. "
    "Given a query and a passage list, you first think about the reasoning process in the mind and then "
    "provide the answer (i.e., the identifiers of the relevant passages). The reasoning process and answer "
    "are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
_JUDGE_PREFIX = (
    "I will provide you with {n} passages, each indicated by a numerical identifier []. "
    "Identify the passages that are relevant to the search query: {query}.\n"
)
_JUDGE_SUFFIX = (
    "Search Query: {query}.\n"
    "List the identifiers of all passages above that are relevant to the search query, separated by "
    "commas, e.g., [2], [5]. If no passage is relevant, answer with an empty list []."
)


def build_judgment_messages(
    query: str, passages: Sequence[Passage], truncate: Callable[[str], str] | None = None
) -> list[dict[str, str]]:
    """Chat messages asking which passages of a list are relevant (no ranking, no positives shown)."""
    query = replace_brackets(" ".join(query.split()))
    n = len(passages)
    lines = [_JUDGE_PREFIX.format(n=n, query=query)]
    lines += [f"[{i}] {format_passage(p, truncate)}" for i, p in enumerate(passages, start=1)]
    user = "\n".join(lines) + "\n" + _JUDGE_SUFFIX.format(n=n, query=query)
    return [{"role": "system", "content": SYSTEM_PROMPT_JUDGE}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class JudgedAnswer:
    relevant: list[int]
    """0-based positions judged relevant, in the order first named, without repeats."""
    reasoning: str | None
    format_ok: bool
    answered: bool
    """An answer block (or bare text) was found; ``[]`` is an answer, a cut-off think block is not."""
    out_of_range: int = 0


def parse_judgment(text: str, n: int) -> JudgedAnswer:
    """Parse a relevance judgment for `n` passages; identifiers out of range are dropped and counted."""
    think, answer, strict = _split(text or "")
    relevant: list[int] = []
    out_of_range = 0
    for identifier in extract_ids(answer) if answer is not None else []:
        if not 1 <= identifier <= n:
            out_of_range += 1
        elif identifier - 1 not in relevant:
            relevant.append(identifier - 1)
    return JudgedAnswer(relevant, think, strict, answer is not None, out_of_range)
