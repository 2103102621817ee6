"""Milliseconds per query of bundles side by side: the same requests, the same runtime, one run.

    python benchmarks/bundle_speed.py REQUESTS NAME=BUNDLE[+BUNDLE…] [NAME=…] [--queries 20]
        [--rounds 3] [--threads 2] [--json out.json]

Each system reranks the first ``--queries`` requests of REQUESTS one query per call (what a
service sees: one query and its candidates), through :class:`rrdistill.runtime.Reranker`. A system
of several bundles joined by ``+`` runs them all on every query (an ensemble: a cross-encoder and a
bi-encoder teacher) and its time is the sum. Rounds are interleaved, the order of the systems
rotated each round, so a machine that slows down mid-run slows every system alike; the table gives
the median and the mean over all timed calls and each system's speed-up against the first one.
Timings belong here, not in a study that trains while it scores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rrdistill.io import read_requests
from rrdistill.reporting import print_table, write_json
from rrdistill.runtime import Reranker


@dataclass
class System:
    name: str
    bundles: list[Path]
    rerankers: list[Any] = field(default_factory=list)
    calls_ms: list[float] = field(default_factory=list)

    def run(self, request: Any) -> float:
        """One query through every bundle of the system; milliseconds."""
        started = time.perf_counter()
        for reranker in self.rerankers:
            reranker.rerank_many([request])
        return 1000 * (time.perf_counter() - started)


def system_argument(value: str) -> System:
    name, sep, bundles = value.partition("=")
    if not sep or not name or not bundles:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=BUNDLE or NAME=BUNDLE+BUNDLE")
    return System(name, [Path(b) for b in bundles.split("+")])


def measure(systems: list[System], requests: list[Any], rounds: int, threads: int | None) -> None:
    for system in systems:
        system.rerankers = [Reranker.load(b, threads=threads) for b in system.bundles]
        system.run(requests[0])  # untimed: first-call allocations
    for round_index in range(rounds):
        shift = round_index % len(systems)
        for system in systems[shift:] + systems[:shift]:
            system.calls_ms.extend(system.run(r) for r in requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", type=Path, help="request JSONL (e.g. BM25 top 50 of test queries)")
    parser.add_argument("systems", type=system_argument, nargs="+", metavar="NAME=BUNDLE[+BUNDLE]")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    requests = list(islice(read_requests(args.requests), args.queries))
    if not requests:
        raise SystemExit(f"{args.requests}: no requests")
    measure(args.systems, requests, args.rounds, args.threads)
    reference = statistics.median(args.systems[0].calls_ms)
    rows = [
        {
            "system": s.name,
            "bundles": [str(b) for b in s.bundles],
            "kinds": [r.kind for r in s.rerankers],
            "precisions": [r.manifest.precision for r in s.rerankers],
            "median_ms_per_query": statistics.median(s.calls_ms),
            "mean_ms_per_query": statistics.fmean(s.calls_ms),
            "speedup_vs_first": reference / statistics.median(s.calls_ms),
            "calls": len(s.calls_ms),
        }
        for s in args.systems
    ]
    passages = statistics.fmean(len(r.candidates) for r in requests)
    print_table(
        f"ms per query ({len(requests)} queries × {passages:.0f} passages, {args.rounds} interleaved rounds)",
        ["system", "bundles", "median ms", "mean ms", f"speed-up vs {args.systems[0].name}"],
        [
            (
                r["system"],
                " + ".join(f"{k} {p}" for k, p in zip(r["kinds"], r["precisions"], strict=True)),
                f"{r['median_ms_per_query']:.0f}",
                f"{r['mean_ms_per_query']:.0f}",
                f"{r['speedup_vs_first']:.2f}×",
            )
            for r in rows
        ],
    )
    if args.json:
        write_json(
            args.json,
            {
                "requests": str(args.requests),
                "queries": len(requests),
                "rounds": args.rounds,
                "threads": args.threads,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
