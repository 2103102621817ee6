"""Parity of an exported model with its source, measured at export time on real data.

The source is the checkpoint in transformers on torch, fp32 (a bi-encoder's: sentence-transformers'
own similarity of its embeddings, ``export/bi_encoder.py``). The exported side is whatever will
serve: the bundle as the runtime :class:`~rrdistill.runtime.Reranker` scores it (its tokenizer,
template, truncation, batching and execution provider). Both score the same BM25 candidate
lists of a BEIR split (by default SciFact test queries, as embedded in ``data/``), and we report:

- ``max_abs_diff`` / ``mean_abs_diff``: raw score differences (what fp32 export must keep ~0);
- ``kendall_tau_mean`` / ``kendall_tau_min``: per-query rank agreement (scipy's τ-b);
- ``ndcg@10`` of both rankings and their ``ndcg@10_delta`` (exported − source), with the qrels;
- ``top1_agreement``: the share of queries whose best passage is the same.

:func:`violations` compares a report with :class:`ParityThresholds` (defaults per precision);
``rrdistill export`` refuses a bundle that violates them unless drift is explicitly accepted.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.export import ExportError
from rrdistill.extras import require
from rrdistill.io import read_beir
from rrdistill.metrics import evaluate
from rrdistill.types import Passage, Qrels, Request

NDCG = "ndcg@10"


@dataclass(frozen=True)
class ParityConfig:
    """Which data parity is measured on."""

    data: Path = Path("data/scifact")
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    split: str = "test"
    queries: int = 30
    passages: int = 50
    """BM25 candidates per query (the lists a reranker sees in production)."""
    seed: int = 0
    """Seeds the choice of queries from the split."""
    batch_size: int | None = None
    """Pairs per runtime call (None: the runtime's default, as served). It matters for int8: dynamic
    quantization scales activations per batch, so a pair's score depends slightly on its batch."""


@dataclass(frozen=True)
class ParityThresholds:
    """Bounds a bundle must meet; ``None`` leaves a figure unchecked."""

    max_abs_diff: float | None = None
    min_mean_tau: float | None = None
    max_ndcg_delta: float | None = None
    """Bound on |nDCG@10(exported) − nDCG@10(source)|."""

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)


DEFAULT_THRESHOLDS = {
    "fp32": ParityThresholds(max_abs_diff=1e-3, min_mean_tau=0.999, max_ndcg_delta=1e-3),
    "fp16": ParityThresholds(max_abs_diff=None, min_mean_tau=0.98, max_ndcg_delta=0.01),
    "int8": ParityThresholds(max_abs_diff=None, min_mean_tau=0.85, max_ndcg_delta=0.02),
}
"""fp32 must be the same model; reduced precisions may reorder near-ties but not lose quality.

int8's τ floor is measured, not wished: all-MiniLM-L6-v2 fine-tuned on SciFact keeps a mean
Kendall τ of 0.886-0.901 over 30-50 candidates per query under dynamic int8 (per-channel, any of
onnxruntime's operator choices) while losing 0.7 nDCG@10 points; τ guards against a broken
graph (a wrong graph lands far below 0.5), nDCG@10 against a quality loss."""


@dataclass
class ParityReport:
    data: str
    queries: int
    pairs: int
    max_abs_diff: float
    mean_abs_diff: float
    kendall_tau_mean: float
    kendall_tau_min: float
    ndcg_source: float
    ndcg_exported: float
    top1_agreement: float
    seconds: float = 0.0
    qids: list[str] = field(default_factory=list)

    @property
    def ndcg_delta(self) -> float:
        return self.ndcg_exported - self.ndcg_source

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "queries": self.queries,
            "pairs": self.pairs,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "kendall_tau_mean": self.kendall_tau_mean,
            "kendall_tau_min": self.kendall_tau_min,
            f"{NDCG}_source": self.ndcg_source,
            f"{NDCG}_exported": self.ndcg_exported,
            f"{NDCG}_delta": self.ndcg_delta,
            "top1_agreement": self.top1_agreement,
            "seconds": round(self.seconds, 2),
            "qids": self.qids,
        }


