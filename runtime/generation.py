"""Batched decoding with a KV cache over an ONNX causal LM, in numpy: no torch, no genai runtime.

The model is a decoder exported by Optimum with ``text-generation-with-past``: inputs
``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key/value``;
outputs ``logits`` and ``present.{i}.key/value``. Prompts are left-padded into one batch, the
prompt is run once (prefill) and then one token per step reuses the cache, so a window of 20
passages costs one long forward pass plus one short pass per generated token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


@dataclass
class Generation:
    token_ids: list[int]
    finished: bool
    """True when an end-of-sequence token or the stop predicate ended it (False: max_new_tokens hit)."""


class OnnxCausalLM:
    """Greedy or sampled generation with an exported decoder and its KV cache."""

    def __init__(
        self, session: ort.InferenceSession, eos_token_ids: Sequence[int], pad_token_id: int
    ) -> None:
        self.session = session
        self.eos = set(int(t) for t in eos_token_ids)
        self.pad = int(pad_token_id)
        inputs = {i.name: i for i in session.get_inputs()}
        self._past_names = [name for name in inputs if name.startswith("past_key_values.")]
        if not self._past_names or "position_ids" not in inputs:
            raise ValueError(
                "the ONNX decoder must be exported with its KV cache (text-generation-with-past)"
            )
        shape = inputs[self._past_names[0]].shape
        self._kv_heads, self._head_dim = int(shape[1]), int(shape[3])
        self._kv_dtype = np.float16 if "float16" in inputs[self._past_names[0]].type else np.float32
        self._present_names = [o.name for o in session.get_outputs()][1:]

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
            for name in self._past_names
        }

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
        return ids, mask

    def next_token_logits(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits of the token after each prompt: one forward pass, no generation (FIRST ranking)."""
        ids, mask = self._left_pad(prompts)
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        feeds = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            **self._empty_past(len(prompts)),
        }
        logits = self.session.run(["logits"], feeds)[0]
        return np.asarray(logits[:, -1, :], dtype=np.float32)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        stop: Callable[[list[int]], bool] | None = None,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[Generation]:
        """Continue every prompt; greedy when `temperature` is 0 (deterministic).

        A row ends at an end-of-sequence token or when `stop` (called with the row's generated tokens after each step) says so — a stop
        *string* needs the predicate, since a byte-level BPE may spell it with other tokens in
        context (``" </answer>"`` is not ``"</answer>"`` preceded by a space token).
        """
        if not prompts:
            return []
        rng = np.random.default_rng(seed)
        ids, mask = self._left_pad(prompts)
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        past = self._empty_past(len(prompts))
        outputs: list[list[int]] = [[] for _ in prompts]
        finished = np.zeros(len(prompts), dtype=bool)
        for _ in range(max_new_tokens):
            feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
            result = self.session.run(None, feeds)
            logits = np.asarray(result[0][:, -1, :], dtype=np.float32)
            chosen = self._choose(logits, temperature, rng)
            for row, token in enumerate(chosen):
                if finished[row]:
                    continue
                outputs[row].append(int(token))
                if int(token) in self.eos or (stop is not None and stop(outputs[row])):
                    finished[row] = True
            if finished.all():
                break
            past = {
                name.replace("present", "past_key_values"): value
                for name, value in zip(self._present_names, result[1:], strict=True)
            }
            ids = np.where(finished, self.pad, chosen)[:, None].astype(np.int64)
            positions = positions[:, -1:] + 1
            mask = np.concatenate([mask, (~finished)[:, None].astype(np.int64)], axis=1)
        return [Generation(tokens, bool(done)) for tokens, done in zip(outputs, finished, strict=True)]

    @staticmethod
    def _choose(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
        if temperature <= 0:
            return logits.argmax(axis=-1)
        scaled = logits / temperature
        scaled -= scaled.max(axis=-1, keepdims=True)
        probs = np.exp(scaled)
        probs /= probs.sum(axis=-1, keepdims=True)
        return np.array([rng.choice(len(p), p=p) for p in probs])
