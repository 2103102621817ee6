"""A zero-shot bi-encoder as a second teacher signal.

A cross-encoder fine-tuned on a collection's qrels knows what those labels know; a sentence
embedding model pretrained on a billion pairs (all-MiniLM-L6-v2: S2ORC citation and title–abstract
pairs, SPECTER, Q&A sites; not the collection's queries or qrels) knows something else. Mixed with the
cross-encoder (z-scored per query, the weight chosen on dev), it makes a teacher that is stronger
than the labels its cross-encoder was trained on — the condition under which distillation beats
training the student on the labels directly.

Passage vectors are cached by text (an ``.npz`` beside the study), so labelling, dev, test and
out-of-domain sets embed each passage once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.extras import require
from rrdistill.io import atomic_writer
from rrdistill.types import Request


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class BiEncoderScorer:
    """Cosine similarity of a sentence-transformers model's query and passage embeddings."""

    def __init__(
        self,
        model: str | Path,
        max_length: int,
        cache: Path | None = None,
        *,
        name: str | None = None,
        batch_size: int = 64,
    ):
        sentence_transformers = require("sentence_transformers", "train", "a bi-encoder teacher")
        self.model = sentence_transformers.SentenceTransformer(str(model), device="cpu")
        self.model.max_seq_length = max_length
        self.name, self.max_length, self.batch_size = name or Path(model).name, max_length, batch_size
        self.cache = cache
        self.vectors: dict[str, np.ndarray] = {}
        self.embed_seconds, self.embedded = 0.0, 0
        if cache is not None and cache.is_file():
            with np.load(cache) as stored:
                self.vectors = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
                self.embed_seconds, self.embedded = float(stored["seconds"]), int(stored["embedded"])

    @property
    def layers(self) -> int:
        return int(self.model[0].auto_model.config.num_hidden_layers)

    @property
    def ms_per_passage(self) -> float:
        """What embedding one passage cost (batched), the bi-encoder's share of a reranking call."""
        return 1000 * self.embed_seconds / self.embedded if self.embedded else float("nan")

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            ),
            dtype=np.float32,
        )

    def embed(self, texts: Sequence[str]) -> list[str]:
        """Embed (and cache) every text not embedded yet; the texts' cache keys, in order."""
        keys = [_key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}
        if not missing:
            return keys
        started = time.perf_counter()
        vectors = self._encode(list(missing.values()))
        self.embed_seconds += time.perf_counter() - started
        self.embedded += len(missing)
        self.vectors.update(zip(missing, vectors, strict=True))
        if self.cache is not None:
            with atomic_writer(self.cache, "wb") as handle:
                np.savez(
                    handle,
                    keys=np.asarray(list(self.vectors)),
                    vectors=np.stack(list(self.vectors.values())),
                    seconds=self.embed_seconds,
                    embedded=self.embedded,
                )
        return keys

    def scores(self, requests: Sequence[Request]) -> list[np.ndarray]:
        """Each request's candidates scored in their order."""
        keys = iter(self.embed([c.passage.full_text() for r in requests for c in r.candidates]))
        queries = self._encode([r.query.text for r in requests])
        return [
            np.stack([self.vectors[next(keys)] for _ in r.candidates]) @ query
            for r, query in zip(requests, queries, strict=True)
        ]


def scores_reranker(score, info: dict[str, Any]):
    """A ``rerank_file`` callback from a function giving each request's scores in candidate order."""

    def rerank(chunk: list[Request]) -> list[Request]:
        out = []
        for request, values in zip(chunk, score(chunk), strict=True):
            result = request.ranked_by(values)
            result.extra["teacher"] = dict(info)
            out.append(result)
        return out

    return rerank
