"""Teacher samples → the rows trl trains on (SFT chats, GRPO prompts with reward columns).

Every prompt is built by :func:`rrdistill.prompts.build_messages` with passages cut by the
model's own tokenizer, so training, evaluation and inference see exactly the same text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rrdistill.distill.teacher.samples import TeacherSample
from rrdistill.prompts import build_messages, format_answer


@dataclass
class Splits:
    train: list[TeacherSample]
    heldout: list[TeacherSample]


def split_heldout(samples: Sequence[TeacherSample], heldout: int) -> Splits:
    """Hold out `heldout` samples chosen by a hash of their qid: stable across runs and machines,
    and independent of file order (a resumed run evaluates the same windows)."""
    ranked = sorted(samples, key=lambda s: hashlib.sha256(f"{s.dataset}/{s.qid}".encode()).hexdigest())
    held = {id(s) for s in ranked[: min(heldout, max(len(samples) - 1, 0))]}
    return Splits([s for s in samples if id(s) not in held], [s for s in samples if id(s) in held])


def prompt_messages(
    sample: TeacherSample, truncate: Callable[[str], str] | None, reasoning: bool = True
) -> list[dict[str, str]]:
    passages = [c.passage for c in sample.request.candidates]
    return build_messages(sample.request.query.text, passages, reasoning=reasoning, truncate=truncate)


def target_text(sample: TeacherSample, reasoning: bool = True) -> str:
    """The assistant turn: ``<think>reasoning</think>\\n<answer>[i] > …</answer>``.

    A sample without reasoning still gets the (empty) think block in reasoning mode, so the
    strict format the reward checks is the one the model learns.
    """
    return format_answer(sample.final_order, (sample.reasoning or "") if reasoning else None)


def sft_rows(
    samples: Sequence[TeacherSample], truncate: Callable[[str], str] | None, reasoning: bool = True
) -> list[dict[str, Any]]:
    """Conversational rows (``messages``) for trl's SFTTrainer with assistant-only loss."""
    return [
        {
            "messages": [
                *prompt_messages(s, truncate, reasoning),
                {"role": "assistant", "content": target_text(s, reasoning)},
            ]
        }
        for s in samples
    ]


def grpo_rows(
    samples: Sequence[TeacherSample], truncate: Callable[[str], str] | None, reasoning: bool = True
) -> list[dict[str, Any]]:
    """Prompt rows for trl's GRPOTrainer; ``n``/``relevant``/``reference`` (1-based) and the prompt's
    mode (``reasoning``) feed the reward."""
    return [
        {
            "prompt": prompt_messages(s, truncate, reasoning),
            "n": len(s.initial_list),
            "relevant": [p + 1 for p in s.relevant_positions],
            "reference": [p + 1 for p in s.final_order],
            "reasoning": reasoning,
            "qid": s.qid,
        }
        for s in samples
    ]
