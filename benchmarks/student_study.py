"""Students that beat BM25 on their own? A teacher and student recipes × sizes, chosen on dev, judged on test.

    python benchmarks/student_study.py RUN_DIR [--teacher-length 256 | --teacher CHECKPOINT] [--lengths 256]
        [--blocks 2 3 4 6] [--losses listmle margin-mse] [--baseline] [--queries N] [--json out.json]

RUN_DIR is a pipeline run folder (``just demo`` → runs/demo): its ``data/`` view (SciFact with the dev
queries carved out of train) and its BM25 candidates (``bm25/dev.jsonl``, ``eval.jsonl``,
``label.jsonl``). Everything the study makes is cached under RUN_DIR/study/ by content hash, so a
rerun (or a longer grid) redoes nothing.

1. **Teacher**: the reference recipe (all-MiniLM-L6-v2, MNRL on the train qrels with BM25 hard
   negatives) trained at ``--teacher-length`` tokens — a passage cut at 96 tokens hides most of a
   SciFact abstract from every model (``benchmarks/bm25_context.py``) — exported to an fp32
   bundle and fused with BM25 at the weight that is best on dev (``--teacher`` takes any trained
   cross-encoder checkpoint instead, e.g. the run's own reference).
2. **Labels**: the fused teacher reranks the run's labelling queries (BM25 top-k of train queries),
   keeping its scores (MarginMSE reads them).
3. **Students**: every loss × length × block count starts from blocks of the teacher (its head
   included), is distilled on those labels, exported to int8 and scored through the runtime; with
   ``--baseline`` the same architecture is trained on the qrels alone.

Every figure a choice rests on is a dev figure (the fusion weights; the student marked ``chosen``);
test queries are scored once per system and choose nothing. Rows give nDCG@10 alone and fused,
the paired Δ against BM25 on test with a bootstrap interval, the share of the teacher's test
nDCG@10 the student keeps, and ms per query of each bundle through the runtime (teacher fp32,
students int8: the speed-up a deployment sees).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.bench.stats import paired_delta_by_query
from rrdistill.distill.students.cross_encoder import (
    CrossEncoderStudentConfig,
    distill_cross_encoder,
    supervised_baseline_config,
)
from rrdistill.distill.students.label import bundle_reranker, label_requests
from rrdistill.distill.students.trainer import fixture_config, train_cross_encoder
from rrdistill.export.pipeline import ExportConfig, export_bundle
from rrdistill.export.validate import ParityConfig
from rrdistill.fusion import fused_reranker, interpolate
from rrdistill.io import read_beir, read_requests
from rrdistill.pipeline.heldout import DEV_SPLIT, ndcg_at_10_by_query
from rrdistill.reporting import print_table, progress_bar, write_json
from rrdistill.runtime.bundle import load_manifest

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class Scored:
    """One bundle's scores on one query set, aligned with each request's candidates."""

    scores: list[np.ndarray]
    ms_per_query: float


@dataclass
class Row:
    name: str
    kind: str
    length: int
    blocks: int
    dev: dict[float, float] = field(default_factory=dict)
    """Dev nDCG@10 by fusion weight (1.0: alone)."""
    test_alone: dict[str, float] = field(default_factory=dict)
    test_fused: dict[str, float] = field(default_factory=dict)
    weight: float = 1.0
    ms_per_query: float = 0.0
    train_seconds: float = 0.0
    bundle: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "max_length": self.length,
            "blocks": self.blocks,
            "dev_alone": self.dev.get(1.0),
            "dev_by_weight": self.dev,
            "fusion_weight": self.weight,
            "test_alone": mean(self.test_alone),
            "test_fused": mean(self.test_fused),
            "ms_per_query": self.ms_per_query,
            "train_seconds": self.train_seconds,
            "bundle": self.bundle,
        }


def mean(per_query: dict[str, float]) -> float:
    return float(np.mean(list(per_query.values()))) if per_query else float("nan")


def per_query_ndcg(requests: list[Any], scores: list[np.ndarray], qrels: dict) -> dict[str, float]:
    return ndcg_at_10_by_query(
        ((r.qid, r.docids, values) for r, values in zip(requests, scores, strict=True)), qrels
    )


def bm25_scores(requests: list[Any]) -> list[np.ndarray]:
    return [np.asarray([c.score for c in r.candidates], dtype=np.float64) for r in requests]


def score_bundle(bundle: Path, requests: list[Any]) -> Scored:
    """The bundle's scores through the runtime (what a deployment runs), in candidate order."""
    from rrdistill.runtime import Reranker

    reranker = Reranker.load(bundle)
    started = time.perf_counter()
    ranked_lists = reranker.rerank_many(requests)
    seconds = time.perf_counter() - started
    scores = []
    for request, ranked in zip(requests, ranked_lists, strict=True):
        values = np.zeros(len(request.candidates))
        for item in ranked:
            values[item.index] = item.score
        scores.append(values)
    return Scored(scores, 1000 * seconds / max(len(requests), 1))


