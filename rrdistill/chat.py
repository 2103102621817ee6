"""The one OpenAI-compatible chat client: ``/v1/chat/completions`` over the standard library.

Distillation (teacher synthesis, labelling) and the lean runtime (a listwise model behind a URL)
talk to the same servers — ``vllm serve``, SGLang, TGI, llama.cpp's server, ``transformers
serve`` or a hosted API — so they share this client instead of each keeping a copy that drifts.
It needs nothing beyond the standard library (urllib + threads), so the runtime's base install
(numpy, onnxruntime, tokenizers) can use it without httpx, torch or transformers.

What it owns:

- **URLs** — :func:`is_url` is the project's one test for "this argument is a server, not a
  path"; :func:`chat_completions_url` turns ``http://host:8000``, ``…/v1`` or the full endpoint
  into the endpoint (never ``/v1/v1``).
- **Retries** — 408/409/425/429/5xx, dropped connections and timeouts are retried with
  exponential backoff and jitter; a ``Retry-After`` header (seconds or an HTTP-date) sets the
  least wait. Other 4xx (a prompt over the context length, a wrong model name) fail at once.
- **Responses** — JSON or server-sent events (``text/event-stream``; some servers always
  stream). A reasoning parser's ``reasoning_content`` / ``reasoning`` is put back in front of
  the content as ``<think>…</think>``, so ReasonRank's output format — and the explanation —
  survives ``vllm serve --reasoning-parser``. Usage and ``finish_reason`` are kept.
- **Batches** — requests run concurrently under a bound; each comes back as a
  :class:`GenerationResult`, a failure carrying its error: nothing is dropped and one bad
  request never raises for the batch.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RETRYABLE_STATUS",
    "ChatClient",
    "GenerationResult",
    "Messages",
    "RetryPolicy",
    "SamplingParams",
    "chat_completions_url",
    "is_url",
    "join_reasoning",
    "parse_retry_after",
    "server_context_length",
]

Messages = list[dict[str, str]]
"""One chat: ``[{"role": "system", "content": …}, {"role": "user", "content": …}]``."""

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, *range(500, 600)})
"""Statuses worth another attempt: timeouts, conflicts, too early, rate limits, server errors."""


# ----------------------------------------------------------------------------------------------
# URLs
# ----------------------------------------------------------------------------------------------


def is_url(target: str | os.PathLike[str]) -> bool:
    """True for an ``http(s)://host…`` server address, False for a path (a checkpoint, a bundle).

    The one place the project decides between "talk to a server" and "open a file": anything
    else (``"://"`` tests, ``startswith("http")``) would call ``http_cache/`` a URL.
    """
    if not isinstance(target, str):
        return False
    parts = urllib.parse.urlsplit(target.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def chat_completions_url(base_url: str) -> str:
    """``http://host:8000``, ``…/v1`` or the full endpoint → the chat completions endpoint."""
    if not is_url(base_url):
        raise ValueError(f"{base_url!r} is not an http(s):// URL")
    url = base_url.strip().rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def server_root(base_url: str) -> str:
    """``http://host:8000/v1/chat/completions`` (or ``…/v1``) → ``http://host:8000``."""
    url = chat_completions_url(base_url).removesuffix("/chat/completions")
    return url.removesuffix("/v1")