@functools.lru_cache(maxsize=4)
def _parity_data(
    data: str, split: str, queries: int, passages: int, seed: int
) -> tuple[list[Request], Qrels]:
    from rrdistill.retrieve import BM25Retriever

    dataset = read_beir(data, split)
    pool = [q for q in dataset.split_queries() if q.qid in dataset.qrels]
    if not pool:
        raise ExportError(f"{data}: no judged queries in split {split!r}")
    chosen = sorted(np.random.default_rng(seed).permutation(len(pool))[: min(queries, len(pool))])
    selected = [pool[i] for i in chosen]
    requests = BM25Retriever(list(dataset.corpus.values())).search(selected, k=passages)
    requests = [r for r in requests if r.candidates]
    return requests, {r.qid: dataset.qrels[r.qid] for r in requests}


def parity_data(config: ParityConfig) -> tuple[list[Request], Qrels]:
    """BM25 top-`passages` lists for `queries` seeded judged queries of the split, and their qrels."""
    if not (Path(config.data) / "corpus.jsonl").is_file():
        raise ExportError(
            f"parity data {config.data} is not a BEIR folder (no corpus.jsonl); point it at one, "
            "e.g. the embedded data/scifact"
        )
    if config.queries < 1 or config.passages < 2:
        raise ExportError("parity needs at least 1 query and 2 passages per query")
    return _parity_data(
        str(Path(config.data).resolve()), config.split, config.queries, config.passages, config.seed
    )


def passage_text(template: str, passage: Passage) -> str:
    """A passage as the model reads it (the bundle's template, as the runtime applies it)."""
    return template.format(title=passage.title, text=passage.text).strip()


def capped_query(tokenizer: Any, query: str, max_length: int) -> str:
    """The query as the runtime feeds it: cut to ``max_length // 2`` tokens, so the passage keeps room."""
    budget = max(1, max_length // 2)
    encoding = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoding["input_ids"]) <= budget:
        return query
    return query[: encoding["offset_mapping"][budget - 1][1]]


