"""One measurement in a fresh interpreter: ``python -m rrdistill.bench.worker SPEC.json OUT.json``.

A fresh process per system keeps the numbers honest: its load time and peak RSS (the kernel's
high-water mark of its own address space, see :func:`peak_rss_mb`) are its own, and torch loaded
by a peer (or by the parent, to prepare a peer's model) never inflates the runtime's memory. Tasks (``SPEC["task"]``):

- ``system``: load one system, warm it up, then time the two workloads — one query × its passages
  (``single``) and ``batch_queries`` queries at once (``batch``, which also yields the scores of
  every query for nDCG@10); record where the time went (:mod:`rrdistill.bench.instrument`);
- ``gemm``: the machine's GEMM peak (:mod:`rrdistill.bench.gemm`) with the same thread count.

The result is written as JSON to OUT (write-then-rename); a failure is written there too, with
the error, so the parent reports *why* a system could not run.

Module-level imports are standard library only, so nothing is loaded before a system's own
libraries are imported and timed.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process's own
    address space, which starts afresh at ``exec``. ``getrusage(RUSAGE_SELF).ru_maxrss`` does not:
    Linux carries the parent's peak across ``fork`` + ``exec``, so a worker started by a parent that
    had imported torch would report torch's memory. Elsewhere ``ru_maxrss`` is all there is.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _workload(stopwatch: Any, calls: list[Any], score: Callable[[Any], Any]) -> dict[str, Any]:
    """Time each call; per call: latency, seconds per section, padded model shapes, and scores."""
    latencies, sections, shapes, outputs = [], [], [], []
    for call in calls:
        stopwatch.reset()
        started = time.perf_counter()
        result = score(call)
        latencies.append(time.perf_counter() - started)
        sections.append(dict(stopwatch.seconds))
        shapes.append(list(stopwatch.shapes))
        outputs.append(result)
    return {"latencies": latencies, "sections": sections, "shapes": shapes, "outputs": outputs}


def run_system(spec_data: dict[str, Any]) -> dict[str, Any]:
    import importlib

    from rrdistill.bench.instrument import Stopwatch
    from rrdistill.bench.systems import IMPORTS, SystemSpec

    spec = SystemSpec.from_json(spec_data["system"])
    threads = int(spec_data["threads"])
    rss: dict[str, float] = {"start": peak_rss_mb()}

    started = time.perf_counter()
    importlib.import_module(IMPORTS[spec.kind])  # the system's own import, first and alone
    import_seconds = time.perf_counter() - started
    rss["after_import"] = peak_rss_mb()

    from rrdistill.bench.systems import open_system

    stopwatch = Stopwatch()
    started = time.perf_counter()
    system = open_system(spec, threads, stopwatch)
    load_seconds = time.perf_counter() - started
    rss["after_load"] = peak_rss_mb()

    from rrdistill.io import read_requests

    requests = list(read_requests(spec_data["requests"]))
    groups = [(r.query.text, [c.passage for c in r.candidates]) for r in requests]
    rss["after_data"] = peak_rss_mb()

    warmup, repeats = int(spec_data["warmup"]), int(spec_data["repeats"])
    single_calls = [groups[i % len(groups)] for i in range(repeats)]
    for i in range(warmup):
        system.score_one(*groups[i % len(groups)])
    single = _workload(stopwatch, single_calls, lambda group: system.score_one(*group))
    rss["after_single"] = peak_rss_mb()
    size = min(int(spec_data["batch_queries"]), len(groups))
    batch_index = [list(range(i, min(i + size, len(groups)))) for i in range(0, len(groups), size)]
    batch_calls = [[groups[j] for j in index] for index in batch_index]
    batch = _workload(stopwatch, batch_calls, system.score_many)
    rss["peak"] = peak_rss_mb()  # before the profiling session below adds its own memory
    op_profile = system.profile_ops(*groups[0]) if spec_data.get("profile_ops") else None

    scores = {
        request.qid: [float(s) for s in array]
        for request, array in zip(requests, (a for out in batch.pop("outputs") for a in out), strict=True)
    }
    single.pop("outputs")
    # A last, smaller batch is scored (for nDCG) but left out of the timings of the full ones.
    batch["timed"] = [len(call) == size for call in batch_calls]
    batch["queries"] = batch_index
    batch["docs"] = [sum(len(p) for _, p in call) for call in batch_calls]
    single["timed"] = [True] * len(single_calls)
    single["queries"] = [[i % len(groups)] for i in range(repeats)]
    single["docs"] = [len(p) for _, p in single_calls]
    return {
        "status": "ok",
        "import_seconds_in_worker": import_seconds,
        "load_seconds": load_seconds,
        "rss_mb": rss,
        "single": single,
        "batch": batch,
        "batch_queries": size,
        "scores": scores,
        "notes": system.notes,
        "extra": system.extra_stats(),
        "op_profile": op_profile,
    }


def run_gemm(spec_data: dict[str, Any]) -> dict[str, Any]:
    from rrdistill.bench.gemm import GemmConfig, measure_peaks

    config = GemmConfig(**spec_data["gemm"])
    return {"status": "ok", "peaks": [p.to_json() for p in measure_peaks(config, int(spec_data["threads"]))]}


TASKS = {"system": run_system, "gemm": run_gemm}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m rrdistill.bench.worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec_path, out_path = Path(args[0]), Path(args[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = TASKS[spec["task"]](spec)
    except Exception as exc:  # reported by the parent, with the reason
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "peak_rss_mb": peak_rss_mb()}
    _write(out_path, result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
