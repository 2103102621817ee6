"""Long passages: truncation (FirstP) against scoring them whole (MaxP), same bundle, same run.

    python benchmarks/long_passages.py BUNDLE REQUESTS.jsonl DATA [--strides 24 48] [--max-chunks 16]
        [--threads 2] [--json out.json]

REQUESTS is a retrieval file (``rrdistill retrieve DATA --split test --top-k 100 -o …``), DATA the
collection whose qrels judge it. Every setting reranks every request through the runtime in one
process, so docs/s are side by side; quality is nDCG@10 with a paired bootstrap interval against
truncation. The bundle keeps its own ``max_length``: MaxP changes only how much of each passage
is read, not the window the model was trained on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rrdistill.bench.stats import paired_delta
from rrdistill.io import read_beir, read_requests
from rrdistill.metrics import ndcg_at_k
from rrdistill.reporting import print_table, progress_bar, write_json
from rrdistill.runtime import Chunking, Reranker


def measure(bundle: Path, requests: list, qrels: dict, chunking: Chunking, threads: int | None) -> dict:
    reranker = Reranker.load(bundle, threads=threads, chunking=chunking)
    per_query, started = {}, time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"{chunking.mode} stride={chunking.stride}", total=len(requests))
        for request in requests:
            (ranked,) = reranker.rerank_many([request])
            per_query[request.query.qid] = ndcg_at_k([r.id for r in ranked], qrels[request.query.qid], 10)
            progress.advance(task)
    seconds = time.perf_counter() - started
    stats = reranker.stats.to_dict()
    docs = sum(len(r.candidates) for r in requests)
    return {
        "mode": "MaxP" if chunking.mode == "max" else "FirstP (truncate)",
        "stride": chunking.overlap(reranker.max_length) if chunking.mode == "max" else None,
        "max_length": reranker.max_length,
        "ndcg@10": sum(per_query.values()) / len(per_query),
        "docs_per_second": docs / seconds,
        "model_inputs_per_doc": (stats["pairs"] + stats["extra_chunks"]) / stats["pairs"],
        "truncated_passages": stats["truncated_passages"],
        "chunked_passages": stats["chunked_passages"],
        "per_query": per_query,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("requests", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=None, help="the first N judged requests")
    parser.add_argument("--strides", type=int, nargs="+", default=[None], help="MaxP overlaps in tokens")
    parser.add_argument("--max-chunks", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    qrels = read_beir(args.data, args.split).qrels
    requests = [r for r in read_requests(args.requests) if r.query.qid in qrels][: args.queries]
    settings = [Chunking("first")] + [Chunking("max", stride, args.max_chunks) for stride in args.strides]
    rows = [measure(args.bundle, requests, qrels, chunking, args.threads) for chunking in settings]
    truncate = rows[0]
    qids = sorted(truncate["per_query"])
    for row in rows:
        delta = paired_delta([row["per_query"][q] for q in qids], [truncate["per_query"][q] for q in qids])
        row["delta_vs_truncate"] = delta.to_json()
        row["speed_vs_truncate"] = row["docs_per_second"] / truncate["docs_per_second"]
    print_table(
        f"{args.bundle.name}: {len(requests)} queries × {args.requests.name}",
        ["passages", "stride", "nDCG@10", "Δ vs truncate [95% CI]", "docs/s", "× speed", "inputs/doc", "cut"],
        [
            [
                row["mode"],
                "—" if row["stride"] is None else str(row["stride"]),
                f"{row['ndcg@10']:.4f}",
                "—"
                if row is truncate
                else f"{row['delta_vs_truncate']['mean']:+.4f} "
                f"[{row['delta_vs_truncate']['low']:+.4f}, {row['delta_vs_truncate']['high']:+.4f}]",
                f"{row['docs_per_second']:.0f}",
                f"{row['speed_vs_truncate']:.2f}",
                f"{row['model_inputs_per_doc']:.2f}",
                str(row["truncated_passages"]),
            ]
            for row in rows
        ],
    )
    if args.json:
        write_json(
            args.json,
            {
                "bundle": str(args.bundle),
                "requests": str(args.requests),
                "queries": len(requests),
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
