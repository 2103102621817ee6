"""The request models and response builders of the rerank server's API shapes.

Each shape follows its provider's published reference, so that provider's clients work unchanged:

- ``POST /v1/rerank``: Cohere's Rerank API v1 (``documents`` as strings or ``{"text": …}``, given
  back as ``{"text"}`` only; ``return_documents`` default false; ``max_chunks_per_doc`` and
  ``rank_fields`` are accepted and ignored; ``model`` too: one server, one model), answered ``{"id", "results": [{"index", "relevance_score", "document"?}], "meta"}`` with
  ``meta = {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}``;
- ``POST /v2/rerank``: Cohere's v2 (``model`` required; ``max_tokens_per_doc`` and ``priority``
  accepted and ignored: the model's own window bounds every document), the same answer with
  ``meta.api_version = {"version": "2", "is_experimental": false}``;
- ``POST /jina/v1/rerank``: Jina's rerank API (``return_documents`` default **true**), answered
  ``{"model", "usage": {"total_tokens"}, "results": [{"index", "relevance_score", "document"?}]}``
  (``model``: the bundle served; ``total_tokens``: counted for cross-encoders, 0 otherwise). It
  differs from Cohere v1 in that default and in its top-level keys, so it has its own route
  instead of a superset on ``/v1/rerank``;
- ``POST /rerank``: the original shapes — Cohere-like with ``documents``, TEI's with ``texts``
  (``raw_scores``, ``truncate``, ``truncation_direction``, ``return_text``).

``reasoning`` (our extension) is accepted by every shape; its explanation only has room in the
Cohere ``meta`` (as ``meta.explanation``, with ``meta.escalated``/``meta.confidence`` when a cascade
decided), so those keys appear only when a request asks for reasoning or a cascade decides.

Imported by :func:`~rrdistill.runtime.server.create_app` once the ``[serve]`` extra is known to be
installed (pydantic comes with FastAPI).
"""

# No `from __future__ import annotations`: FastAPI must see the real request model classes.

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import pydantic
from tokenizers import Tokenizer

from rrdistill.runtime.reranker import CrossEncoderReranker, RankedList, Reranker

Reasoning = pydantic.StrictBool | Literal["auto"] | None


