"""The reasoning mode: a listwise LM student that ranks windows and can explain its ranking.

Two modes, one model:
- **fast** — the no-reasoning prompt; with single-token identifiers (FIRST) the ranking is read
  from the logits of the first identifier after ``<answer>[`` in one forward pass, otherwise a
  short greedy ``<answer>[2] > [1] …</answer>`` is generated;
- **reasoning** — the ReasonRank prompt; ``<think>…</think><answer>…</answer>`` is generated with
  the KV cache and parsed (and repaired, counted) by :mod:`rrdistill.prompts`.

Lists longer than a window go through the shared sliding window (:mod:`rrdistill.window`), with
the windows of all queries in a call batched. The model runs from a ``listwise-lm`` bundle
(ONNX decoder with KV cache) or, instead, behind any OpenAI-compatible chat endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from tokenizers import Tokenizer

from rrdistill.chat import ChatClient, Messages, RetryPolicy, SamplingParams
from rrdistill.prompts import PROMPT_VERSION, TokenTruncator, build_messages, parse_answer
from rrdistill.runtime.bundle import BundleError, Manifest
from rrdistill.runtime.generation import OnnxCausalLM
from rrdistill.runtime.reranker import (
    Counters,
    Mode,
    RankedList,
    RequestInput,
    Reranker,
    RerankResult,
    _as_passage,
    _open_session,
    check_activation,
    check_mode,
)
from rrdistill.types import Candidate, Passage, Query, Request
from rrdistill.window import WindowConfig, WindowOutput, sliding_window

SYSTEM_SLOT, USER_SLOT = "{system}", "{user}"

__all__ = ["ListwiseReranker", "ListwiseSettings", "ListwiseStats", "OnnxWindowRanker", "RankedList"]

WindowEngine = Callable[[list[Request], bool], list[WindowOutput]]
"""Ranks a list of windows in a mode (True: reasoning) — :class:`OnnxWindowRanker` or an endpoint."""


@dataclass
class ListwiseStats(Counters):
    """A listwise reranker's counters since load."""

    queries: int = 0
    windows: int = 0
    """Windows ranked, both modes."""
    reasoning_windows: int = 0
    """Of those, windows ranked in the reasoning mode."""
    repaired_windows: int = 0
    """Windows whose answer had to be repaired into a permutation (out of range, duplicates, missing)."""
    generated_tokens: int = 0
    """Tokens generated (windows that report a count: the ONNX model does, an endpoint may not)."""
    model_calls: int = 0
    """Calls into the window engine (one ONNX forward/generate batch each)."""
    escalations: int = 0
    """Queries that ``reasoning="auto"`` sent to the reasoning mode."""


