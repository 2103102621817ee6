"""A deterministic labeller for tests: a real GenerationBackend whose answers follow from the prompt.

It reads the passages back out of ReasonRank's prompt and ranks those whose text contains
``GOOD`` first; a query containing ``CONTRARIAN`` gets them last, ``FAIL`` a failed generation,
``MUMBLE`` an answer without identifiers, ``NOTHINK`` no think block and ``REPEAT`` a duplicated
identifier. Judgment prompts get the GOOD passages' identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rrdistill.distill.backends import GenerationResult, Messages, SamplingParams
from rrdistill.prompts import SYSTEM_PROMPT_JUDGE, format_ranking

_LINE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


class ScriptedLabeller:
    model_name = "scripted-labeller"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[int] = []
        self.judge_prompts = 0
        self.fail_on_call = fail_on_call

    def answer(self, messages: Messages) -> GenerationResult:
        system, user = messages[0]["content"], messages[-1]["content"]
        passages = [text for _, text in _LINE.findall(user)]
        query = user.split("search query: ", 1)[1].split("\n", 1)[0]
        good = [i for i, text in enumerate(passages) if "GOOD" in text]
        if system == SYSTEM_PROMPT_JUDGE:
            self.judge_prompts += 1
            ids = ", ".join(f"[{i + 1}]" for i in good)
            return GenerationResult(
                text=f"<think>checking</think><answer>{ids}</answer>", completion_tokens=5
            )
        if "FAIL" in query:
            return GenerationResult.failed("HTTP 503: unavailable", attempts=3)
        if "MUMBLE" in query:
            return GenerationResult(
                text="<think>hmm</think><answer>I cannot tell</answer>", completion_tokens=7
            )
        rest = [i for i in range(len(passages)) if i not in good]
        order = rest + good if "CONTRARIAN" in query else good + rest
        answer = format_ranking(order)
        if "REPEAT" in query:
            answer = format_ranking([order[0], order[0], *order[1:-1]])
        if "NOTHINK" in query:
            return GenerationResult(text=f"<answer>{answer}</answer>", completion_tokens=9)
        return GenerationResult(
            text=f"<think>passages {good} mention the claim</think>\n<answer>{answer}</answer>",
            completion_tokens=11,
        )

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        self.calls.append(len(batch))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("labeller crashed")
        return [self.answer(m) for m in batch]

    async def agenerate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        return self.generate(batch, params)