class Document(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    text: str
    title: str | None = None
    id: str | None = None


class _Request(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    query: str = pydantic.Field(min_length=1)
    top_n: int | None = pydantic.Field(default=None, ge=1)
    reasoning: Reasoning = None


class RerankRequest(_Request):
    """``POST /rerank``: ``documents`` (Cohere-like) or ``texts`` (TEI); exactly one of them."""

    documents: list[str | Document] | None = None
    texts: list[str] | None = None
    return_documents: bool = False
    return_text: bool = False
    model: str | None = None
    raw_scores: bool | None = None
    """TEI: false (TEI's default) → sigmoid scores, true → raw logits; unset → the server's
    ``activation`` if it has one, else sigmoid."""
    truncate: bool | None = None
    """TEI: false → 422 when a pair is longer than the model reads; unset or true → truncate (TEI's
    ``--auto-truncate`` default)."""
    truncation_direction: Literal["Right", "right", "Left", "left"] = "Right"


class CohereV1Request(_Request):
    model: str | None = None
    documents: list[str | Document]
    return_documents: bool = False
    max_chunks_per_doc: int | None = None
    rank_fields: list[str] | None = None


class CohereV2Request(_Request):
    model: str
    documents: list[str | Document]
    return_documents: bool = False
    max_tokens_per_doc: int | None = pydantic.Field(default=None, ge=1)
    priority: int | None = None


class JinaRequest(_Request):
    model: str | None = None
    documents: list[str | Document]
    return_documents: bool = True


def passages(items: Sequence[str | Document]) -> list[str | dict[str, Any]]:
    """What the reranker takes: strings as they are, documents as dicts (text, title, id)."""
    return [d if isinstance(d, str) else d.model_dump(exclude_none=True) for d in items]


def text_of(item: str | Document) -> str:
    return item if isinstance(item, str) else item.text


def _rescored(ranked: RankedList, scores: Sequence[float]) -> RankedList:
    """`ranked` in its order with new `scores`; its explanation, windows and cascade fields kept."""
    out = RankedList(
        [dataclasses.replace(r, score=score) for r, score in zip(ranked, scores, strict=True)],
        ranked.explanation,
        ranked.windows,
    )
    out.confidence, out.escalated = ranked.confidence, ranked.escalated
    return out


def rank_scores(ranked: RankedList, n: int) -> RankedList:
    """Scores in (0, 1] from positions: the r-th of `n` (from 0) gets ``(n − r) / n``.

    For models whose scores are ranks (listwise, a cascade that reasoned), which have no sigmoid:
    the APIs that promise [0, 1] still get it, in the model's order.
    """
    return _rescored(ranked, [(n - i) / n for i in range(len(ranked))])


def cosine_scores(ranked: RankedList) -> RankedList:
    """A bi-encoder's cosines in [0, 1] as ``(1 + cos) / 2``: the order and the gaps kept, unlike ranks."""
    return _rescored(ranked, [min(max((1.0 + r.score) / 2.0, 0.0), 1.0) for r in ranked])


def _meta_extras(ranked: RankedList, reasoning: Reasoning) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if reasoning not in (None, False) or ranked.explanation is not None:
        extras["explanation"] = ranked.explanation
    if ranked.confidence is not None:  # a cascade decided whether to reason
        extras["escalated"], extras["confidence"] = ranked.escalated, ranked.confidence
    return extras


def cohere_results(
    ranked: RankedList, documents: Sequence[str | Document], return_documents: bool
) -> list[dict[str, Any]]:
    return [
        {
            "index": r.index,
            "relevance_score": r.score,
            **({"document": {"text": text_of(documents[r.index])}} if return_documents else {}),
        }
        for r in ranked
    ]


def cohere_response(
    version: Literal["1", "2"],
    ranked: RankedList,
    documents: Sequence[str | Document],
    return_documents: bool,
    reasoning: Reasoning,
) -> dict[str, Any]:
    """Cohere's v1 / v2 answer; ``meta`` as in the reference's example for that version."""
    api_version: dict[str, Any] = {"version": version}
    if version == "2":
        api_version["is_experimental"] = False
    return {
        "id": str(uuid.uuid4()),
        "results": cohere_results(ranked, documents, return_documents),
        "meta": {
            "api_version": api_version,
            "billed_units": {"search_units": 1},
            **_meta_extras(ranked, reasoning),
        },
    }


def legacy_cohere_response(
    ranked: RankedList,
    documents: Sequence[str | Document],
    return_documents: bool,
    reasoning: Reasoning,
    reranker: Reranker,
) -> dict[str, Any]:
    """``POST /rerank`` with ``documents``: Cohere-like, ``meta`` naming the model being served."""
    manifest = reranker.manifest
    return {
        "id": str(uuid.uuid4()),
        "results": cohere_results(ranked, documents, return_documents),
        "meta": {
            "bundle": reranker.name,
            "kind": reranker.kind,
            "precision": manifest.precision if manifest is not None else None,
            **_meta_extras(ranked, reasoning),
        },
    }


def tei_response(ranked: RankedList, texts: Sequence[str], return_text: bool) -> list[dict[str, Any]]:
    """TEI's bare list, best first (no room for an explanation)."""
    return [
        {"index": r.index, "score": r.score, **({"text": texts[r.index]} if return_text else {})}
        for r in ranked
    ]


def jina_response(
    model: str,
    ranked: RankedList,
    documents: Sequence[str | Document],
    return_documents: bool,
    tokens: int,
) -> dict[str, Any]:
    return {
        "model": model,
        "usage": {"total_tokens": tokens},
        "results": cohere_results(ranked, documents, return_documents),
    }


class PairTokens:
    """Token counts of (query, passage) pairs as a cross-encoder sees them, without scoring them.

    What TEI's ``truncate: false`` needs (is any pair cut?) and Jina's ``usage`` reports (tokens
    read). Own copies of the reranker's tokenizer (its pair truncation, and MaxP stride, included),
    so counting in a worker thread never shares state with scoring.
    """

    def __init__(self, reranker: CrossEncoderReranker) -> None:
        assert reranker.manifest is not None
        self.pairs = Tokenizer.from_str(reranker.tokenizer.to_str())
        self.whole = Tokenizer.from_str(reranker.tokenizer.to_str())
        self.whole.no_truncation()
        self.max_length = reranker.max_length
        self.max_query = max(1, self.max_length // 2)
        self.template = reranker.manifest.inputs.passage_template
        chunking = getattr(reranker, "chunking", None)  # MaxP scores up to max_chunks windows
        self.windows = chunking.max_chunks if chunking is not None and chunking.mode == "max" else 1

    @classmethod
    def of(cls, reranker: Reranker) -> "PairTokens | None":
        return cls(reranker) if isinstance(reranker, CrossEncoderReranker) else None

    def measure(self, query: str, items: Sequence[str | dict[str, Any]]) -> tuple[int, str | None]:
        """(tokens the model reads, None) or (…, why the first cut pair is cut)."""
        encoded = self.whole.encode(query, add_special_tokens=False)
        why = None
        if len(encoded.ids) > self.max_query:
            why = f"the query is {len(encoded.ids)} tokens; this model keeps at most {self.max_query}"
            query = query[: encoded.offsets[self.max_query - 1][1]]
        texts = [
            self.template.format(title="", text=d).strip()
            if isinstance(d, str)
            else self.template.format(title=d.get("title") or "", text=d["text"]).strip()
            for d in items
        ]
        tokens = 0
        for index, encoding in enumerate(self.pairs.encode_batch([(query, t) for t in texts])):
            windows = [encoding, *encoding.overflowing]
            tokens += sum(len(w.ids) for w in windows[: self.windows])
            if why is None and len(windows) > self.windows:
                length = len(self.whole.encode(query, texts[index]).ids)
                why = (
                    f"texts[{index}] is {length} tokens with the query; this model reads at most "
                    f"{self.max_length}" + (f" in {self.windows} windows" if self.windows > 1 else "")
                )
        return tokens, why
