"""The systems under test, each behind the same small interface, used inside a worker process.

A :class:`SystemSpec` names a system and the files it loads (prepared by
:mod:`rrdistill.bench.prepare`); :func:`open_system` loads it with a given thread count and wires
the timing wrappers of :mod:`rrdistill.bench.instrument` into it. Each adapter calls the
library's own public API the way its documentation shows, with its own defaults (batch size,
padding, truncation): the benchmark compares what users get.

This module imports nothing heavy at module level: the worker times the import of each library
on its own.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from rrdistill.bench.instrument import Stopwatch
    from rrdistill.types import Passage

KINDS = ("rrdistill", "st-torch", "st-onnx", "flashrank")

IMPORTS = {
    "rrdistill": "rrdistill.runtime",
    "st-torch": "sentence_transformers",
    "st-onnx": "sentence_transformers",
    "flashrank": "flashrank",
}
"""The module a user's program imports to use each system (its import is timed in fresh interpreters;
the ONNX backend's own imports, optimum and onnxruntime, happen at load and count there)."""

DISTRIBUTIONS = {
    "rrdistill": ("rrdistill", "onnxruntime", "tokenizers"),
    "st-torch": ("sentence-transformers", "torch", "transformers"),
    "st-onnx": ("sentence-transformers", "optimum-onnx", "onnxruntime"),
    "flashrank": ("flashrank", "onnxruntime", "tokenizers"),
}


