"""Any generation backend as a batched listwise window ranker.

Builds ReasonRank's prompt for each window (passages cut by tokens of the model's own tokenizer
when one is at hand), generates all windows of a batch in one backend call, and parses and
repairs every answer through :mod:`rrdistill.prompts`. The result plugs into
:func:`rrdistill.window.sliding_window`, so the same code labels data, reranks top-100 lists
and evaluates a checkpoint during training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rrdistill.distill.backends import GenerationBackend, GenerationResult, Messages, SamplingParams
from rrdistill.prompts import Repairs, TokenTruncator, build_messages, parse_answer
from rrdistill.types import Request
from rrdistill.window import WindowOutput


@dataclass
class RankerStats:
    """Running totals over every window ranked, for job summaries."""

    windows: int = 0
    failed: int = 0
    """Windows whose generation failed (server errors after retries); they keep their input order."""
    format_ok: int = 0
    repaired: int = 0
    """Windows whose answer needed any repair (a failed generation counts here too)."""
    repairs: Repairs = field(default_factory=Repairs)
    generated_tokens: list[int] = field(default_factory=list)
    """Tokens generated per window, for the windows whose count the backend reported."""
    errors: list[str] = field(default_factory=list)

    def add(self, result: GenerationResult, output: WindowOutput, format_ok: bool) -> None:
        self.windows += 1
        if not result.ok:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(result.error or "no text")
        self.format_ok += int(format_ok)
        self.repaired += int(output.repairs.any)
        self.repairs = self.repairs + output.repairs
        if output.generated_tokens is not None:
            self.generated_tokens.append(output.generated_tokens)

    @property
    def mean_generated_tokens(self) -> float | None:
        return sum(self.generated_tokens) / len(self.generated_tokens) if self.generated_tokens else None

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "failed": self.failed,
            "format_ok": self.format_ok,
            "repaired": self.repaired,
            "repairs": self.repairs.to_dict(),
            "mean_generated_tokens": self.mean_generated_tokens,
            "windows_with_token_counts": len(self.generated_tokens),
        }


class GenerativeRanker:
    """``rank_windows(windows) -> [WindowOutput]`` over a :class:`GenerationBackend`.

    `tokenizer` (a transformers tokenizer; defaults to the backend's own, if it has one) makes
    passage truncation count the model's tokens; without it passages are cut by words.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        sampling: SamplingParams | None = None,
        *,
        reasoning: bool = True,
        max_passage_tokens: int | None = 512,
        tokenizer: Any = None,
    ) -> None:
        self.backend = backend
        self.sampling = sampling or SamplingParams()
        self.reasoning = reasoning
        self.tokenizer = tokenizer if tokenizer is not None else getattr(backend, "tokenizer", None)
        self.truncator = (
            TokenTruncator(max_passage_tokens, self.tokenizer) if max_passage_tokens is not None else None
        )
        self.stats = RankerStats()

    def messages(self, window: Request) -> Messages:
        passages = [c.passage for c in window.candidates]
        return build_messages(window.query.text, passages, reasoning=self.reasoning, truncate=self.truncator)

    def _count_tokens(self, result: GenerationResult) -> int | None:
        if result.completion_tokens is not None:
            return result.completion_tokens
        if result.text is not None and self.tokenizer is not None and hasattr(self.tokenizer, "encode"):
            return len(self.tokenizer.encode(result.text, add_special_tokens=False))
        return None

    def output(self, window: Request, result: GenerationResult) -> WindowOutput:
        """Parse and repair one generation into the window's order (input order when it failed)."""
        parsed = parse_answer(result.text or "", len(window.candidates), reasoning=self.reasoning)
        output = WindowOutput(
            order=parsed.order,
            text=result.text,
            reasoning=parsed.reasoning,
            repairs=parsed.repairs,
            generated_tokens=self._count_tokens(result),
        )
        self.stats.add(result, output, parsed.format_ok and result.ok)
        return output

    def __call__(self, windows: list[Request]) -> list[WindowOutput]:
        results = self.backend.generate([self.messages(w) for w in windows], self.sampling)
        if len(results) != len(windows):
            raise RuntimeError(f"the backend returned {len(results)} results for {len(windows)} prompts")
        return [self.output(w, r) for w, r in zip(windows, results, strict=True)]
