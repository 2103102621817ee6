"""The embeddable reranker: a verified bundle on onnxruntime + tokenizers + numpy, nothing else.

Design choices, each for latency-critical services:
- the bundle is verified on load (manifest, format version, sha256 of every file) and refused
  with the reason, so a corrupt model never serves;
- pairs of all queries in a call are tokenized in one Rust batch, sorted by length and run in
  buckets padded only to their own longest pair (length-bucketed batching): a short passage
  never pays for a long one;
- truncation cuts the passage, never the query beyond half the budget, and is counted in
  :attr:`Reranker.stats` and logged once: never silent;
- one session, no mutable state per call: safe to share between threads;
- a warm-up batch on load, so the first request does not pay for graph initialisation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from rrdistill.runtime.bundle import BundleError, Manifest, load_manifest
from rrdistill.types import Passage, Request

if TYPE_CHECKING:
    from rrdistill.runtime.reasoning import ListwiseReranker

log = logging.getLogger(__name__)

PassageInput = str | Passage | Mapping[str, Any]
"""A passage as callers have it: plain text, a :class:`Passage`, or a dict with text/title/id."""


@dataclass(frozen=True, slots=True)
class RerankResult:
    index: int
    """Position of the passage in the input list."""
    id: str
    """The passage's id (its docid, or its input position when it had none)."""
    score: float


