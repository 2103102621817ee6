"""Compare the distillation losses in one run: same teacher labels, same student, same budget.

    python benchmarks/student_losses.py [--run runs/demo] [--queries 200] [--list-size 10] [--json out.json]

Reads the labels, the student's base model and the evaluation requests of a pipeline run
(`just demo` makes them), distills one student per loss (RankNet on 1/rank, weighted RankNet,
ListNet, ListMLE, PListMLE, LambdaLoss, ADR-MSE, MarginMSE on the teacher's scores) plus the
supervised baseline of the same architecture, exports each to an fp32 bundle and reranks the
evaluation queries through the runtime. Prints nDCG@10 / Recall@10 per loss and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from rrdistill.distill.cross_encoder import train_cross_encoder
from rrdistill.distill.label import bundle_reranker
from rrdistill.distill.students import (
    STUDENT_LOSSES,
    CrossEncoderStudentConfig,
    distill_cross_encoder,
    supervised_baseline_config,
)
from rrdistill.export.pipeline import ExportConfig, export_bundle
from rrdistill.export.validate import ParityConfig
from rrdistill.io import read_beir
from rrdistill.pipeline.systems import run_metrics
from rrdistill.reporting import print_table, progress_bar, write_json
from rrdistill.rerank import rerank_file


def evaluate(checkpoint: Path, bundle: Path, requests: Path, qrels: dict, data: Path) -> dict[str, float]:
    export_bundle(
        checkpoint,
        bundle,
        ExportConfig(
            overwrite=True, accept_drift=True, parity=ParityConfig(data=data, queries=4, passages=10)
        ),
    )
    out, trec = bundle.with_suffix(".jsonl"), bundle.with_suffix(".trec")
    out.unlink(missing_ok=True)
    job = rerank_file(requests, out, bundle_reranker(bundle), trec_path=trec)
    metrics, _, queries = run_metrics(trec, qrels)
    return {**metrics, "queries": queries, "ms_per_query": 1000 * job.seconds / max(job.reranked, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a pipeline run folder")
    parser.add_argument("--data", type=Path, default=Path("data/scifact"))
    parser.add_argument("--base-model", type=Path, default=None, help="default: the packaged MiniLM-L6")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200, help="labelled queries to train on")
    parser.add_argument("--list-size", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--losses", nargs="*", default=list(STUDENT_LOSSES))
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: RUN/loss-comparison)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    out = args.out or args.run / "loss-comparison"
    base = args.base_model
    if base is None:
        from rrdistill.distill.cross_encoder import fixture_config

        base = Path(fixture_config(args.data).base_model)
    student = CrossEncoderStudentConfig(
        base_model=str(base),
        labels=str(args.run / "labels" / "train.jsonl"),
        requests=str(args.run / "bm25" / "label.jsonl"),
        data=str(args.data),
        layers=args.layers,
        list_size=args.list_size,
        max_queries=args.queries,
        epochs=args.epochs,
        name="student",
    )
    requests = args.run / "bm25" / "eval.jsonl"
    qrels = read_beir(args.data, "test").qrels
    rows, payload = [], {"settings": vars(args) | {"base_model": str(base)}, "results": {}}
    systems = [
        (loss, replace(student, loss=loss, targets=None, name=f"student-{loss}")) for loss in args.losses
    ]
    with progress_bar() as bar:
        for name, config in [*systems, ("supervised baseline", None)]:
            task = bar.add_task(name, total=None)

            def tick(done: int, total: int, task: int = task) -> None:
                bar.update(task, completed=done, total=total)

            started = time.perf_counter()
            if config is None:
                trained = train_cross_encoder(supervised_baseline_config(student, out), out, progress=tick)
            else:
                trained = distill_cross_encoder(config, out, progress=tick)
            seconds = time.perf_counter() - started
            metrics = evaluate(
                trained.path, out / "bundles" / name.replace(" ", "-"), requests, qrels, args.data
            )
            payload["results"][name] = {
                **metrics,
                "train_seconds": trained.info["timing"]["train_seconds"],
                "checkpoint": str(trained.path),
            }
            rows.append(
                (
                    name,
                    f"{metrics['ndcg@10']:.4f}",
                    f"{metrics['recall@10']:.4f}",
                    f"{trained.info['timing']['train_seconds']:.0f}",
                    "cached" if trained.cached else f"{seconds:.0f}",
                )
            )
    print_table(
        f"Distillation losses: {args.layers}-layer student, {args.queries} labelled queries × top {args.list_size}, "
        f"{args.epochs:g} epoch(s); eval {payload['results'][rows[0][0]]['queries']} test queries × BM25 top-100",
        ["loss", "nDCG@10", "R@10", "train s", "wall s"],
        rows,
    )
    if args.json:
        write_json(args.json, payload)
    else:
        print(
            json.dumps(
                {k: {m: v[m] for m in ("ndcg@10", "recall@10")} for k, v in payload["results"].items()}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
