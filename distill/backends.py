"""Text generation behind one small interface: chat messages in, texts out.

Two backends cover how a teacher is run:

- :class:`TransformersBackend` — the model in this process (CPU or GPU), batched with left
  padding and the tokenizer's own chat template. For small models, tests and training-time
  evaluation.
- :class:`OpenAIBackend` — any server that speaks the OpenAI ``/v1/chat/completions`` protocol:
  ``vllm serve`` (tensor/data parallel, how a 7B/32B teacher runs at scale), SGLang, TGI,
  ``transformers serve`` or a hosted API. An adapter over :mod:`rrdistill.chat`, the one
  torch-free client the runtime shares: requests run concurrently under a bound; 408/409/425/
  429/5xx, timeouts and dropped connections are retried with exponential backoff (honouring
  ``Retry-After``); a request that still fails comes back as a failed
  :class:`GenerationResult` carrying the error — never dropped.

``SamplingParams``, ``GenerationResult``, ``RetryPolicy``, ``Messages`` and ``is_url`` live in
:mod:`rrdistill.chat` and are re-exported here for the callers that import them from this module.

Both implement ``agenerate`` (async) and ``generate`` (sync); results are aligned with the input.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rrdistill.chat import (
    RETRYABLE_STATUS,
    ChatClient,
    GenerationResult,
    Messages,
    RetryPolicy,
    SamplingParams,
    chat_completions_url,
    is_url,
)
from rrdistill.extras import require
from rrdistill.hf_tokenizers import open_tokenizer

__all__ = [
    "RETRYABLE_STATUS",
    "GenerationBackend",
    "GenerationResult",
    "Messages",
    "OpenAIBackend",
    "RetryPolicy",
    "SamplingParams",
    "TransformersBackend",
    "chat_completions_url",
    "is_url",
    "load_tokenizer",
    "open_backend",
]


@runtime_checkable
class GenerationBackend(Protocol):
    model_name: str
    """What produced the text, for provenance."""

    async def agenerate(
        self, batch: Sequence[Messages], params: SamplingParams
    ) -> list[GenerationResult]: ...

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]: ...


# ----------------------------------------------------------------------------------------------
# In-process: transformers
# ----------------------------------------------------------------------------------------------


class TransformersBackend:
    """A causal LM in this process; prompts are length-sorted into left-padded batches.

    Accepts a checkpoint directory (or hub name, when a hub is reachable) or an already loaded
    ``(model, tokenizer)`` pair, so training can evaluate the model it holds without a reload.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
    ) -> None:
        torch = require("torch", "train", "the transformers backend")
        transformers = require("transformers", "train", "the transformers backend")
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        self.batch_size = batch_size
        if isinstance(model, str | os.PathLike):
            path = str(model)
            self.model_name = path
            tokenizer = tokenizer or open_tokenizer(path)
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
            model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = model.to(device)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with a loaded model")
            self.model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            if device is not None:
                model = model.to(device)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{self.model_name}: the tokenizer has no chat template")
        self.model = model
        self.tokenizer = tokenizer
        self._torch = torch
        self._pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        if self._pad_id is None:
            raise ValueError(f"{self.model_name}: the tokenizer has neither a pad nor an eos token")
        stops = model.generation_config.eos_token_id
        stops = [stops] if isinstance(stops, int) else list(stops or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
            stops.append(tokenizer.eos_token_id)
        self._stop_ids = set(stops)

    async def agenerate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        return await asyncio.to_thread(self.generate, batch, params)

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        if not batch:
            return []
        prompts = [
            self.tokenizer.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True)
            for m in batch
        ]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(prompts)), key=lambda i: lengths[i], reverse=True)
        results: list[GenerationResult | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, result in zip(
                chunk, self._generate_chunk([prompts[i] for i in chunk], params), strict=True
            ):
                results[i] = result
        return [r for r in results if r is not None]

    def _generate_chunk(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        torch = self._torch
        started = time.perf_counter()
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = previous_side
        inputs = {
            k: v.to(self.model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")
        }
        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sampling,
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._stop_ids),
        }
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
        finally:
            self.model.train(was_training)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        seconds = (time.perf_counter() - started) / len(prompts)
        results = []
        for row in new_tokens:
            stop_at = next((j for j, t in enumerate(row) if t in self._stop_ids), None)
            generated = row if stop_at is None else row[: stop_at + 1]
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            results.append(
                GenerationResult(
                    text=text,
                    completion_tokens=len(generated),
                    finish_reason="length" if stop_at is None else "stop",
                    seconds=seconds,
                )
            )
        return results


# ----------------------------------------------------------------------------------------------
# Over HTTP: the OpenAI-compatible chat completions protocol (the client lives in the core)
# ----------------------------------------------------------------------------------------------


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server, concurrent and retried.

    A thin adapter: :class:`rrdistill.chat.ChatClient` does the work (the runtime uses the same
    client), this class gives it the :class:`GenerationBackend` shape. `model` is the name the
    server serves (``vllm serve NAME`` / ``--served-model-name``; a local checkpoint path for
    ``transformers serve``). The API key defaults to ``$OPENAI_API_KEY``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 600.0,
        retry: RetryPolicy | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.client = ChatClient(
            base_url,
            model,
            api_key=api_key,
            concurrency=concurrency,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            extra_body=dict(extra_body or {}),
        )
        self.model_name = model
        self.url = self.client.url

    async def agenerate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        return await self.client.acomplete_many(batch, params)

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        return self.client.complete_many(batch, params)


# ----------------------------------------------------------------------------------------------
# Picking a backend from a command-line argument
# ----------------------------------------------------------------------------------------------


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """A transformers tokenizer, to cut passages by a served model's own tokens."""
    return open_tokenizer(path)


def open_backend(
    target: str | os.PathLike[str],
    *,
    model: str | None = None,
    batch_size: int = 8,
    concurrency: int = 16,
    device: str | None = None,
    timeout: float = 600.0,
    retry: RetryPolicy | None = None,
) -> GenerationBackend:
    """A URL → :class:`OpenAIBackend` (`model` names the served model); a directory →
    :class:`TransformersBackend`."""
    text = str(target)
    if is_url(text):
        if not model:
            raise ValueError(
                f"{text}: name the served model (--model) to talk to an OpenAI-compatible server"
            )
        return OpenAIBackend(text, model, concurrency=concurrency, timeout=timeout, retry=retry)
    if not Path(text).is_dir():
        raise FileNotFoundError(f"{text}: not a checkpoint directory (or an http(s):// server URL)")
    return TransformersBackend(text, batch_size=batch_size, device=device)