def server_context_length(base_url: str, *, timeout: float = 10.0) -> int | None:
    """Tokens of context one request gets on the server, when it says (else None).

    vLLM and SGLang report ``max_model_len`` in ``/v1/models``; llama.cpp's server reports the
    per-slot ``n_ctx`` in ``/props`` (and in ``/v1/models`` metadata). A prompt over this length
    is refused by the server, so passage budgets are derived from it (see
    :func:`rrdistill.prompts.passage_budget`).
    """
    root = server_root(base_url)

    def get(path: str) -> Any:
        try:
            with urllib.request.urlopen(root + path, timeout=timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
            return None

    props = get("/props")
    if isinstance(props, dict):
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx
    listing = get("/v1/models")
    models = listing.get("data") if isinstance(listing, dict) else None
    for model in models if isinstance(models, list) else []:
        if not isinstance(model, dict):
            continue
        for value in (model.get("max_model_len"), (model.get("meta") or {}).get("n_ctx")):
            if isinstance(value, int) and value > 0:
                return value
    return None


# ----------------------------------------------------------------------------------------------
# Parameters and results
# ----------------------------------------------------------------------------------------------


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
    prompt_tokens: int | None = None
    """Prompt tokens, when the server reports usage."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    @classmethod
    def failed(cls, error: str, attempts: int = 1, seconds: float = 0.0) -> GenerationResult:
        return cls(text=None, error=error, attempts=attempts, seconds=seconds)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    """Attempts per request, the first included."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    """Each wait is drawn from [(1 - jitter)·d, d], so many clients do not retry in lockstep."""
    retry_after_max: float = 120.0
    """The longest ``Retry-After`` obeyed: a server asking for an hour must not park a job."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be ≥ 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")
        if self.backoff_initial < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("waits must be ≥ 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); honours Retry-After."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        wait = base * (1 - self.jitter * random.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max))
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header → seconds to wait: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is not a date
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def join_reasoning(content: str | None, reasoning: str | None) -> str:
    """Servers with a reasoning parser (vLLM ``--reasoning-parser``) split the think block off
    into ``reasoning_content``; put it back so the prompt's ``<think>…</think>`` format holds."""
    content = content or ""
    if reasoning and "<think>" not in content:
        return f"<think>{reasoning}</think>{content}"
    return content


# ----------------------------------------------------------------------------------------------
# Response parsing
# ----------------------------------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


@dataclass
class _Completion:
    text: str
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None


