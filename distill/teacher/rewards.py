"""ReasonRank's multi-view ranking reward for GRPO, as a pure function plus a trl adapter.

``ranking_reward`` scores one completion for one window of `n` passages:

- −1 when the strict format of the prompt's mode does not hold: ``<think>…</think>\\s*<answer>…</answer>``
  for the reasoning prompt, a lone ``<answer>…</answer>`` (no think block) for the fast prompt;
- 0 when the answer's identifiers are not exactly a permutation of 1..n (no repair here: the
  reward must teach complete, duplicate-free lists);
- else ``NDCG@10 + 0.2·Recall@10 + 0.1·RBO(pred, reference)``, with NDCG/Recall of the predicted
  order over the window against the relevant identifiers and RBO against the labeller's list.

RBO's persistence `rbo_p` defaults to 1.0 (the unweighted average overlap of the ``rbo``
package's default, which ReasonRank's reward uses); smaller values weight the top more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from rrdistill.metrics import ndcg_at_k, rbo, recall_at_k
from rrdistill.prompts import parse_answer

FORMAT_PENALTY = -1.0
INVALID_PERMUTATION = 0.0
NDCG_WEIGHT, RECALL_WEIGHT, RBO_WEIGHT = 1.0, 0.2, 0.1
CUTOFF = 10
FAST_ANSWER_PATTERN = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.DOTALL)
"""The fast mode's strict format: the answer block and nothing else (a think block is a format error)."""


def strict_format(completion: str, reasoning: bool) -> bool:
    """Whether `completion` has exactly the format the prompt of that mode asks for."""
    if reasoning:
        return parse_answer(completion, 1, reasoning=True).format_ok
    return FAST_ANSWER_PATTERN.fullmatch(completion) is not None and "<think>" not in completion


def ranking_reward(
    completion: str,
    n: int,
    relevant: set[int],
    reference: list[int],
    rbo_p: float = 1.0,
    reasoning: bool = True,
) -> float:
    """The reward of one completion; identifiers are 1-based, as in the prompt.

    `reasoning` is the mode of the prompt the completion answers: a fast-mode prompt asks for no
    think block, so judging it by the reasoning format would give −1 to every correct answer.
    """
    if not strict_format(completion, reasoning):
        return FORMAT_PENALTY
    parsed = parse_answer(completion, n, reasoning=reasoning)
    if len(parsed.ids) != n or set(parsed.ids) != set(range(1, n + 1)):
        return INVALID_PERMUTATION
    ranked = [str(i) for i in parsed.ids]
    judgments = {str(i): 1 for i in relevant}
    ndcg = ndcg_at_k(ranked, judgments, CUTOFF)
    recall = recall_at_k(ranked, judgments, CUTOFF)
    overlap = rbo(parsed.ids, list(reference), p=rbo_p)
    return NDCG_WEIGHT * ndcg + RECALL_WEIGHT * recall + RBO_WEIGHT * overlap


def completion_text(completion: Any) -> str:
    """trl passes plain strings for text prompts and ``[{"role": "assistant", "content": …}]`` for chats."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(
            m.get("content") or "" for m in completion if isinstance(m, dict) and m.get("role") == "assistant"
        )
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


class RankingReward:
    """trl reward function ``f(prompts, completions, **columns) -> list[float]``.

    Reads the dataset columns ``n`` (window size), ``relevant`` (1-based relevant identifiers),
    ``reference`` (the labeller's order, 1-based) and, when present, ``reasoning`` (the prompt's
    mode, per row; without the column every row is judged in the mode given to the constructor). A class rather than a closure so that
    `rbo_p` is set once and the function has the ``__name__`` trl logs it under.
    """

    __name__ = "ranking_reward"

    def __init__(self, rbo_p: float = 1.0, reasoning: bool = True) -> None:
        if not 0 < rbo_p <= 1:
            raise ValueError("rbo_p must be in (0, 1]")
        self.rbo_p = rbo_p
        self.reasoning = reasoning

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        *,
        n: Sequence[int],
        relevant: Sequence[Iterable[int]],
        reference: Sequence[Sequence[int]],
        reasoning: Sequence[bool] | None = None,
        **_: Any,
    ) -> list[float]:
        if not len(completions) == len(n) == len(relevant) == len(reference):
            raise ValueError("completions and the n/relevant/reference columns must have the same length")
        modes = [self.reasoning] * len(completions) if reasoning is None else [bool(m) for m in reasoning]
        if len(modes) != len(completions):
            raise ValueError("the reasoning column must be as long as the completions")
        return [
            ranking_reward(completion_text(c), int(k), set(rel), list(ref), self.rbo_p, mode)
            for c, k, rel, ref, mode in zip(completions, n, relevant, reference, modes, strict=True)
        ]