def export(checkpoint: Path, bundle: Path, precision: str, data: Path) -> Path:
    if not (bundle / "rrdistill.json").is_file():
        export_bundle(
            checkpoint,
            bundle,
            ExportConfig(
                precision=precision,
                overwrite=True,
                accept_drift=True,
                parity=ParityConfig(data=data, split=DEV_SPLIT, queries=4, passages=10),
            ),
        )
    return bundle


def judge(row: Row, bundle: Path, sets: dict[str, Any]) -> Row:
    """`row` scored on dev (alone and over the fusion grid) and, once, on test at its dev weight."""
    dev_requests, dev_qrels, dev_bm25 = sets["dev"]
    test_requests, test_qrels, test_bm25 = sets["test"]
    dev = score_bundle(bundle, dev_requests)
    for weight in WEIGHTS:
        fused = [interpolate(b, s, weight) for b, s in zip(dev_bm25, dev.scores, strict=True)]
        row.dev[weight] = mean(per_query_ndcg(dev_requests, fused, dev_qrels))
    row.weight = max(WEIGHTS, key=lambda w: (row.dev[w], w))
    test = score_bundle(bundle, test_requests)
    row.ms_per_query, row.bundle = test.ms_per_query, str(bundle)
    row.test_alone = per_query_ndcg(test_requests, test.scores, test_qrels)
    fused = [interpolate(b, s, row.weight) for b, s in zip(test_bm25, test.scores, strict=True)]
    row.test_fused = per_query_ndcg(test_requests, fused, test_qrels)
    return row


def versus(candidate: dict[str, float], anchor: dict[str, float]) -> dict[str, float] | None:
    """Paired Δ nDCG@10 (candidate − anchor) over their shared queries, with a bootstrap interval."""
    delta = paired_delta_by_query(candidate, anchor)
    return None if delta is None else delta.to_json()