def _usage(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    usage = body.get("usage") or {}
    return usage.get("completion_tokens"), usage.get("prompt_tokens")


def _parse_json(body: Any) -> _Completion:
    if not isinstance(body, dict):
        raise _Fatal(f"response is not a JSON object: {json.dumps(body)[:300]}")
    if body.get("error"):
        raise _Retryable(f"server error: {body['error']}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _Fatal(f"response has no choices: {json.dumps(body)[:300]}")
    message = choices[0].get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    completion_tokens, prompt_tokens = _usage(body)
    return _Completion(
        join_reasoning(message.get("content"), reasoning),
        completion_tokens,
        prompt_tokens,
        choices[0].get("finish_reason"),
    )


def _events(text: str) -> list[str]:
    """The ``data`` of each server-sent event (data lines of one event joined by newlines)."""
    events: list[str] = []
    data: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if data:
                events.append("\n".join(data))
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append("\n".join(data))
    return events


def _parse_event_stream(text: str) -> _Completion:
    """Server-sent events (``data: {chunk}``): servers such as ``transformers serve`` always stream."""
    content: list[str] = []
    reasoning: list[str] = []
    out = _Completion("")
    for data in _events(text):
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise _Retryable(f"unreadable stream chunk: {data[:200]}") from None
        if chunk.get("error"):
            raise _Retryable(f"server error mid-stream: {chunk['error']}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
            out.finish_reason = choice.get("finish_reason") or out.finish_reason
        completion_tokens, prompt_tokens = _usage(chunk)
        out.completion_tokens = completion_tokens if completion_tokens is not None else out.completion_tokens
        out.prompt_tokens = prompt_tokens if prompt_tokens is not None else out.prompt_tokens
    out.text = join_reasoning("".join(content), "".join(reasoning) or None)
    return out


# ----------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------


@dataclass
class ChatClient:
    """Chat completions from an OpenAI-compatible server: concurrent, retried, never dropping.

    `model` is the name the server serves (``vllm serve NAME`` / ``--served-model-name``).
    The API key defaults to ``$OPENAI_API_KEY`` (servers on your own machines usually need
    none). `timeout` bounds each socket operation (connect, each read), not the whole
    generation. `concurrency` bounds requests in flight from this client, across all callers
    and threads. `sleep` is how backoff waits (tests pass a recorder).
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 16
    timeout: float = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Merged into every request body (e.g. ``{"chat_template_kwargs": {...}}`` for vLLM)."""
    sleep: Callable[[float], None] | None = None
    """Waits between attempts; None → :func:`time.sleep`, looked up at call time."""
    url: str = field(init=False)
    """The chat completions endpoint `base_url` names."""
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.url = chat_completions_url(self.base_url)
        if self.api_key is None:
            self.api_key = os.environ.get("OPENAI_API_KEY") or None
        self.extra_body = dict(self.extra_body)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._opener = urllib.request.build_opener()

    # -- one request -----------------------------------------------------------------------

    def payload(self, messages: Messages, params: SamplingParams) -> dict[str, Any]:
        """The request body: OpenAI's chat completions fields, then `extra_body` on top."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": False,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        body.update(self.extra_body)
        return body

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "User-Agent": "rrdistill",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _attempt(self, data: bytes) -> _Completion:
        request = urllib.request.Request(self.url, data=data, headers=self.headers(), method="POST")
        try:
            with self._slots, self._opener.open(request, timeout=self.timeout) as response:
                content_type = response.headers.get("Content-Type", "")
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read()[:300].decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                detail = ""
            message = f"HTTP {exc.code}: {detail}"
            if exc.code in RETRYABLE_STATUS:
                wait = parse_retry_after(exc.headers.get("Retry-After")) if exc.headers else None
                raise _Retryable(message, wait) from None
            raise _Fatal(message) from None
        except TimeoutError as exc:
            raise _Retryable(f"timeout ({type(exc).__name__}: {exc})") from None
        except urllib.error.URLError as exc:
            kind = "timeout" if isinstance(exc.reason, TimeoutError) else "connection error"
            raise _Retryable(f"{kind} ({type(exc.reason).__name__}: {exc.reason})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {exc})") from None
        text = raw.decode("utf-8", "replace")
        if content_type.startswith("text/event-stream"):
            return _parse_event_stream(text)
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            raise _Retryable(f"response is not JSON: {text[:200]}") from None
        return _parse_json(body)

    def complete(self, messages: Messages, params: SamplingParams | None = None) -> GenerationResult:
        """One chat → one result; retried per :attr:`retry`, errors returned, never raised."""
        params = params or SamplingParams()
        started = time.perf_counter()
        try:
            data = json.dumps(self.payload(messages, params)).encode()
        except (TypeError, ValueError) as exc:
            return GenerationResult.failed(f"request not serialisable: {exc}")
        attempt = 0
        while True:
            attempt += 1
            try:
                out = self._attempt(data)
            except _Fatal as exc:
                return GenerationResult.failed(str(exc), attempt, time.perf_counter() - started)
            except _Retryable as exc:
                if attempt >= self.retry.max_attempts:
                    return GenerationResult.failed(
                        f"gave up after {attempt} attempts; last error: {exc}",
                        attempt,
                        time.perf_counter() - started,
                    )
                (self.sleep or time.sleep)(self.retry.delay(attempt, exc.retry_after))
                continue
            return GenerationResult(
                text=out.text,
                completion_tokens=out.completion_tokens,
                finish_reason=out.finish_reason,
                attempts=attempt,
                seconds=time.perf_counter() - started,
                prompt_tokens=out.prompt_tokens,
            )

    # -- batches ---------------------------------------------------------------------------

    def complete_many(
        self, batch: Sequence[Messages], params: SamplingParams | None = None
    ) -> list[GenerationResult]:
        """Results aligned with `batch`; at most `concurrency` requests in flight."""
        if not batch:
            return []
        params = params or SamplingParams()
        if len(batch) == 1:
            return [self._guarded(batch[0], params)]
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(batch)), thread_name_prefix="rrdistill-chat"
        ) as pool:
            return list(pool.map(lambda messages: self._guarded(messages, params), batch))

    async def acomplete_many(
        self, batch: Sequence[Messages], params: SamplingParams | None = None
    ) -> list[GenerationResult]:
        """:meth:`complete_many` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.complete_many, batch, params)

    def _guarded(self, messages: Messages, params: SamplingParams) -> GenerationResult:
        # A bug in one request (an unserialisable message, say) must not take the batch down.
        try:
            return self.complete(messages, params)
        except Exception as exc:  # turned into that request's result
            return GenerationResult.failed(f"{type(exc).__name__}: {exc}")
