"""Compare the distillation losses in one run: same teacher labels, same student, same budget.

    python benchmarks/student_losses.py [--config configs/pipeline/demo.yaml] [--losses ranknet listmle …]
        [--queries N] [--json out.json]

Takes the student of a pipeline run exactly as the run trains it (`just demo` makes the labels,
the reference it starts from and the evaluation requests; the config's ``cross_encoder`` section
gives layers, learning rates, list size and epochs) and changes only the loss: RankNet on
1/rank, weighted RankNet, ListNet, ListMLE, PListMLE, LambdaLoss, ADR-MSE, MarginMSE on the
teacher's scores. Adds the supervised baseline of the same architecture, exports each to an
fp32 bundle and reranks the run's evaluation queries through the runtime. Prints nDCG@10 /
Recall@10 per loss and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from rrdistill.config import load_config
from rrdistill.distill.students.cross_encoder import (
    distill_cross_encoder,
    supervised_baseline_config,
    with_loss,
)
from rrdistill.distill.students.label import bundle_reranker
from rrdistill.distill.students.losses import STUDENT_LOSSES
from rrdistill.distill.students.trainer import train_cross_encoder
from rrdistill.export.pipeline import ExportConfig, export_bundle
from rrdistill.export.validate import ParityConfig
from rrdistill.pipeline.config import PipelineConfig
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.student_steps import student_config
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
    parser.add_argument("--config", type=Path, default=Path("configs/pipeline/demo.yaml"))
    parser.add_argument("--run", type=Path, default=None, help="the run folder (default: the config's)")
    parser.add_argument(
        "--queries", type=int, default=None, help="labelled queries to train on (default: the run's)"
    )
    parser.add_argument("--losses", nargs="*", default=list(STUDENT_LOSSES))
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: RUN/loss-comparison)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    settings = load_config(PipelineConfig, args.config)
    if args.run is not None:
        settings.run_dir = str(args.run.resolve())
    ctx = PipelineContext(settings)
    out = args.out or ctx.layout.root / "loss-comparison"
    student = student_config(ctx)
    if args.queries is not None:
        student = replace(student, max_queries=args.queries)
    requests = ctx.layout.eval_requests
    qrels = ctx.eval_qrels
    settings_json = {"config": str(args.config), "run": str(ctx.layout.root), "losses": args.losses}
    settings_json["student"] = asdict(student)
    rows, payload = [], {"settings": settings_json, "results": {}}
    systems = [(loss, with_loss(student, loss)) for loss in args.losses]
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
                trained.path, out / "bundles" / name.replace(" ", "-"), requests, qrels, ctx.data
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
        f"Distillation losses: {student.layers or 'all'}-layer student, "
        f"{student.max_queries or 'all'} labelled queries × top {student.list_size}, {student.epochs:g} epoch(s); "
        f"eval {payload['results'][rows[0][0]]['queries']} queries × BM25 top-{settings.eval.top_k}",
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
