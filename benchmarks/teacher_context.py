"""A stronger teacher from a longer trained context, chosen on dev: the reference recipe at several windows.

    python benchmarks/teacher_context.py RUN_DIR [--lengths 96 256] [--epochs 1.0] [--weights 0 0.1 … 1]
        [--json out.json]

RUN_DIR is a pipeline run folder (``just demo`` → runs/demo): its ``data/`` view (SciFact with the
dev queries carved out of train) and ``bm25/dev.jsonl`` (the dev queries' BM25 candidates). Each
length trains the reference's recipe (all-MiniLM-L6-v2, MNRL on the train qrels with BM25 hard
negatives; cached under RUN_DIR/study/context/ by config hash) and reranks the dev candidates at
that length, alone and fused with BM25 over the weight grid. Only dev queries are scored: this
chooses a teacher, it does not report one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rrdistill.distill.students.trainer import fixture_config, train_cross_encoder
from rrdistill.fusion import interpolate
from rrdistill.io import read_beir, read_requests
from rrdistill.pipeline.heldout import DEV_SPLIT, mean_ndcg_at_10
from rrdistill.reporting import print_table, progress_bar, write_json


def dev_scores(checkpoint: Path, requests: list, max_length: int) -> list:
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(checkpoint), num_labels=1, max_length=max_length, device="cpu")
    pairs = [(r.query.text, c.passage.full_text()) for r in requests for c in r.candidates]
    scores = model.predict(pairs, batch_size=32, show_progress_bar=True)
    out, start = [], 0
    for request in requests:
        out.append(scores[start : start + len(request.candidates)])
        start += len(request.candidates)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--lengths", type=int, nargs="+", default=[96, 256])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--weights", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    data = args.run_dir / "data"
    requests = list(read_requests(args.run_dir / "bm25" / "dev.jsonl"))
    qrels = read_beir(data, DEV_SPLIT).qrels
    trained_on = set(read_beir(data, "train").qrels)
    leaked = trained_on & {r.qid for r in requests}
    if leaked:
        raise SystemExit(f"dev queries in the training split: {sorted(leaked)[:5]}")
    first = [[c.score for c in r.candidates] for r in requests]
    bm25 = mean_ndcg_at_10(((r.qid, r.docids, s) for r, s in zip(requests, first, strict=True)), qrels)
    results, rows = [], []
    for length in args.lengths:
        config = fixture_config(data, max_length=length, epochs=args.epochs)
        with progress_bar() as bar:
            task = bar.add_task(f"reference recipe at {length} tokens", total=None)
            trained = train_cross_encoder(
                config,
                args.run_dir / "study" / "context",
                progress=lambda step, total, task=task: bar.update(task, completed=step, total=total),
            )
        scores = dev_scores(trained.path, requests, length)
        by_weight = {
            weight: mean_ndcg_at_10(
                (
                    (r.qid, r.docids, interpolate(f, s, weight))
                    for r, f, s in zip(requests, first, scores, strict=True)
                ),
                qrels,
            )
            for weight in args.weights
        }
        best = max(by_weight, key=lambda w: (by_weight[w], -abs(w - 1.0)))
        results.append(
            {
                "max_length": length,
                "checkpoint": str(trained.path),
                "train_seconds": trained.info["timing"]["train_seconds"],
                "alone": by_weight.get(1.0),
                "by_weight": by_weight,
                "best_weight": best,
            }
        )
        rows.append(
            (
                str(length),
                f"{by_weight.get(1.0, float('nan')):.4f}",
                f"{by_weight[best]:.4f} (w={best})",
                f"{trained.info['timing']['train_seconds']:.0f}",
            )
        )
    rows.append(("bm25", f"{bm25:.4f}", "–", "–"))
    print_table(
        f"the reference recipe by trained window: {len(requests)} dev queries × BM25 top-"
        f"{max(len(r.candidates) for r in requests)}",
        ["max_length", "alone nDCG@10", "fused (best w)", "train s"],
        rows,
    )
    if args.json:
        write_json(args.json, {"dev_queries": [r.qid for r in requests], "bm25": bm25, "lengths": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