@dataclass
class RuntimeStats:
    """Counters since load; read them to report truncation instead of hiding it."""

    pairs: int = 0
    truncated_passages: int = 0
    truncated_queries: int = 0
    batches: int = 0
    tokens: int = 0
    """Real (unpadded) tokens scored."""
    padded_tokens: int = 0
    """Tokens the model computed, padding included (tokens / padded_tokens = batching efficiency)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


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


class Reranker:
    """Score and sort passages for a query with a cross-encoder bundle.

    >>> reranker = Reranker.load("bundles/minilm-int8")           # doctest: +SKIP
    >>> reranker.rerank("what causes tides?", ["The moon…", "Cats…"])  # doctest: +SKIP
    [RerankResult(index=0, id='0', score=7.1), RerankResult(index=1, id='1', score=-9.3)]
    """

    def __init__(self, bundle: Path, manifest: Manifest, session: ort.InferenceSession, tokenizer: Tokenizer):
        self.bundle = bundle
        self.manifest = manifest
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = manifest.inputs.max_length
        self.default_batch_size = 32
        self.stats = RuntimeStats()
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_name = manifest.model.output
        self._special_tokens = tokenizer.num_special_tokens_to_add(True)
        self._max_query_tokens = max(1, self.max_length // 2)
        # Queries are measured untruncated: the pair tokenizer truncates "only_second", which the
        # tokenizers library refuses for a lone sequence longer than max_length.
        self._query_tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._query_tokenizer.no_truncation()
        self._warned_truncation = False
        pad = tokenizer.token_to_id("[PAD]")
        self._pad_id = pad if pad is not None else 0

    @classmethod
    def load(
        cls,
        bundle: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        *,
        warmup: bool = True,
    ) -> Reranker | ListwiseReranker:
        """Verify and load a bundle. `threads` caps onnxruntime's intra-op threads (default: all cores).

        A ``listwise-lm`` bundle loads as a :class:`~rrdistill.runtime.reasoning.ListwiseReranker`
        (same ``rerank`` API, plus ``reasoning=True``).
        """
        root = Path(bundle)
        manifest = load_manifest(root)
        if manifest.kind == "listwise-lm":
            from rrdistill.runtime.reasoning import ListwiseReranker

            return ListwiseReranker.load(root, providers=providers, threads=threads)
        if manifest.model.engine not in ("onnxruntime", "tensorrt"):
            raise BundleError(
                f"{root}: engine {manifest.model.engine!r} is not one this runtime runs "
                "(onnxruntime, tensorrt); re-export the model with this version of rrdistill"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        chosen = list(providers) if providers is not None else default_providers()
        if manifest.model.engine == "tensorrt":  # the engine export built and validated, on GPU 0
            from rrdistill.runtime.tensorrt import open_engine_session

            session = open_engine_session(root, manifest)
        else:
            session = ort.InferenceSession(
                str(root / manifest.model.file), sess_options=options, providers=chosen
            )
        tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer_file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(manifest.inputs.max_length, strategy="only_second")
        reranker = cls(root, manifest, session, tokenizer)
        if warmup:
            reranker.score([("warm up", [Passage("warmup", "warm up")])])
            reranker.stats = RuntimeStats()
        return reranker

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    # -- public API ------------------------------------------------------------------------

    def rerank(
        self,
        query: str,
        passages: Sequence[PassageInput],
        top_k: int | None = None,
        batch_size: int | None = None,
    ) -> list[RerankResult]:
        """Passages sorted by score (best first); ties keep input order. Empty in, empty out."""
        return self.rerank_many([(query, passages)], top_k=top_k, batch_size=batch_size)[0]

    def rerank_many(
        self,
        requests: Sequence[Request | tuple[str, Sequence[PassageInput]]],
        top_k: int | None = None,
        batch_size: int | None = None,
    ) -> list[list[RerankResult]]:
        """Rerank many queries at once: their pairs share length buckets and batches."""
        queries: list[str] = []
        per_query: list[list[tuple[str, Passage]]] = []
        for request in requests:
            if isinstance(request, Request):
                query, items = request.query.text, [c.passage for c in request.candidates]
            else:
                query, items = request
            queries.append(query)
            per_query.append([_as_passage(item, i) for i, item in enumerate(items)])
        flat_scores = self.score(
            [(q, [p for _, p in ps]) for q, ps in zip(queries, per_query, strict=True)], batch_size
        )
        results = []
        for passages, scores in zip(per_query, flat_scores, strict=True):
            order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
            if top_k is not None:
                order = order[: max(top_k, 0)]
            results.append([RerankResult(i, passages[i][0], float(scores[i])) for i in order])
        return results

    def score(
        self, groups: Sequence[tuple[str, Sequence[Passage]]], batch_size: int | None = None
    ) -> list[np.ndarray]:
        """Scores of every (query, passage) pair, grouped as given (no sorting)."""
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

    # -- internals -------------------------------------------------------------------------

    def _cap_query(self, query: str) -> str:
        encoding = self._query_tokenizer.encode(query, add_special_tokens=False)
        if len(encoding.ids) <= self._max_query_tokens:
            return query
        self.stats.add(truncated_queries=1)
        return query[: encoding.offsets[self._max_query_tokens - 1][1]]

    def _score_pairs(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        scores = np.empty(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        encodings = self.tokenizer.encode_batch(pairs)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            self.stats.add(truncated_passages=truncated)
            if not self._warned_truncation:
                self._warned_truncation = True
                log.warning(
                    "%d of %d passages were longer than max_length=%d tokens and were truncated "
                    "(counted in Reranker.stats.truncated_passages)",
                    truncated,
                    len(pairs),
                    self.max_length,
                )
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            scores[index] = self._score_encoded([encodings[i] for i in index], int(lengths[index].max()))
        self.stats.add(pairs=len(pairs), tokens=int(lengths.sum()))
        return scores

    def _score_encoded(self, encodings: list[Any], width: int) -> np.ndarray:
        batch = len(encodings)
        ids = np.full((batch, width), self._pad_id, dtype=np.int64)
        types = np.zeros((batch, width), dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            types[row, :n] = encoding.type_ids
            mask[row, :n] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        outputs = self.session.run([self._output_name], {name: feeds[name] for name in self._input_names})
        logits = np.asarray(outputs[0], dtype=np.float32).reshape(batch, -1)[
            :, self.manifest.score.logit_index
        ]
        self.stats.add(batches=1, padded_tokens=batch * width)
        if self.manifest.score.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        return logits
