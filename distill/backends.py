"""Text generation behind one small interface: chat messages in, texts out.

Two backends cover how a teacher is run:

- :class:`TransformersBackend` — the model in this process (CPU or GPU), batched with left
  padding and the tokenizer's own chat template. For small models, tests and training-time
  evaluation.
- :class:`OpenAIBackend` — any server that speaks the OpenAI ``/v1/chat/completions`` protocol:
  ``vllm serve`` (tensor/data parallel, how a 7B/32B teacher runs at scale), SGLang, TGI,
  ``transformers serve`` or a hosted API. Requests run concurrently under a bound; 429, 5xx,
  timeouts and dropped connections are retried with exponential backoff; a request that still
  fails comes back as a failed :class:`GenerationResult` carrying the error — never dropped.

Both implement ``agenerate`` (async) and ``generate`` (sync); results are aligned with the input.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rrdistill.extras import require

Messages = list[dict[str, str]]
"""One chat: ``[{"role": "system", "content": …}, {"role": "user", "content": …}]``."""


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 2048
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be ≥ 1")
        if self.temperature < 0:
            raise ValueError("temperature must be ≥ 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass
class GenerationResult:
    """One completion, or the reason there is none."""

    text: str | None
    error: str | None = None
    completion_tokens: int | None = None
    """Tokens generated, when the backend knows (in-process always; servers that report usage)."""
    finish_reason: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    @classmethod
    def failed(cls, error: str, attempts: int = 1, seconds: float = 0.0) -> GenerationResult:
        return cls(text=None, error=error, attempts=attempts, seconds=seconds)


@runtime_checkable
class GenerationBackend(Protocol):
    model_name: str
    """What produced the text, for provenance."""

    async def agenerate(
        self, batch: Sequence[Messages], params: SamplingParams
    ) -> list[GenerationResult]: ...

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]: ...


def run_sync(coroutine_factory: Callable[[], Any]) -> Any:
    """Run a coroutine from sync code, also when the caller already sits in an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


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
            tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(path)
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
# Over HTTP: the OpenAI-compatible chat completions protocol
# ----------------------------------------------------------------------------------------------

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    """Attempts per request, the first included."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    """Each wait is drawn from [(1 - jitter)·d, d], so many clients do not retry in lockstep."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be ≥ 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); honours Retry-After."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        wait = base * (1 - self.jitter * random.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.backoff_max))
        return wait


def chat_completions_url(base_url: str) -> str:
    """``http://host:8000``, ``…/v1`` or the full endpoint → the chat completions endpoint."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _join_reasoning(content: str | None, reasoning: str | None) -> str:
    """Servers with a reasoning parser (vLLM ``--reasoning-parser``) split the think block off
    into ``reasoning_content``; put it back so the prompt's ``<think>…</think>`` format holds."""
    content = content or ""
    if reasoning and "<think>" not in content:
        return f"<think>{reasoning}</think>{content}"
    return content


def _parse_json_completion(body: dict[str, Any]) -> tuple[str, int | None, str | None]:
    if "error" in body:
        raise _Retryable(f"server error: {body['error']}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _Fatal(f"response has no choices: {json.dumps(body)[:300]}")
    message = choices[0].get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    usage = body.get("usage") or {}
    tokens = usage.get("completion_tokens")
    return _join_reasoning(message.get("content"), reasoning), tokens, choices[0].get("finish_reason")


def _parse_event_stream(text: str) -> tuple[str, int | None, str | None]:
    """Server-sent events (``data: {chunk}``): servers such as ``transformers serve`` always stream."""
    content: list[str] = []
    reasoning: list[str] = []
    tokens: int | None = None
    finish: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise _Retryable(f"unreadable stream chunk: {data[:200]}") from None
        if "error" in chunk:
            raise _Retryable(f"server error mid-stream: {chunk['error']}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
            finish = choice.get("finish_reason") or finish
        usage = chunk.get("usage") or {}
        tokens = usage.get("completion_tokens", tokens)
    return _join_reasoning("".join(content), "".join(reasoning) or None), tokens, finish


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server, concurrent and retried.

    `model` is the name the server serves (``vllm serve NAME`` / ``--served-model-name``; a
    local checkpoint path for ``transformers serve``). The API key defaults to
    ``$OPENAI_API_KEY`` (servers on your own machines usually need none).
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
        self.httpx = require("httpx", "train", "the OpenAI-compatible backend")
        if concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")
        self.url = chat_completions_url(base_url)
        self.model_name = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.extra_body = dict(extra_body or {})

    def _payload(self, messages: Messages, params: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": list(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": False,
        }
        if params.seed is not None:
            payload["seed"] = params.seed
        payload.update(self.extra_body)
        return payload

    async def _attempt(self, client: Any, payload: dict[str, Any]) -> tuple[str, int | None, str | None]:
        httpx = self.httpx
        try:
            response = await client.post(self.url, json=payload)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {exc})") from None
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(
                f"HTTP {response.status_code}: {response.text[:300]}", _retry_after(response.headers)
            )
        if response.status_code >= 400:
            raise _Fatal(f"HTTP {response.status_code}: {response.text[:300]}")
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return _parse_event_stream(response.text)
        try:
            body = response.json()
        except json.JSONDecodeError:
            raise _Retryable(f"response is not JSON: {response.text[:200]}") from None
        return _parse_json_completion(body)

    async def _one(
        self, client: Any, semaphore: asyncio.Semaphore, messages: Messages, params: SamplingParams
    ) -> GenerationResult:
        payload = self._payload(messages, params)
        started = time.perf_counter()
        attempt = 0
        async with semaphore:
            while True:
                attempt += 1
                try:
                    text, tokens, finish = await self._attempt(client, payload)
                except _Fatal as exc:
                    return GenerationResult.failed(str(exc), attempt, time.perf_counter() - started)
                except _Retryable as exc:
                    if attempt >= self.retry.max_attempts:
                        return GenerationResult.failed(
                            f"gave up after {attempt} attempts; last error: {exc}",
                            attempt,
                            time.perf_counter() - started,
                        )
                    await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
                    continue
                return GenerationResult(
                    text=text,
                    completion_tokens=tokens,
                    finish_reason=finish,
                    attempts=attempt,
                    seconds=time.perf_counter() - started,
                )

    async def agenerate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        if not batch:
            return []
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = self.httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        semaphore = asyncio.Semaphore(self.concurrency)
        async with self.httpx.AsyncClient(
            timeout=self.httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)),
            headers=headers,
            limits=limits,
        ) as client:
            return list(await asyncio.gather(*(self._one(client, semaphore, m, params) for m in batch)))

    def generate(self, batch: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        return run_sync(lambda: self.agenerate(batch, params))


# ----------------------------------------------------------------------------------------------
# Picking a backend from a command-line argument
# ----------------------------------------------------------------------------------------------


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """A transformers tokenizer, to cut passages by a served model's own tokens."""
    transformers = require("transformers", "train", "loading a tokenizer")
    return transformers.AutoTokenizer.from_pretrained(str(path))


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


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