def source_scores(
    checkpoint: str | os.PathLike[str],
    requests: Sequence[Request],
    *,
    max_length: int,
    passage_template: str,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Scores of the source checkpoint in transformers (torch, fp32, eval mode) for every candidate.

    Inputs are built as the runtime builds them (template, query cap, passage-only truncation),
    so any difference in the scores is the exported model's, not the input's.
    """
    torch = require("torch", "export", "parity checks")
    transformers = require("transformers", "export", "parity checks")
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        checkpoint, dtype=torch.float32
    ).eval()
    pairs = [
        (capped_query(tokenizer, request.query.text, max_length), passage_text(passage_template, c.passage))
        for request in requests
        for c in request.candidates
    ]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][1]))  # similar lengths share a batch
    flat = np.empty(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [pairs[i][0] for i in index],
                [pairs[i][1] for i in index],
                padding=True,
                truncation="only_second",
                max_length=max_length,
                return_tensors="pt",
            )
            flat[index] = model(**batch).logits[:, 0].float().numpy()
    return _split(flat, [len(r.candidates) for r in requests])


def _split(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    bounds = np.cumsum([0, *sizes])
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


def compare(
    requests: Sequence[Request],
    qrels: Qrels,
    reference: Sequence[np.ndarray],
    exported: Sequence[np.ndarray],
    *,
    data: str = "",
    seconds: float = 0.0,
) -> ParityReport:
    """Parity figures of `exported` against `reference` scores (aligned with each request's candidates)."""
    stats = require("scipy.stats", "export", "parity checks (Kendall τ)")
    if not requests:
        raise ExportError("parity needs at least one query with candidates")
    diffs, taus, top1 = [], [], []
    run_source: dict[str, dict[str, float]] = {}
    run_exported: dict[str, dict[str, float]] = {}
    for request, ref, got in zip(requests, reference, exported, strict=True):
        ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape or ref.size != len(request.candidates):
            raise ValueError(
                f"query {request.qid}: score arrays do not match its {len(request.candidates)} candidates"
            )
        diffs.append(np.abs(ref - got))
        tau = stats.kendalltau(ref, got).statistic
        # τ is undefined when a list has constant scores: agreement only if both are constant.
        taus.append(float(tau) if np.isfinite(tau) else float(np.ptp(ref) == np.ptp(got) == 0))
        top1.append(int(np.argmax(ref)) == int(np.argmax(got)))
        run_source[request.qid] = {c.docid: float(s) for c, s in zip(request.candidates, ref, strict=True)}
        run_exported[request.qid] = {c.docid: float(s) for c, s in zip(request.candidates, got, strict=True)}
    judged = {qid: qrels[qid] for qid in run_source if qid in qrels}
    all_diffs = np.concatenate(diffs)
    return ParityReport(
        data=data,
        queries=len(requests),
        pairs=int(all_diffs.size),
        max_abs_diff=float(all_diffs.max()),
        mean_abs_diff=float(all_diffs.mean()),
        kendall_tau_mean=float(np.mean(taus)),
        kendall_tau_min=float(np.min(taus)),
        ndcg_source=evaluate(run_source, judged, [NDCG]).means[NDCG] if judged else 0.0,
        ndcg_exported=evaluate(run_exported, judged, [NDCG]).means[NDCG] if judged else 0.0,
        top1_agreement=float(np.mean(top1)),
        seconds=seconds,
        qids=[r.qid for r in requests],
    )


def violations(report: ParityReport, thresholds: ParityThresholds) -> list[str]:
    """Human-readable reasons the report fails `thresholds` (empty: it passes)."""
    found = []
    if thresholds.max_abs_diff is not None and not report.max_abs_diff <= thresholds.max_abs_diff:
        found.append(f"max |Δscore| {report.max_abs_diff:.3g} > {thresholds.max_abs_diff:.3g}")
    if thresholds.min_mean_tau is not None and not report.kendall_tau_mean >= thresholds.min_mean_tau:
        found.append(f"mean Kendall τ {report.kendall_tau_mean:.4f} < {thresholds.min_mean_tau:.4f}")
    if thresholds.max_ndcg_delta is not None and not abs(report.ndcg_delta) <= thresholds.max_ndcg_delta:
        found.append(f"|Δ nDCG@10| {abs(report.ndcg_delta):.4f} > {thresholds.max_ndcg_delta:.4f}")
    return found


ScoreFn = Callable[[Sequence[tuple[str, Sequence[Passage]]]], list[np.ndarray]]
SourceScores = Callable[..., list[np.ndarray]]
"""``(checkpoint, requests, *, max_length, passage_template)`` → the source model's scores per request."""


def measure_parity(
    checkpoint: str | os.PathLike[str],
    score_exported: ScoreFn,
    config: ParityConfig,
    *,
    max_length: int,
    passage_template: str,
    reference_scores: SourceScores = source_scores,
) -> ParityReport:
    """Score the parity data with the source checkpoint (`reference_scores`: a cross-encoder's logits
    by default, a bi-encoder's similarities from ``export/bi_encoder.py``) and with `score_exported`."""
    started = time.perf_counter()
    requests, qrels = parity_data(config)
    reference = reference_scores(
        checkpoint,
        requests,
        max_length=max_length,
        passage_template=passage_template,
    )
    exported = score_exported([(r.query.text, [c.passage for c in r.candidates]) for r in requests])
    label = f"{Path(config.data).name}/{config.split}: {config.queries} queries x BM25 top-{config.passages}"
    return compare(requests, qrels, reference, exported, data=label, seconds=time.perf_counter() - started)