@dataclass
class ListwiseSettings:
    """What a listwise-lm bundle's manifest (``extra``) carries about prompting and decoding."""

    chat_template: str
    """The model's chat template rendered with ``{system}`` / ``{user}`` slots (literal replace)."""
    eos_token_ids: list[int]
    pad_token_id: int
    passage_max_tokens: int = 128
    window_size: int = 20
    step: int = 10
    max_new_tokens_fast: int = 200
    max_new_tokens_reasoning: int = 1024
    first_token_ids: list[int] | None = None
    """Token id of each identifier 1..window_size right after ``<answer>[`` (FIRST), if single tokens."""
    answer_prefix: str = "<answer>["

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ListwiseSettings:
        try:
            return cls(**manifest.extra["listwise"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"listwise-lm manifest lacks valid 'listwise' settings ({exc})") from None


class ListwiseReranker(Reranker):
    """Rerank with a listwise LM; ``rerank(..., reasoning=True)`` also returns its explanation.

    Scores are rank-based: in a list of n, the passage ranked r-th (from 0) scores ``n − r``; they
    order, they are not probabilities, so ``activation="sigmoid"`` is refused.
    ``batch_size`` is windows per engine call (one ONNX batch); default :attr:`default_batch_size`.
    """

    kind: ClassVar[str] = "listwise-lm"
    supports_reasoning: ClassVar[bool] = True

    def __init__(
        self,
        engine: WindowEngine,
        window: WindowConfig,
        name: str,
        cascade_threshold: float | None = None,
        *,
        manifest: Manifest | None = None,
        bundle: Path | None = None,
        providers: Sequence[str] = (),
        default_batch_size: int | None = None,
    ) -> None:
        self.engine = engine
        """Ranks a batch of windows in a mode: :class:`OnnxWindowRanker` or :class:`ChatWindowRanker`."""
        self.window = window
        self._name = name
        self.cascade_threshold = cascade_threshold
        """Confidence below which ``reasoning="auto"`` reasons (calibrated, stored in the bundle)."""
        self.manifest = manifest
        self.bundle = bundle
        self._providers = list(providers)
        self.default_batch_size = default_batch_size
        """Windows per engine call when a call names none (None: all of a sliding-window step)."""
        self.stats = ListwiseStats()

    @property
    def name(self) -> str:
        return self._name

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_manifest(
        cls,
        root: Path,
        manifest: Manifest,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        warmup: bool = True,
        activation: str | None = None,
    ) -> ListwiseReranker:
        """Open a bundle whose manifest was already verified (no warm-up: prompt shapes vary)."""
        if manifest.kind != "listwise-lm":
            raise BundleError(f"{root}: a {manifest.kind} bundle, not a listwise-lm bundle")
        if manifest.prompt_version != PROMPT_VERSION:
            raise BundleError(
                f"{root}: trained with prompt {manifest.prompt_version!r}, this rrdistill builds {PROMPT_VERSION!r}"
            )
        _refuse_sigmoid(root.name, activation)
        settings = ListwiseSettings.from_manifest(manifest)
        session = _open_session(root, manifest, providers, threads)
        tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        model = OnnxCausalLM(session, settings.eos_token_ids, settings.pad_token_id)
        engine = OnnxWindowRanker(model, tokenizer, settings, max_batch=None)
        window = WindowConfig(settings.window_size, settings.step, top_k=100)
        threshold = (manifest.extra.get("cascade") or {}).get("threshold")
        return cls(
            engine,
            window,
            root.name,
            threshold,
            manifest=manifest,
            bundle=root,
            providers=session.get_providers(),
            default_batch_size=OnnxWindowRanker.DEFAULT_BATCH,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        window: WindowConfig | None = None,
        max_tokens_reasoning: int = 2048,
        max_tokens_fast: int = 256,
        concurrency: int = 8,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        max_passage_tokens: int | None = 512,
        tokenizer: str | Path | Tokenizer | None = None,
    ) -> ListwiseReranker:
        """A listwise model behind an OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, …).

        `url` is the server (``http://host:8000``), its ``/v1`` base or the full endpoint.
        Passages are cut to `max_passage_tokens` tokens of `tokenizer` (the served model's
        ``tokenizer.json``, or a loaded ``tokenizers.Tokenizer``), else to as many whitespace
        words (which cut a little later than tokens would); None keeps them whole. The default,
        512, is ReasonRank's token cut for reasoning-heavy sets and the distillation teacher's.
        The API key defaults to ``$OPENAI_API_KEY``.
        """
        client = ChatClient(
            url,
            model,
            api_key=api_key,
            concurrency=concurrency,
            timeout=timeout,
            retry=retry or RetryPolicy(),
        )
        if isinstance(tokenizer, str | Path):
            tokenizer = Tokenizer.from_file(str(tokenizer))
            tokenizer.no_padding()
            tokenizer.no_truncation()
        endpoint = ChatWindowRanker(
            client,
            max_tokens_fast=max_tokens_fast,
            max_tokens_reasoning=max_tokens_reasoning,
            max_passage_tokens=max_passage_tokens,
            tokenizer=tokenizer,
        )
        return cls(endpoint, window or WindowConfig(), f"{model}@{url}")

    # -- ranking ---------------------------------------------------------------------------

    def rerank_many(
        self,
        requests: Sequence[RequestInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = False,
        activation: str | None = None,
    ) -> list[RankedList]:
        """Fast mode by default; ``reasoning=True`` explains; ``"auto"`` reasons only when unsure."""
        reasoning = check_mode(reasoning)
        _refuse_sigmoid(self.name, activation)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if reasoning == "auto":
            if self.cascade_threshold is None:
                raise ValueError(
                    f"{self.name}: no calibrated cascade threshold; calibrate one (rrdistill.runtime.cascade) "
                    "or build a CascadeReranker with an explicit threshold"
                )
            from rrdistill.runtime.cascade import CascadeReranker

            cascade = CascadeReranker(self, self, self.cascade_threshold, head=self.window.window_size)
            ranked = cascade.rerank_many(requests, top_k=top_k, batch_size=batch_size)
            self.stats.add(escalations=sum(r.escalated for r in ranked))
            return ranked
        prepared: list[Request] = []
        for i, item in enumerate(requests):
            if isinstance(item, Request):
                prepared.append(Request(item.query, [Candidate(c.passage) for c in item.candidates]))
                continue
            query, passages = item
            docs = [_as_passage(p, j) for j, p in enumerate(passages)]
            # Positions as docids inside the window machinery, so duplicate caller ids cannot collide.
            candidates = [Candidate(Passage(str(j), p.text, p.title)) for j, (_, p) in enumerate(docs)]
            prepared.append(Request(Query(str(i), query), candidates, {"ids": [ident for ident, _ in docs]}))
        size = batch_size or self.default_batch_size

        def rank_windows(windows: list[Request]) -> list[WindowOutput]:
            chunks = [windows[i : i + size] for i in range(0, len(windows), size)] if size else [windows]
            self.stats.add(model_calls=len(chunks))
            return [output for chunk in chunks for output in self.engine(chunk, reasoning)]

        outputs = sliding_window(prepared, rank_windows, self.window)
        ranked = []
        for source, out in zip(prepared, outputs, strict=True):
            ids = source.extra.get("ids") or [c.docid for c in source.candidates]
            position = {c.docid: j for j, c in enumerate(source.candidates)}
            order = [position[c.docid] for c in out.request.candidates]
            n = len(order)
            results = [RerankResult(j, str(ids[j]), float(n - rank)) for rank, j in enumerate(order)]
            # The last window ranked is the front one: its reasoning decided the head of the list.
            explanation = out.windows[-1].reasoning if reasoning and out.windows else None
            ranked.append(RankedList(results, explanation, out.windows).head(top_k))
            self.stats.add(
                windows=len(out.windows),
                reasoning_windows=len(out.windows) if reasoning else 0,
                repaired_windows=sum(1 for w in out.windows if w.repairs.any),
                generated_tokens=sum(w.generated_tokens or 0 for w in out.windows),
            )
        self.stats.add(queries=len(prepared))
        return ranked


def _refuse_sigmoid(name: str, activation: str | None) -> None:
    if check_activation(activation) == "sigmoid":
        raise ValueError(
            f"{name}: a listwise model's scores are ranks (n − rank), not logits, and have no sigmoid; "
            "use activation None or 'identity'"
        )


class OnnxWindowRanker:
    """Ranks windows with the ONNX decoder: FIRST logits or generation, then parse + repair.

    `max_batch` splits a call into model batches of at most that many windows; None runs every
    window it is given as one batch (:class:`ListwiseReranker` sizes the calls itself).
    """

    DEFAULT_BATCH: ClassVar[int] = 8
    STOP: ClassVar[str] = "</answer>"
    """Generation ends when the decoded text reaches this (as transformers' ``stop_strings``)."""

    def __init__(
        self,
        model: OnnxCausalLM,
        tokenizer: Tokenizer,
        settings: ListwiseSettings,
        max_batch: int | None = DEFAULT_BATCH,
    ) -> None:
        self.model, self.tokenizer, self.settings, self.max_batch = model, tokenizer, settings, max_batch
        self.truncator = TokenTruncator(settings.passage_max_tokens, tokenizer)
        # Enough trailing tokens to spell the stop string however the model tokenized it.
        self._stop_tail = len(tokenizer.encode(self.STOP, add_special_tokens=False).ids) + 2

    def _stopped(self, tokens: list[int]) -> bool:
        """Whether the generated text reached :attr:`STOP` with its last token.

        Matched on text, not token ids: a byte-level BPE spells ``</answer>`` differently after
        a space or a bracket, and a token-id match would then run on to the budget.
        """
        return self.STOP in self.tokenizer.decode(tokens[-self._stop_tail :], skip_special_tokens=False)

    def prompt(self, window: Request, reasoning: bool) -> str:
        """The exact prompt text the model sees for a window."""
        system, user = (
            m["content"]
            for m in build_messages(
                window.query.text,
                [c.passage for c in window.candidates],
                reasoning=reasoning,
                truncate=self.truncator,
            )
        )
        return self.settings.chat_template.replace(SYSTEM_SLOT, system).replace(USER_SLOT, user)

    def __call__(self, windows: list[Request], reasoning: bool) -> list[WindowOutput]:
        size = self.max_batch or max(len(windows), 1)
        out: list[WindowOutput] = []
        for start in range(0, len(windows), size):
            out += self._batch(windows[start : start + size], reasoning)
        return out

    def _batch(self, windows: list[Request], reasoning: bool) -> list[WindowOutput]:
        first = self.settings.first_token_ids
        if not reasoning and first is not None and all(len(w.candidates) <= len(first) for w in windows):
            prompts = [
                self.tokenizer.encode(
                    self.prompt(w, False) + self.settings.answer_prefix, add_special_tokens=False
                ).ids
                for w in windows
            ]
            logits = self.model.next_token_logits(prompts)
            outputs = []
            for row, window in enumerate(windows):
                ids = np.asarray(first[: len(window.candidates)])
                scores = logits[row, ids]
                order = [int(i) for i in np.argsort(-scores, kind="stable")]
                outputs.append(WindowOutput(order=order, text=None, scores=scores.tolist()))
            return outputs
        prompts = [
            self.tokenizer.encode(self.prompt(w, reasoning), add_special_tokens=False).ids for w in windows
        ]
        budget = self.settings.max_new_tokens_reasoning if reasoning else self.settings.max_new_tokens_fast
        generations = self.model.generate(prompts, budget, stop=self._stopped)
        outputs = []
        for window, generation in zip(windows, generations, strict=True):
            text = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
            parsed = parse_answer(text, len(window.candidates), reasoning=reasoning)
            outputs.append(
                WindowOutput(parsed.order, text, parsed.reasoning, parsed.repairs, len(generation.token_ids))
            )
        return outputs


class ChatWindowRanker:
    """Ranks windows with a listwise model behind an OpenAI-compatible endpoint.

    The requests go through :class:`rrdistill.chat.ChatClient` (stdlib only, so the runtime
    stays lean): retried, concurrent, ``reasoning_content`` rejoined as ``<think>…</think>`` so
    the explanation survives a server-side reasoning parser. A window whose request still
    fails keeps its input order and is counted in :attr:`failed` / :attr:`errors`; when every
    window of a call fails the endpoint is unusable and the call raises, rather than return the
    input order dressed up as a ranking.
    """

    def __init__(
        self,
        client: ChatClient,
        *,
        max_tokens_fast: int = 256,
        max_tokens_reasoning: int = 2048,
        max_passage_tokens: int | None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.client = client
        self.sampling = {
            False: SamplingParams(max_new_tokens=max_tokens_fast),
            True: SamplingParams(max_new_tokens=max_tokens_reasoning),
        }
        self.truncator = (
            TokenTruncator(max_passage_tokens, tokenizer) if max_passage_tokens is not None else None
        )
        """Cuts passages; its ``seen`` / ``truncated`` counters say how often it had to."""
        self.windows = 0
        self.failed = 0
        self.errors: list[str] = []
        """The first errors of failed windows (up to 20), for diagnosis."""
        self._lock = threading.Lock()

    def messages(self, window: Request, reasoning: bool) -> Messages:
        """The chat the endpoint sees for a window."""
        with self._lock:  # the truncator counts; rerank may be called from several threads
            return build_messages(
                window.query.text,
                [c.passage for c in window.candidates],
                reasoning=reasoning,
                truncate=self.truncator,
            )

    def __call__(self, windows: list[Request], reasoning: bool) -> list[WindowOutput]:
        if not windows:
            return []
        chats = [self.messages(w, reasoning) for w in windows]
        results = self.client.complete_many(chats, self.sampling[reasoning])
        outputs = []
        errors = []
        for window, result in zip(windows, results, strict=True):
            if not result.ok:
                errors.append(result.error or "no text")
            parsed = parse_answer(result.text or "", len(window.candidates), reasoning=reasoning)
            outputs.append(
                WindowOutput(
                    parsed.order, result.text, parsed.reasoning, parsed.repairs, result.completion_tokens
                )
            )
        with self._lock:
            self.windows += len(windows)
            self.failed += len(errors)
            self.errors += errors[: max(20 - len(self.errors), 0)]
        if errors and len(errors) == len(windows):
            raise RuntimeError(f"{self.client.url}: every window failed; first error: {errors[0]}")
        return outputs
