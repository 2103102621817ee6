"""The bi-encoder reranker: query and passages embedded apart, ranked by the similarity of their vectors.

A passage's vector does not depend on the query, so a text that occurs several times in one call
(the same passage under several queries, or twice in one list) is embedded once. Otherwise it
serves like the cross-encoder: texts tokenized in one Rust batch, embedded in length buckets padded
only to their own longest, cut at ``max_length`` tokens with every cut counted in :attr:`stats` and
logged once, and a warm-up batch on load. Pooling and normalisation are the manifest's
(:class:`~rrdistill.runtime.bundle.EmbeddingSpec`), done here in numpy as sentence-transformers does.

Scores are dot products of the (normalised) vectors: cosines in [-1, 1], not logits, so
``activation="sigmoid"`` is refused rather than squashing them into a meaningless (0.27, 0.73).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from rrdistill.runtime.bundle import BundleError, EmbeddingSpec, Manifest
from rrdistill.runtime.reranker import (
    TOKENIZE_SLICE,
    Mode,
    RankedList,
    RequestInput,
    Reranker,
    RuntimeStats,
    _open_session,
    _requests,
    _Tokens,
    check_activation,
    in_length_buckets,
    pad_token_id,
    padded_feeds,
    ranked,
    refuse_reasoning,
)
from rrdistill.types import Passage

log = logging.getLogger(__name__)


@dataclass
class BiEncoderStats(RuntimeStats):
    """The cross-encoder's counters (``pairs`` scored, ``truncated_*`` per occurrence, tokens…) plus:"""

    embedded: int = 0
    """Distinct texts embedded (queries and passages; a repeated text counts once per call)."""


def _refuse_sigmoid(name: str, activation: str | None) -> None:
    if check_activation(activation) == "sigmoid":
        raise ValueError(
            f"{name}: a bi-encoder's scores are similarities of its vectors, not logits; "
            "use activation None or 'identity'"
        )


def pool(hidden: np.ndarray, mask: np.ndarray, spec: EmbeddingSpec) -> np.ndarray:
    """One vector per row of token states `hidden` (batch, tokens, width), as sentence-transformers
    pools: the mean over the real tokens, or the first token's state; then L2-normalised if asked."""
    if spec.pooling == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask[..., None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if spec.normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32, copy=False)


class BiEncoderReranker(Reranker):
    """Rank passages by the similarity of their embedding with the query's (a ``bi-encoder`` bundle)."""

    kind: ClassVar[str] = "bi-encoder"
    supports_reasoning: ClassVar[bool] = False

    def __init__(
        self,
        bundle: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        pad_id: int,
    ) -> None:
        assert manifest.embedding is not None  # the manifest's validation makes it so
        self.bundle, self.manifest, self.session, self.tokenizer = bundle, manifest, session, tokenizer
        self.embedding = manifest.embedding
        self.max_length = manifest.inputs.max_length
        self.default_batch_size = 32
        self.stats = BiEncoderStats()
        self._pad_id = pad_id
        self._input_names = [i.name for i in session.get_inputs()]
        self._warned_truncation = False
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length)

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
    ) -> BiEncoderReranker:
        """Open a bundle whose manifest was already verified."""
        if manifest.kind != "bi-encoder":
            raise BundleError(f"{root}: a {manifest.kind} bundle, not a bi-encoder bundle")
        _refuse_sigmoid(root.name, activation)
        tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer_file))
        pad = pad_token_id(manifest, tokenizer)  # read before padding is switched off
        reranker = cls(root, manifest, _open_session(root, manifest, providers, threads), tokenizer, pad)
        if warmup:
            reranker.score([("warm up", [Passage("warmup", "warm up")])])
            reranker.stats = BiEncoderStats()
        return reranker

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def rerank_many(
        self,
        requests: Sequence[RequestInput],
        top_k: int | None = None,
        batch_size: int | None = None,
        *,
        reasoning: Mode = False,
        activation: str | None = None,
    ) -> list[RankedList]:
        """Rerank many queries at once: all their texts share one embedding pass."""
        refuse_reasoning(self, reasoning)
        per_query = _requests(requests)
        scores = self.score(
            [(q, [p for _, p in ps]) for q, ps in per_query], batch_size, activation=activation
        )
        return [
            ranked([ident for ident, _ in ps], s, s, top_k)
            for (_, ps), s in zip(per_query, scores, strict=True)
        ]

    def score(
        self,
        groups: Sequence[tuple[str, Sequence[Passage]]],
        batch_size: int | None = None,
        *,
        activation: str | None = None,
    ) -> list[np.ndarray]:
        """Similarity of every (query, passage) pair, grouped as given (no sorting)."""
        _refuse_sigmoid(self.name, activation)
        inputs = self.manifest.inputs
        queries = [inputs.query_template.format(query=q) for q, ps in groups if ps]
        passages = [
            [inputs.passage_template.format(title=p.title, text=p.text).strip() for p in ps]
            for _, ps in groups
            if ps
        ]
        texts = list(dict.fromkeys([*queries, *(t for ts in passages for t in ts)]))
        vectors, truncated = self._embed(texts, batch_size or self.default_batch_size)
        row = {text: i for i, text in enumerate(texts)}
        pairs = sum(len(ts) for ts in passages)
        cut_passages = sum(truncated[row[t]] for ts in passages for t in ts)
        cut_queries = sum(truncated[row[q]] for q in queries)
        self.stats.add(pairs=pairs, truncated_passages=cut_passages, truncated_queries=cut_queries)
        self._warn_truncation(cut_passages, cut_queries, pairs)
        scores = iter(
            vectors[[row[t] for t in ts]] @ vectors[row[q]] for q, ts in zip(queries, passages, strict=True)
        )
        return [next(scores) if ps else np.empty(0, dtype=np.float32) for _, ps in groups]

    def _embed(self, texts: list[str], batch_size: int) -> tuple[np.ndarray, list[bool]]:
        """The vectors of `texts` (rows in order) and whether each was cut at ``max_length``."""
        rows = [
            _Tokens.of(e)
            for start in range(0, len(texts), TOKENIZE_SLICE)
            for e in self.tokenizer.encode_batch(texts[start : start + TOKENIZE_SLICE])
        ]
        if not rows:
            return np.empty((0, 0), dtype=np.float32), []
        vectors, tokens = in_length_buckets(rows, batch_size, self._embed_batch)
        self.stats.add(embedded=len(rows), tokens=tokens)
        return vectors, [r.truncated for r in rows]

    def _embed_batch(self, rows: list[Any], width: int) -> np.ndarray:
        feeds = padded_feeds(rows, width, self._pad_id, ("input_ids", "attention_mask", "token_type_ids"))
        # only the inputs the graph has (token_type_ids: BERT yes, RoBERTa no); pooling always masks
        (hidden,) = self.session.run([self.manifest.model.output], {n: feeds[n] for n in self._input_names})
        self.stats.add(batches=1, padded_tokens=len(rows) * width)
        return pool(np.asarray(hidden, dtype=np.float32), feeds["attention_mask"], self.embedding)

    def _warn_truncation(self, passages: int, queries: int, pairs: int) -> None:
        if (passages or queries) and not self._warned_truncation:
            self._warned_truncation = True
            log.warning(
                "%d of %d passages and %d queries were longer than max_length=%d tokens and were "
                "truncated (counted in Reranker.stats.truncated_passages / truncated_queries)",
                passages,
                pairs,
                queries,
                self.max_length,
            )