def shown(d: dict[str, float] | None) -> str:
    return "–" if d is None else f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def report(
    rows: list[Row],
    sets: dict[str, Any],
    path: Path | None,
    settings: dict[str, Any],
    started: float,
    *,
    table: bool = False,
) -> None:
    """The study so far as JSON (after every row) and, at the end, as a table."""
    bm25_test = per_query_ndcg(sets["test"][0], sets["test"][2], sets["test"][1])
    bm25_dev = mean(per_query_ndcg(sets["dev"][0], sets["dev"][2], sets["dev"][1]))
    teacher = rows[0]
    students = [r for r in rows if r.kind not in ("teacher", "baseline")]
    chosen = max(students, key=lambda r: r.dev[1.0]).name if students else None
    baselines = {(r.length, r.blocks): r for r in rows if r.kind == "baseline"}
    payload_rows = []
    for r in rows:
        baseline = baselines.get((r.length, r.blocks)) if r.kind != "baseline" else None
        payload_rows.append(
            {
                **r.to_json(),
                "vs_bm25": versus(r.test_alone, bm25_test),
                "vs_baseline": versus(r.test_alone, baseline.test_alone) if baseline else None,
                "of_teacher": mean(r.test_alone) / mean(teacher.test_fused),
                "speedup_vs_teacher": teacher.ms_per_query / r.ms_per_query,
            }
        )
    queries = {k: f"{len(v[0])} × BM25 top-{max(len(r.candidates) for r in v[0])}" for k, v in sets.items()}
    if path is not None:
        write_json(
            path,
            {
                "settings": settings,
                "queries": queries,
                "bm25": {"dev": bm25_dev, "test": mean(bm25_test)},
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    run, study = args.run_dir, args.run_dir / "study"
    data = run / "data"
    trained_on = set(read_beir(data, "train").qrels)
    if trained_on & set(read_beir(data, DEV_SPLIT).qrels):
        raise SystemExit(f"{data}: dev queries are in the training split")
    sets = {}
    test = args.test or run / "bm25" / "eval.jsonl"
    for name, requests_file, split in (
        ("dev", run / "bm25" / "dev.jsonl", DEV_SPLIT),
        ("test", test, "test"),
    ):
        requests = list(read_requests(requests_file))
        sets[name] = (requests, read_beir(data, split).qrels, bm25_scores(requests))
    if trained_on & {r.qid for r in sets["test"][0]}:
        raise SystemExit(f"{test}: holds training queries")
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
    teacher_row = Row("teacher", "teacher", load_manifest(teacher_bundle).inputs.max_length, blocks)
    teacher_row = judge(teacher_row, teacher_bundle, sets)
    teacher_row.train_seconds = teacher_seconds
    print(
        f"teacher: dev alone {teacher_row.dev[1.0]:.4f}, fused {teacher_row.dev[teacher_row.weight]:.4f} "
        f"(w = {teacher_row.weight})"
    )

    # 2. the teacher's labels (scores kept) on the run's labelling queries
    labels = study / "labels" / f"{teacher_path.name}-w{teacher_row.weight}.jsonl"
    labels.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar() as bar:
        task = bar.add_task("labelling with the fused teacher", total=None)
        rerank = fused_reranker(bundle_reranker(teacher_bundle), teacher_row.weight)
        label_requests(
            run / "bm25" / "label.jsonl",
            labels,
            rerank,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )

    # 3. students (and baselines) by loss × length × blocks
    rows = [teacher_row]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for length in args.lengths:
        for blocks in args.blocks:
            recipes: list[tuple[str, CrossEncoderStudentConfig | None]] = []
            for loss in args.losses:
                config = CrossEncoderStudentConfig(
                    base_model=str(teacher_path),
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
                recipes.append((loss, config))
            if args.baseline:
                recipes.append(("baseline", None))
            for kind, config in recipes:
                name = f"{kind}-{length}t-{blocks}b"
                with progress_bar() as bar:
                    task = bar.add_task(name, total=None)

                    def tick(done: int, total: int, task: int = task) -> None:
                        bar.update(task, completed=done, total=total)

                    if config is None:
                        student = recipes[0][1]
                        assert student is not None
                        base = supervised_baseline_config(student, study / "students")
                        trained = train_cross_encoder(base, study / "students", progress=tick)
                    else:
                        trained = distill_cross_encoder(config, study / "students", progress=tick)
                bundle = export(trained.path, study / "bundles" / f"{trained.path.name}-int8", "int8", data)
                row = judge(Row(name, kind, length, blocks), bundle, sets)
                row.train_seconds = trained.info["timing"]["train_seconds"]
                rows.append(row)
                print(f"{name}: dev alone {row.dev[1.0]:.4f}, test alone {mean(row.test_alone):.4f}")
                report(rows, sets, args.json, settings, started)  # what is done survives a crash

    report(rows, sets, args.json, settings, started, table=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
