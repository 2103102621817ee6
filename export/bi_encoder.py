"""Bi-encoders: a sentence-transformers folder → the ``embedding`` a bundle needs, and the source scores.

The folder's transformer is exported like a cross-encoder (Optimum, task ``feature-extraction``,
output ``last_hidden_state``); what sentence-transformers adds on top of it (pooling, normalisation,
the similarity) is read from ``modules.json`` and written into the manifest for the runtime to do in
numpy. Only what the runtime reproduces exactly is accepted: Transformer → Pooling (mean or CLS) →
optional Normalize, cosine or dot similarity. Anything else (a Dense layer, max pooling, a
lowercasing module) is refused, so a bundle never scores with another function than its source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.export import ExportError
from rrdistill.export.validate import passage_text
from rrdistill.extras import require
from rrdistill.runtime.bundle import EmbeddingSpec
from rrdistill.types import Request

TASK = "feature-extraction"
POOLING_MODES = {
    "mean": "mean",
    "cls": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
}
"""sentence-transformers' pooling modes the runtime pools with: 5.x names, and the legacy flags."""
SIMILARITIES = ("cosine", "dot")


@dataclass(frozen=True)
class SentenceTransformerFolder:
    """What a bundle needs of a folder written by ``SentenceTransformer.save()``."""

    root: Path
    transformer: Path
    """The Hugging Face checkpoint of its Transformer module (the folder itself since v2)."""
    embedding: EmbeddingSpec
    max_seq_length: int | None
    """The legacy ``sentence_bert_config.json`` length (5.x saves it as the tokenizer's model_max_length)."""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooling(config: dict[str, Any], where: Path) -> str:
    mode = config.get("pooling_mode")
    modes = [mode] if isinstance(mode, str) else list(mode or [])
    modes += [key for key, on in config.items() if key.startswith("pooling_mode_") and on is True]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ExportError(
            f"{where}: pooling {modes}; a bi-encoder bundle pools with exactly one of mean or cls tokens"
        )
    return POOLING_MODES[modes[0]]


def read_sentence_transformer(checkpoint: str | os.PathLike[str]) -> SentenceTransformerFolder | None:
    """The folder's bi-encoder settings, None when it is no sentence-transformers folder with pooling
    (a cross-encoder), :class:`ExportError` for one the runtime cannot serve exactly."""
    root = Path(checkpoint)
    modules = _json(root / "modules.json")
    if not isinstance(modules, list):
        return None
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if "Pooling" not in types:
        return None
    if types[:2] != ["Transformer", "Pooling"] or any(t != "Normalize" for t in types[2:]):
        raise ExportError(
            f"{root}: modules {' → '.join(types)}; a bi-encoder bundle is Transformer → Pooling "
            "(mean or cls) → optional Normalize"
        )
    transformer = root / modules[0].get("path", "")
    settings = _json(transformer / "sentence_bert_config.json") or {}
    if settings.get("do_lower_case"):
        raise ExportError(
            f"{transformer}: do_lower_case lowercases texts before the tokenizer, which the runtime does not"
        )
    similarity = (_json(root / "config_sentence_transformers.json") or {}).get(
        "similarity_fn_name"
    ) or "cosine"
    if similarity not in SIMILARITIES:
        raise ExportError(f"{root}: similarity {similarity!r}; a bi-encoder bundle ranks by cosine or dot")
    pooling_dir = root / modules[1].get("path", "")
    pooling = _json(pooling_dir / "config.json") or {}
    spec = EmbeddingSpec(
        pooling=_pooling(pooling, pooling_dir),
        normalize="Normalize" in types or similarity == "cosine",
        dimension=pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension"),
    )
    return SentenceTransformerFolder(root, transformer, spec, settings.get("max_seq_length"))


def embedding_source_scores(
    checkpoint: str | os.PathLike[str],
    requests: Sequence[Request],
    *,
    max_length: int,
    passage_template: str,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """sentence-transformers' own similarity (torch, fp32) of each query with each of its candidates.

    Texts are those the runtime embeds (template applied; queries are not capped: a bi-encoder
    embeds them apart, cut at `max_length` like the passages).
    """
    sentence_transformers = require("sentence_transformers", "export", "bi-encoder parity checks")
    model = sentence_transformers.SentenceTransformer(str(checkpoint), device="cpu")
    model.max_seq_length = max_length
    texts = [passage_text(passage_template, c.passage) for r in requests for c in r.candidates]

    def encode(items: list[str]) -> Any:
        return model.encode(items, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)

    queries, passages = encode([r.query.text for r in requests]), encode(texts)
    out, start = [], 0
    for i, request in enumerate(requests):
        end = start + len(request.candidates)
        out.append(model.similarity(queries[i : i + 1], passages[start:end])[0].float().numpy())
        start = end
    return out