@dataclass(frozen=True)
class SystemSpec:
    """One system of the comparison: how to load it and what it is."""

    name: str
    """Label in tables and JSON, e.g. ``rrdistill-int8``."""
    kind: str
    """One of :data:`KINDS`."""
    path: str
    """rrdistill: bundle; st-*: model folder; flashrank: its cache folder."""
    precision: str
    max_length: int
    passage_template: str = "{title} {text}"
    options: dict[str, Any] = field(default_factory=dict)
    """Kind-specific: ``file_name`` (st-onnx), ``model_name`` and ``model_file`` (flashrank)."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown system kind {self.kind!r}; expected one of {', '.join(KINDS)}")

    @property
    def import_module(self) -> str:
        return IMPORTS[self.kind]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SystemSpec:
        return cls(**data)


Group = tuple[str, Sequence["Passage"]]


class System:
    """Loaded system: score one query's passages, or many queries at once, in input order."""

    notes: list[str]

    def score_one(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        raise NotImplementedError

    def score_many(self, groups: Sequence[Group]) -> list[np.ndarray]:
        raise NotImplementedError

    def extra_stats(self) -> dict[str, Any]:
        return {}

    def profile_ops(self, query: str, passages: Sequence[Passage]) -> dict[str, Any] | None:
        """Model time by operator, where the system's engine can profile (None: it cannot)."""
        return None


def passage_texts(spec: SystemSpec, passages: Sequence[Passage]) -> list[str]:
    """Passages as the model reads them: the bundle's template, as the runtime applies it."""
    return [spec.passage_template.format(title=p.title, text=p.text).strip() for p in passages]


class RuntimeSystem(System):
    """The rrdistill runtime: ``Reranker.rerank`` / ``rerank_many`` on a bundle."""

    def __init__(self, spec: SystemSpec, threads: int, stopwatch: Stopwatch) -> None:
        import numpy as np

        from rrdistill.bench.instrument import TimedSession, TimedTokenizer
        from rrdistill.runtime import Reranker

        self._np = np
        self.threads = threads
        self.reranker = Reranker.load(spec.path, providers=["CPUExecutionProvider"], threads=threads)
        self._tokenizer = self.reranker.tokenizer
        self.reranker.session = TimedSession(self.reranker.session, stopwatch)
        self.reranker.tokenizer = TimedTokenizer(self.reranker.tokenizer, stopwatch)
        # the runtime measures each query with a second, untruncated tokenizer: that is tokenizing too
        self.reranker._query_tokenizer = TimedTokenizer(self.reranker._query_tokenizer, stopwatch)
        self.notes = [f"batch_size={self.reranker.default_batch_size} pairs, length-bucketed"]

    def _scores(self, results: Sequence[Any], size: int) -> np.ndarray:
        scores = self._np.empty(size, dtype=self._np.float32)
        for result in results:
            scores[result.index] = result.score
        return scores

    def score_one(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        return self._scores(self.reranker.rerank(query, passages), len(passages))

    def score_many(self, groups: Sequence[Group]) -> list[np.ndarray]:
        ranked = self.reranker.rerank_many(list(groups))
        return [self._scores(r, len(p)) for r, (_, p) in zip(ranked, groups, strict=True)]

    def extra_stats(self) -> dict[str, Any]:
        return {"runtime_stats": self.reranker.stats.to_dict()}

    def profile_ops(self, query: str, passages: Sequence[Passage]) -> dict[str, Any]:
        """Model time by operator type for one call, from onnxruntime's profiler (a second session
        with the same settings plus profiling; one warm-up call first, left out of the figures)."""
        import tempfile

        import onnxruntime as ort

        from rrdistill.bench.instrument import Stopwatch, TimedSession, operator_seconds
        from rrdistill.runtime.reranker import CrossEncoderReranker

        reranker = self.reranker
        with tempfile.TemporaryDirectory(prefix="rrdistill-profile-") as tmp:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = self.threads
            options.log_severity_level = 3
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(
                str(reranker.bundle / reranker.manifest.model.file),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            runs = Stopwatch()
            profiled = CrossEncoderReranker(
                reranker.bundle, reranker.manifest, TimedSession(session, runs), self._tokenizer
            )
            profiled.rerank(query, passages)
            warmup_runs = len(runs.shapes)
            profiled.rerank(query, passages)
            trace = json.loads(Path(session.end_profiling()).read_text())
        return operator_seconds(trace, skip_runs=warmup_runs)


class SentenceTransformersSystem(System):
    """sentence-transformers ``CrossEncoder.rank`` (one query) and ``predict`` (many), torch or ONNX."""

    def __init__(self, spec: SystemSpec, threads: int, stopwatch: Stopwatch) -> None:
        import numpy as np
        import torch
        from sentence_transformers import CrossEncoder

        from rrdistill.bench.instrument import time_torch_module

        self._np = np
        self.spec = spec
        torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {"device": "cpu", "max_length": spec.max_length}
        if spec.kind == "st-onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            model_kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
            if spec.options.get("file_name"):
                model_kwargs["file_name"] = spec.options["file_name"]
            kwargs.update(backend="onnx", model_kwargs=model_kwargs)
        self.model = CrossEncoder(spec.path, **kwargs)
        self.model.preprocess = stopwatch.timed("tokenize", self.model.preprocess)
        time_torch_module(self.model[0], stopwatch)
        self.batch_size = 32
        self.notes = [f"batch_size={self.batch_size} pairs (CrossEncoder default), length-sorted"]

    def score_one(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        ranked = self.model.rank(
            query, passage_texts(self.spec, passages), batch_size=self.batch_size, show_progress_bar=False
        )
        scores = self._np.empty(len(passages), dtype=self._np.float32)
        for item in ranked:
            scores[item["corpus_id"]] = item["score"]
        return scores

    def score_many(self, groups: Sequence[Group]) -> list[np.ndarray]:
        pairs = [(q, text) for q, passages in groups for text in passage_texts(self.spec, passages)]
        flat = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        flat = self._np.asarray(flat, dtype=self._np.float32).reshape(-1)
        out, start = [], 0
        for _, passages in groups:
            out.append(flat[start : start + len(passages)])
            start += len(passages)
        return out


@contextlib.contextmanager
def _flashrank_session_options(options: Any) -> Iterator[None]:
    """FlashRank builds ``ort.InferenceSession(path)`` with no options (so no thread setting):
    for the length of its constructor, its module sees an ``InferenceSession`` that adds ours."""
    import functools
    import types

    import onnxruntime as ort

    module = sys.modules["flashrank.Ranker"]
    original = module.ort
    module.ort = types.SimpleNamespace(
        InferenceSession=functools.partial(ort.InferenceSession, sess_options=options)
    )
    try:
        yield
    finally:
        module.ort = original


class FlashRankSystem(System):
    """FlashRank ``Ranker.rerank(RerankRequest)`` on a model laid out in its cache folder."""

    def __init__(self, spec: SystemSpec, threads: int, stopwatch: Stopwatch) -> None:
        import numpy as np
        import onnxruntime as ort
        from flashrank import Ranker

        from rrdistill.bench.instrument import TimedSession, TimedTokenizer

        self._np = np
        self.spec = spec
        config = importlib.import_module("flashrank.Config")
        name = spec.options["model_name"]
        # FlashRank loads only names listed in its model map; register ours (its files are local).
        config.model_file_map[name] = spec.options["model_file"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        with _flashrank_session_options(options):
            self.ranker = Ranker(
                model_name=name, cache_dir=spec.path, max_length=spec.max_length, log_level="WARNING"
            )
        self.ranker.session = TimedSession(self.ranker.session, stopwatch)
        self.ranker.tokenizer = TimedTokenizer(self.ranker.tokenizer, stopwatch)
        self.notes = [
            "one session run per query, padded to its longest pair",
            "ONNX session given the same thread count (FlashRank's constructor takes no session options)",
        ]

    def score_one(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        from flashrank import RerankRequest

        texts = passage_texts(self.spec, passages)
        request = RerankRequest(query=query, passages=[{"id": i, "text": t} for i, t in enumerate(texts)])
        ranked = self.ranker.rerank(request)
        scores = self._np.empty(len(passages), dtype=self._np.float32)
        for item in ranked:
            scores[item["id"]] = item["score"]
        return scores

    def score_many(self, groups: Sequence[Group]) -> list[np.ndarray]:
        # FlashRank's API takes one query per call.
        return [self.score_one(query, passages) for query, passages in groups]


ADAPTERS: dict[str, type[System]] = {
    "rrdistill": RuntimeSystem,
    "st-torch": SentenceTransformersSystem,
    "st-onnx": SentenceTransformersSystem,
    "flashrank": FlashRankSystem,
}


def open_system(spec: SystemSpec, threads: int, stopwatch: Stopwatch) -> System:
    return ADAPTERS[spec.kind](spec, threads, stopwatch)
