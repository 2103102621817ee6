"""One reranker interface, and the embeddable cross-encoder behind it.

:class:`Reranker` is what callers hold: ``rerank`` / ``rerank_many`` / ``stats`` / ``manifest`` /
``bundle`` / ``providers`` / ``kind`` / ``supports_reasoning``, and ``Reranker.load(bundle)`` picks
the implementation from the bundle's manifest — :class:`CrossEncoderReranker` here, the bi-encoder
(:class:`~rrdistill.runtime.bi_encoder.BiEncoderReranker`), the listwise LM
(:class:`~rrdistill.runtime.reasoning.ListwiseReranker`) or a cascade
(:class:`~rrdistill.runtime.cascade.CascadeReranker`). Every implementation returns
:class:`RankedList` results, so the server, the CLI and the labeller never ask which one they have.

Cross-encoder design choices, each for latency-critical services:
- the bundle is verified on load (manifest, format version, sha256 of every file) and refused
  with the reason, so a corrupt model never serves;
- pairs of all queries in a call are tokenized in one Rust batch, sorted by length and run in
  buckets padded only to their own longest pair (length-bucketed batching): a short passage
  never pays for a long one;
- truncation cuts the passage, never the query beyond half the budget, and is counted in
  :attr:`CrossEncoderReranker.stats` and logged once: never silent; with :class:`Chunking` ``max``
  a long passage is scored whole instead, as overlapping chunks batched with every other pair and
  aggregated by their best score (MaxP);
- one session, no mutable state per call: safe to share between threads;
- a warm-up batch on load, so the first request does not pay for graph initialisation.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from rrdistill.runtime.bundle import BundleError, Manifest, load_manifest
from rrdistill.types import Passage, Request

log = logging.getLogger(__name__)

PassageInput = str | Passage | Mapping[str, Any]
"""A passage as callers have it: plain text, a :class:`Passage`, or a dict with text/title/id."""

RequestInput = Request | tuple[str, Sequence[PassageInput]]
"""One query with its passages: a :class:`Request` or ``(query, passages)``."""

Mode = bool | Literal["auto"]
"""``False`` fast, ``True`` reasoning (with an explanation), ``"auto"`` reason only when unsure."""

ACTIVATIONS = ("identity", "sigmoid")
"""Score activations: ``identity`` is the raw logit, ``sigmoid`` maps it into (0, 1)."""


def check_activation(activation: str | None) -> str | None:
    """`activation` if it is one the runtime knows (None = the model's default), else ValueError."""
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    return activation


def check_mode(reasoning: object) -> Mode:
    if reasoning is True or reasoning is False or reasoning == "auto":
        return reasoning  # type: ignore[return-value]
    raise ValueError(f"reasoning must be True, False or 'auto', not {reasoning!r}")


def sigmoid(logits: np.ndarray | Sequence[float]) -> np.ndarray:
    """The logistic function in float64, stable for any sign: a logit of 20 gives 1 − 2e-9, not the
    1.0 that float32 rounds to (float64 only saturates past a logit of about 37)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class Chunking:
    """How a cross-encoder scores a passage longer than its window (``max_length`` with the query).

    ``first`` (FirstP, the default) scores the first window: the passage is truncated, and counted.
    ``max`` (MaxP) cuts the passage into windows that overlap by `stride` tokens, scores each with
    the query like any other pair (same length buckets, same batches) and keeps the best: a passage
    whose evidence sits past the first window is still judged on it. The cost grows with the
    number of windows, so at most `max_chunks` per passage are scored (the rest is truncated and
    counted). `stride` defaults to a quarter of ``max_length``.
    """

    mode: Literal["first", "max"] = "first"
    stride: int | None = None
    max_chunks: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("first", "max"):
            raise ValueError(f"chunking mode {self.mode!r} is not 'first' (FirstP) or 'max' (MaxP)")
        if self.max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, not {self.max_chunks}")
        if self.stride is not None and self.stride < 0:
            raise ValueError(f"stride must be 0 or more tokens, not {self.stride}")

    def overlap(self, max_length: int) -> int:
        """The overlap in tokens for a model of `max_length`; it must leave each window new text."""
        stride = self.stride if self.stride is not None else max_length // 4
        # The query takes at most half the window ([CLS] q [SEP] p [SEP]): the passage gets the rest.
        passage_budget = max_length - max_length // 2 - 3
        if stride >= passage_budget:
            raise ValueError(
                f"stride {stride} must be below the {passage_budget} passage tokens a window of "
                f"{max_length} keeps after a query of up to {max_length // 2} tokens"
            )
        return stride


@dataclass(frozen=True, slots=True)
class RerankResult:
    index: int
    """Position of the passage in the input list."""
    id: str
    """The passage's id (its docid, or its input position when it had none)."""
    score: float


class RankedList(list[RerankResult]):
    """Results best first (a plain list of :class:`RerankResult`), plus what a listwise model said.

    Every reranker returns these; a cross-encoder's have no explanation and no windows.
    """

    def __init__(
        self,
        results: Sequence[RerankResult] = (),
        explanation: str | None = None,
        windows: Sequence[Any] = (),
    ) -> None:
        super().__init__(results)
        self.explanation = explanation
        """The reasoning behind the top window (the one that decided the head of the list)."""
        self.windows = list(windows)
        """The listwise windows as ranked (:class:`~rrdistill.window.WindowRecord`); [] for a cross-encoder."""
        self.confidence: float | None = None
        """The fast model's margin on this query, when a cascade decided whether to reason."""
        self.escalated = False
        """True when a cascade sent this query to the reasoning mode."""

    def head(self, k: int | None) -> RankedList:
        """The first `k` results (all when None) with the same explanation, windows and cascade facts."""
        out = RankedList(self if k is None else self[: max(k, 0)], self.explanation, self.windows)
        out.confidence, out.escalated = self.confidence, self.escalated
        return out


@dataclass
class Counters:
    """Thread-safe counters since load; ``to_dict`` is what /health and the CLI report."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class RuntimeStats(Counters):
    """A cross-encoder's counters; read them to report truncation instead of hiding it."""

    pairs: int = 0
    truncated_passages: int = 0
    truncated_queries: int = 0
    batches: int = 0
    tokens: int = 0
    """Real (unpadded) tokens scored."""
    padded_tokens: int = 0
    """Tokens the model computed, padding included (tokens / padded_tokens = batching efficiency)."""
    chunked_passages: int = 0
    """Passages longer than the window scored as several chunks (:class:`Chunking` ``max``)."""
    extra_chunks: int = 0
    """Chunks scored beyond each passage's first (the MaxP cost, in model inputs)."""
    passages_tokenized_whole: int = 0
    """Long passages whose cut text did not surely hold their window, so tokenized again whole."""


R = TypeVar("R", bound="Reranker")


class Reranker(abc.ABC):
    """The reranker interface; ``Reranker.load(bundle)`` returns the implementation the bundle needs.

    >>> reranker = Reranker.load("bundles/minilm-int8")           # doctest: +SKIP
    >>> reranker.rerank("what causes tides?", ["The moon…", "Cats…"])  # doctest: +SKIP
    [RerankResult(index=0, id='0', score=7.1), RerankResult(index=1, id='1', score=-9.3)]

    ``reasoning`` is accepted by every implementation; one that cannot reason
    (``supports_reasoning`` False) raises ValueError for ``True`` / ``"auto"``. ``activation`` maps
    scores: None keeps the model's default, ``"identity"`` gives raw logits, ``"sigmoid"`` (0, 1)
    (see :class:`CrossEncoderReranker`; listwise scores are ranks and refuse it).
    """

    kind: ClassVar[str]
    """``cross-encoder`` | ``bi-encoder`` | ``listwise-lm`` | ``cascade``."""
    supports_reasoning: ClassVar[bool]
    stats: Counters
    """Counters since load (``to_dict()`` for reports)."""
    manifest: Manifest | None
    """The bundle's verified manifest; None for a model behind a URL."""
    bundle: Path | None
    """The bundle directory; None for a model behind a URL."""

    @classmethod
    def load(
        cls: type[R],
        bundle: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        *,
        warmup: bool = True,
        activation: str | None = None,
        chunking: Chunking | None = None,
    ) -> R:
        """Verify a bundle and load the reranker its manifest's ``kind`` names.

        `threads` caps onnxruntime's intra-op threads (default: all cores); `activation` sets the
        default score activation (cross-encoders; see :class:`CrossEncoderReranker`); `chunking`
        how a cross-encoder scores passages longer than its window (:class:`Chunking`; a listwise
        model cuts every passage to its prompt budget, a bi-encoder embeds each text's first window,
        and both refuse it). Called on an implementation (``CrossEncoderReranker.load``), a bundle
        of another kind is refused.
        """
        root = Path(bundle)
        manifest = load_manifest(root)
        check_activation(activation)
        implementation: type[Reranker] = cls
        if cls is Reranker:
            if manifest.kind == "listwise-lm":
                from rrdistill.runtime.reasoning import ListwiseReranker

                implementation = ListwiseReranker
            elif manifest.kind == "bi-encoder":
                from rrdistill.runtime.bi_encoder import BiEncoderReranker

                implementation = BiEncoderReranker
            else:
                implementation = CrossEncoderReranker
        options: dict[str, Any] = {}
        if chunking is not None:
            if not issubclass(implementation, CrossEncoderReranker):
                cut = (
                    "embeds the first max_length tokens of each text (truncation is counted in its stats)"
                    if manifest.kind == "bi-encoder"
                    else "cuts every passage to its prompt budget"
                )
                raise ValueError(
                    f"{root}: a {manifest.kind} bundle {cut}; chunking applies to cross-encoders"
                )
            options["chunking"] = chunking
        reranker = implementation.from_manifest(
            root,
            manifest,
            providers=providers,
            threads=threads,
            warmup=warmup,
            activation=activation,
            **options,
        )
        return cast(R, reranker)

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
    ) -> Reranker:
        """Open a bundle whose manifest :meth:`load` verified (implementations override this)."""
        raise TypeError(f"{cls.__name__} is not loaded from a bundle")

    @property
    def name(self) -> str:
        """How reports and the server name the model: the bundle's folder name."""
        return self.bundle.name if self.bundle is not None else type(self).__name__

    @property
    @abc.abstractmethod
    def providers(self) -> list[str]:
        """onnxruntime execution providers in use ([] for a model behind a URL)."""

    def rerank(
        self,
        query: str,
        passages: Sequence[PassageInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = False,
        activation: str | None = None,
    ) -> RankedList:
        """Passages sorted best first; ties keep input order. Empty in, empty out."""
        return self.rerank_many(
            [(query, passages)], top_k, batch_size, reasoning=reasoning, activation=activation
        )[0]

    @abc.abstractmethod
    def rerank_many(
        self,
        requests: Sequence[RequestInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = False,
        activation: str | None = None,
    ) -> list[RankedList]:
        """Rerank many queries in one call (they share model batches)."""


def _as_passage(item: PassageInput, index: int) -> tuple[str, Passage]:
    if isinstance(item, Passage):
        return item.docid, item
    if isinstance(item, str):
        return str(index), Passage(str(index), item)
    if isinstance(item, Mapping):
        text = item.get("text", item.get("content", item.get("contents")))
        if not isinstance(text, str):
            raise TypeError(f"passage {index}: a dict passage needs a string 'text'")
        ident = item.get("id", item.get("docid", index))
        return str(ident), Passage(str(ident), text, item.get("title") or "")
    raise TypeError(f"passage {index}: expected str, Passage or dict, got {type(item).__name__}")


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu is installed and sees a GPU, else CPU (TensorRT only on request)."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _open_session(
    root: Path, manifest: Manifest, providers: Sequence[str] | None, threads: int | None
) -> ort.InferenceSession:
    """The model session a bundle's engine needs: onnxruntime, or the TensorRT runner for the engine
    export built and validated (on GPU 0); other engines are refused."""
    if manifest.model.engine not in ("onnxruntime", "tensorrt"):
        raise BundleError(
            f"{root}: engine {manifest.model.engine!r} is not one this runtime runs "
            "(onnxruntime, tensorrt); re-export the model with this version of rrdistill"
        )
    if manifest.model.engine == "tensorrt":
        from rrdistill.runtime.tensorrt import open_engine_session

        return open_engine_session(root, manifest)  # type: ignore[return-value]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    chosen = list(providers) if providers is not None else default_providers()
    return ort.InferenceSession(str(root / manifest.model.file), sess_options=options, providers=chosen)


@dataclass(frozen=True)
class _Tokens:
    """One pair's window as the model reads it (what the runtime keeps of an ``Encoding``)."""

    ids: np.ndarray
    type_ids: np.ndarray
    truncated: bool

    @classmethod
    def of(cls, encoding: Any) -> _Tokens:
        return cls(
            np.asarray(encoding.ids, dtype=np.int64),
            np.asarray(encoding.type_ids, dtype=np.int64),
            bool(encoding.overflowing),
        )


TOKENIZE_SLICE = 512
"""Pairs tokenized per ``encode_batch`` call: large enough for the tokenizer's threads, small
enough that the ``Encoding`` objects of a large call never pile up."""
CHARS_PER_TOKEN = 8
"""Characters of a passage tokenized per token of the window (FirstP): natural text averages 4-5
characters per WordPiece/BPE token, so the window is almost always inside the cut text."""


def _window_ends_before_last_word(encoding: Any, passage: str) -> bool:
    """Whether the (truncated) window of `encoding` ends before the last word of `passage`, so that
    cutting `passage` anywhere inside that word left the window's tokens as they were."""
    if not encoding.overflowing:
        return False
    last_space = max(passage.rfind(" "), passage.rfind("\n"), passage.rfind("\t"))
    ends = [
        end
        for (_, end), sequence in zip(encoding.offsets, encoding.sequence_ids, strict=True)
        if sequence == 1
    ]
    return bool(ends) and ends[-1] <= last_space


def pad_token_id(manifest: Manifest, tokenizer: Tokenizer) -> int:
    """The id padded positions get: the manifest's, else ``padding.pad_id`` of tokenizer.json.

    Without either, 0: padded positions are masked out of attention, so any id in the vocabulary
    yields the same scores; the recorded id only keeps the inputs identical to the source model's.
    """
    if manifest.inputs.pad_token_id is not None:
        return manifest.inputs.pad_token_id
    padding = tokenizer.padding
    return int(padding["pad_id"]) if padding and padding.get("pad_id") is not None else 0


def _requests(requests: Sequence[RequestInput]) -> list[tuple[str, list[tuple[str, Passage]]]]:
    """(query, [(id, passage)]) per request, whichever form the caller used."""
    out = []
    for request in requests:
        if isinstance(request, Request):
            query, items = request.query.text, [c.passage for c in request.candidates]
        else:
            query, items = request
        out.append((query, [_as_passage(item, i) for i, item in enumerate(items)]))
    return out


def refuse_reasoning(reranker: Reranker, reasoning: Mode) -> None:
    """A model that only scores (a cross-encoder, a bi-encoder) refuses any reasoning mode but off."""
    if check_mode(reasoning) is not False:
        raise ValueError(
            f"{reranker.name}: a {reranker.kind} cannot reason (reasoning={reasoning!r}); "
            "reasoning needs a listwise-lm bundle or a cascade"
        )


def ranked(ids: Sequence[str], raw: np.ndarray, scores: np.ndarray, top_k: int | None) -> RankedList:
    """Passages best first by `raw` (ties keep input order), reporting `scores` (raw, activated)."""
    order = sorted(range(len(ids)), key=lambda i: (-raw[i], i))
    if top_k is not None:
        order = order[: max(top_k, 0)]
    return RankedList([RerankResult(i, ids[i], float(scores[i])) for i in order])


def in_length_buckets(
    rows: Sequence[Any], batch_size: int, run: Callable[[list[Any], int], np.ndarray]
) -> tuple[np.ndarray, int]:
    """``run(batch, width)`` over `rows` sorted by length, each batch padded only to its own longest:
    the outputs back in input order, and the real tokens seen."""
    lengths = np.fromiter((len(r.ids) for r in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        values = run([rows[i] for i in index], int(lengths[index].max()))
        if out is None:
            out = np.empty((len(rows), *values.shape[1:]), dtype=values.dtype)
        out[index] = values
    return (out if out is not None else np.empty(0, dtype=np.float32)), int(lengths.sum())


def padded_feeds(rows: Sequence[Any], width: int, pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The graph inputs `names` (of input_ids, attention_mask, token_type_ids) of `rows` padded to `width`."""
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for row, encoding in enumerate(rows):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        types[row, :n] = encoding.type_ids
        mask[row, :n] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: feeds[name] for name in names}


class CrossEncoderReranker(Reranker):
    """Score and sort passages for a query with a cross-encoder bundle.

    Scores: the model's output read at ``manifest.score.logit_index``. ``activation`` (per call, or
    the default given to :meth:`Reranker.load`) says what is reported: None = the manifest's
    ``score.activation`` (export writes ``identity``: raw logits, as the model computes them);
    ``"identity"`` = the raw logit; ``"sigmoid"`` = ``1 / (1 + exp(-logit))`` in float64, what
    sentence-transformers' ``CrossEncoder.predict`` returns for a one-label head and the (0, 1)
    range Cohere's ``relevance_score`` promises. The order always follows the logits, so no
    activation changes a ranking, not even where a sigmoid would round two logits to one value.
    """

    kind: ClassVar[str] = "cross-encoder"
    supports_reasoning: ClassVar[bool] = False

    def __init__(
        self,
        bundle: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        activation: str | None = None,
        pad_id: int | None = None,
        chunking: Chunking | None = None,
    ) -> None:
        self.bundle = bundle
        self.manifest = manifest
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = manifest.inputs.max_length
        self.default_batch_size = 32
        self.activation = check_activation(activation) or manifest.score.activation
        """The activation applied when a call names none."""
        self.stats = RuntimeStats()
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_name = manifest.model.output
        self._max_query_tokens = max(1, self.max_length // 2)
        # Queries are measured untruncated: the pair tokenizer truncates "only_second", which the
        # tokenizers library refuses for a lone sequence longer than max_length.
        self._query_tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._query_tokenizer.no_truncation()
        self._warned_truncation = False
        self._pad_id = pad_id if pad_id is not None else pad_token_id(manifest, tokenizer)
        self.chunking = chunking or Chunking()
        """How passages longer than the window are scored (FirstP unless :meth:`load` said MaxP)."""
        self.tokenizer.enable_truncation(
            self.max_length,
            stride=self.chunking.overlap(self.max_length) if self.chunking.mode == "max" else 0,
            strategy="only_second",
        )

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
        chunking: Chunking | None = None,
    ) -> CrossEncoderReranker:
        """Open a bundle whose manifest was already verified."""
        if manifest.kind != "cross-encoder":
            raise BundleError(f"{root}: a {manifest.kind} bundle, not a cross-encoder bundle")
        session = _open_session(root, manifest, providers, threads)
        tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer_file))
        pad = pad_token_id(manifest, tokenizer)  # read before padding is switched off below
        tokenizer.no_padding()
        reranker = cls(
            root, manifest, session, tokenizer, activation=activation, pad_id=pad, chunking=chunking
        )
        if warmup:
            reranker.score([("warm up", [Passage("warmup", "warm up")])])
            reranker.stats = RuntimeStats()
        return reranker

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    # -- public API ------------------------------------------------------------------------

    def rerank_many(
        self,
        requests: Sequence[RequestInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = False,
        activation: str | None = None,
    ) -> list[RankedList]:
        """Rerank many queries at once: their pairs share length buckets and batches."""
        refuse_reasoning(self, reasoning)
        check_activation(activation)
        per_query = _requests(requests)
        logits = self._logits([(q, [p for _, p in ps]) for q, ps in per_query], batch_size)
        return [
            ranked([ident for ident, _ in passages], raw, self._activate(raw, activation), top_k)
            for (_, passages), raw in zip(per_query, logits, strict=True)
        ]

    def score(
        self,
        groups: Sequence[tuple[str, Sequence[Passage]]],
        batch_size: int | None = None,
        *,
        activation: str | None = None,
    ) -> list[np.ndarray]:
        """Scores of every (query, passage) pair, grouped as given (no sorting)."""
        check_activation(activation)
        return [self._activate(raw, activation) for raw in self._logits(groups, batch_size)]

    # -- internals -------------------------------------------------------------------------

    def _activate(self, logits: np.ndarray, activation: str | None) -> np.ndarray:
        if (activation or self.activation) == "sigmoid":
            return sigmoid(logits)
        return logits

    def _logits(
        self, groups: Sequence[tuple[str, Sequence[Passage]]], batch_size: int | None
    ) -> list[np.ndarray]:
        template = self.manifest.inputs.passage_template
        pairs: list[tuple[str, str]] = []
        sizes = []
        for query, passages in groups:
            query = self._cap_query(query)
            sizes.append(len(passages))
            for p in passages:
                text = template.format(title=p.title, text=p.text).strip()
                pairs.append((query, text))
        flat = self._score_pairs(pairs, batch_size or self.default_batch_size)
        out, start = [], 0
        for size in sizes:
            out.append(flat[start : start + size])
            start += size
        return out

    def _cap_query(self, query: str) -> str:
        encoding = self._query_tokenizer.encode(query, add_special_tokens=False)
        if len(encoding.ids) <= self._max_query_tokens:
            return query
        self.stats.add(truncated_queries=1)
        return query[: encoding.offsets[self._max_query_tokens - 1][1]]

    def _score_pairs(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        if not pairs:
            return np.empty(0, dtype=np.float32)
        if self.chunking.mode == "max":
            return self._score_chunked(self.tokenizer.encode_batch(pairs), batch_size)
        rows = self._encode_first_windows(pairs)
        self._count_truncated(sum(1 for row in rows if row.truncated), len(pairs))
        return self._score_batched(rows, batch_size)

    def _encode_first_windows(self, pairs: list[tuple[str, str]]) -> list[_Tokens]:
        """The pairs' first windows, as ``encode_batch`` of the whole texts would give them, without
        tokenizing (and keeping as overflow windows) the rest of every long passage, and kept as
        compact arrays (an ``Encoding`` also holds token strings, offsets and masks).

        A passage longer than :data:`CHARS_PER_TOKEN` × ``max_length`` characters is cut there first.
        The cut only changes the word it falls in, so a window that ends before the last word of the
        cut text (and the text goes on: the passage was truncated) is exactly the uncut one; any other
        cut passage is tokenized again whole. Measured on SciFact BM25 top-100 (32 × 100 pairs, 96
        tokens, int8 MiniLM-L6): peak RSS 493 → 263 MB, and about half the tokenizer's time.
        """
        budget = CHARS_PER_TOKEN * self.max_length
        rows: list[_Tokens] = []
        again = 0
        for start in range(0, len(pairs), TOKENIZE_SLICE):
            whole = pairs[start : start + TOKENIZE_SLICE]
            cut = [(q, p[:budget]) if len(p) > budget else (q, p) for q, p in whole]
            encodings = self.tokenizer.encode_batch(cut)
            redo = [
                i
                for i, ((_, text), (_, head)) in enumerate(zip(whole, cut, strict=True))
                if len(text) > len(head) and not _window_ends_before_last_word(encodings[i], head)
            ]
            for i, encoding in zip(redo, self.tokenizer.encode_batch([whole[i] for i in redo]), strict=True):
                encodings[i] = encoding
            again += len(redo)
            rows.extend(_Tokens.of(e) for e in encodings)
        self.stats.add(passages_tokenized_whole=again)
        return rows

    def _score_chunked(self, encodings: list[Any], batch_size: int) -> np.ndarray:
        """MaxP: every window of every passage in one batched run, then each passage's best."""
        chunks, owners = [], []
        cut = chunked = 0
        for index, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing]
            if len(windows) > 1:
                chunked += 1
            if len(windows) > self.chunking.max_chunks:
                cut += 1
                windows = windows[: self.chunking.max_chunks]
            chunks.extend(windows)
            owners.extend([index] * len(windows))
        self.stats.add(chunked_passages=chunked, extra_chunks=len(chunks) - len(encodings))
        self._count_truncated(cut, len(encodings))
        chunk_scores = self._score_batched(chunks, batch_size, pairs=len(encodings))
        scores = np.full(len(encodings), -np.inf, dtype=np.float32)
        np.maximum.at(scores, np.asarray(owners), chunk_scores)
        return scores

    def _count_truncated(self, truncated: int, total: int) -> None:
        if not truncated:
            return
        self.stats.add(truncated_passages=truncated)
        if not self._warned_truncation:
            self._warned_truncation = True
            remedy = (
                f"raise Chunking.max_chunks above {self.chunking.max_chunks}"
                if self.chunking.mode == "max"
                else "score them whole with Chunking('max') (MaxP)"
            )
            log.warning(
                "%d of %d passages were longer than max_length=%d tokens and were truncated "
                "(counted in Reranker.stats.truncated_passages; %s)",
                truncated,
                total,
                self.max_length,
                remedy,
            )

    def _score_batched(self, encodings: list[Any], batch_size: int, pairs: int | None = None) -> np.ndarray:
        """Scores of `encodings` in length-sorted batches (each padded to its own longest)."""
        scores, tokens = in_length_buckets(encodings, batch_size, self._score_encoded)
        self.stats.add(pairs=len(encodings) if pairs is None else pairs, tokens=tokens)
        return scores

    def _score_encoded(self, encodings: list[Any], width: int) -> np.ndarray:
        """Raw logits of one padded batch (activations are applied by the callers, in float64)."""
        batch = len(encodings)
        feeds = padded_feeds(encodings, width, self._pad_id, self._input_names)
        outputs = self.session.run([self._output_name], feeds)
        self.stats.add(batches=1, padded_tokens=batch * width)
        return np.asarray(outputs[0], dtype=np.float32).reshape(batch, -1)[:, self.manifest.score.logit_index]
