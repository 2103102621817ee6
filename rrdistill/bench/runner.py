"""Run the comparison: prepare once, measure each system in its own interpreter, analyse.

:func:`run_bench` returns the JSON-ready report (schema ``rrdistill-bench/1``) that
:mod:`rrdistill.bench.report` prints and :mod:`rrdistill.bench.plot` draws.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.bench.flops import EncoderShape
from rrdistill.bench.gemm import GemmConfig
from rrdistill.bench.systems import DISTRIBUTIONS, SystemSpec
from rrdistill.export import ExportError

SCHEMA = "rrdistill-bench/1"
REFERENCE = "st-torch"
"""The baseline the speedups and quality deltas are taken against: the source model as
sentence-transformers serves it."""
MODEL_CALL_PAIRS = 32
"""Pairs per model call of the runtime and of sentence-transformers by default: the model's own
feed-forward GEMM at that batch is measured beside the square ones."""
DEFAULT_QUERIES = 96
"""Three full 32-query batches (9,600 pairs per system): a few minutes per system on 2 cores.
SciFact test has 300 judged queries; ``queries=300`` reranks all of them."""


@dataclass
class BenchConfig:
    checkpoint: Path | None = None
    """The Hugging Face cross-encoder the bundles came from (default: their recorded source)."""
    bundles: dict[str, Path] = field(default_factory=dict)
    """Label → bundle folder, e.g. ``{"fp32": …, "int8": …}``; none: exported from the checkpoint."""
    data: Path = Path("data/scifact")
    split: str = "test"
    queries: int = DEFAULT_QUERIES
    """Judged queries of the split (seeded choice; all of them when the split has fewer)."""
    passages: int = 100
    """BM25 candidates per query."""
    batch_queries: int = 32
    """Queries per call in the batch workload."""
    repeats: int = 20
    """Timed calls of the single-query workload (over the first queries, in order)."""
    warmup: int = 2
    """Untimed single-query calls before timing."""
    threads: int | None = None
    """Threads for every system (default: the cores this process may use)."""
    systems: list[str] | None = None
    """Names to run (default: all that can be built from the inputs)."""
    work_dir: Path = Path("runs/bench")
    import_repeats: int = 3
    gemm: GemmConfig = field(default_factory=GemmConfig)
    profile_ops: bool = True
    """Also profile one single-query call of each rrdistill system by operator (onnxruntime profiler)."""
    seed: int = 0
    worker_timeout: float = 6 * 3600.0
    """Seconds one system may take (a hung worker is reported as failed, not waited on forever)."""

    def check(self) -> None:
        if self.checkpoint is None and not self.bundles:
            raise ExportError("give the model checkpoint, or bundles whose manifests record it")
        for name, value in (
            ("queries", self.queries),
            ("passages", self.passages),
            ("batch_queries", self.batch_queries),
            ("repeats", self.repeats),
            ("import_repeats", self.import_repeats),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_env(threads: int) -> dict[str, str]:
    """The same thread budget for every library: BLAS/OpenMP (numpy, torch), Rayon (tokenizers).
    onnxruntime's pools are set per session (``intra_op_num_threads``) by each adapter."""
    count = str(threads)
    return {
        **os.environ,
        "OMP_NUM_THREADS": count,
        "OPENBLAS_NUM_THREADS": count,
        "MKL_NUM_THREADS": count,
        "RAYON_NUM_THREADS": count,
        "TOKENIZERS_PARALLELISM": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def run_worker(task: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """``python -m rrdistill.bench.worker`` on `task`; its result, or why there is none."""
    with tempfile.TemporaryDirectory(prefix="rrdistill-bench-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({**task, "threads": threads}))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "rrdistill.bench.worker", str(spec), str(out)],
                env=worker_env(threads),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
        if not out.is_file():
            tail = (done.stderr or "").strip().splitlines()[-5:]
            return {
                "status": "failed",
                "error": f"worker exited with code {done.returncode} and no result: " + " | ".join(tail),
            }
        result = json.loads(out.read_text())
        if result.get("status") != "ok":
            result["log_tail"] = (done.stderr or "")[-4000:]
        return result


def import_seconds(module: str, threads: int, repeats: int, timeout: float = 600) -> list[float]:
    """Seconds ``import module`` takes in a bare fresh interpreter, `repeats` times (OS file cache
    warm after the first; the median is reported)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=worker_env(threads),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`import {module}` failed: {done.stderr.strip().splitlines()[-1:]}")
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return samples


def machine_info(threads: int) -> dict[str, Any]:
    """The CPU and how busy it was (other processes' load makes every timing noisier)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    try:
        load = list(os.getloadavg())
    except OSError:  # not available on this platform
        load = None
    return {
        "cpu": model,
        "load_average_1_5_15_min": load,
        "cpus_available": available_threads(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# -- the systems -----------------------------------------------------------------------------


@dataclass
class Candidate:
    """A system that may run: its name and how to build its spec (preparation can fail)."""

    name: str
    build: Callable[[], SystemSpec]


def candidate_systems(
    checkpoint: Path, bundles: dict[str, Path], work_dir: Path, max_length: int, template: str
) -> list[Candidate]:
    from rrdistill.bench import prepare
    from rrdistill.export.quantize import detect_isa
    from rrdistill.runtime.bundle import load_manifest

    def runtime_spec(name: str, bundle: Path, description: str) -> SystemSpec:
        manifest = load_manifest(bundle, verify_files=False)
        return SystemSpec(
            name=name,
            kind="rrdistill",
            path=str(bundle),
            precision=manifest.precision,
            max_length=manifest.inputs.max_length,
            passage_template=manifest.inputs.passage_template,
            description=description,
        )

    candidates = []
    for label, bundle in bundles.items():
        precision = load_manifest(bundle, verify_files=False).precision
        candidates.append(
            Candidate(
                f"rrdistill-{label}",
                lambda b=bundle, n=f"rrdistill-{label}", p=precision: runtime_spec(
                    n, b, f"rrdistill runtime, {p} bundle ({graph_words(b)})"
                ),
            )
        )
    peer_graphs: dict[str, Callable[[], Path]] = {}
    for label in ("fp32", "int8"):
        if label not in bundles:
            continue
        own = bundles[label]
        if prepare.is_peer_graph(own):
            peer_graphs[label] = lambda own=own: own
            continue
        length = load_manifest(own, verify_files=False).inputs.max_length

        def peer(label: str = label, length: int = length) -> Path:
            return prepare.peer_bundle(checkpoint, work_dir, label, length)

        peer_graphs[label] = peer
        candidates.append(
            Candidate(
                f"rrdistill-{label}-plain",
                lambda label=label, peer=peer: runtime_spec(
                    f"rrdistill-{label}-plain", peer(), f"rrdistill runtime on the peers' {label} graph"
                ),
            )
        )

    def st_torch() -> SystemSpec:
        return SystemSpec(
            name="st-torch",
            kind="st-torch",
            path=str(checkpoint),
            precision="fp32",
            max_length=max_length,
            passage_template=template,
            description="sentence-transformers CrossEncoder, torch fp32",
        )

    def st_onnx(int8: bool) -> SystemSpec:
        isa = detect_isa() if int8 else None
        folder, file_name = prepare.st_onnx_model(checkpoint, work_dir, int8_isa=isa)
        how = f"export_dynamic_quantized_onnx_model({isa!r})" if int8 else "its Optimum export"
        return SystemSpec(
            name="st-onnx-int8" if int8 else "st-onnx",
            kind="st-onnx",
            path=str(folder),
            precision="int8" if int8 else "fp32",
            max_length=max_length,
            passage_template=template,
            options={"file_name": file_name},
            description=f"sentence-transformers CrossEncoder, backend='onnx' ({how})",
        )

    candidates += [
        Candidate("st-torch", st_torch),
        Candidate("st-onnx", lambda: st_onnx(False)),
        Candidate("st-onnx-int8", lambda: st_onnx(True)),
    ]
    for label, bundle_of in peer_graphs.items():
        what = f"the peers' {label} graph ({prepare.PEER_GRAPHS[label]})"

        def flashrank(
            label: str = label, bundle_of: Callable[[], Path] = bundle_of, what: str = what
        ) -> SystemSpec:
            bundle = bundle_of()
            manifest = load_manifest(bundle, verify_files=False)
            model_name = f"rrdistill-{label}"
            prepare.flashrank_cache(bundle, checkpoint, work_dir / "flashrank", model_name)
            return SystemSpec(
                name=f"flashrank-{label}",
                kind="flashrank",
                path=str(work_dir / "flashrank"),
                precision=manifest.precision,
                max_length=manifest.inputs.max_length,
                passage_template=manifest.inputs.passage_template,
                options={"model_name": model_name, "model_file": "model.onnx"},
                description=f"FlashRank Ranker on {what}",
            )

        candidates.append(Candidate(f"flashrank-{label}", flashrank))
    return candidates


def graph_words(bundle: Path) -> str:
    """Which graph a bundle holds, in words (its optimisation level, its int8 graph)."""
    from rrdistill.bench.prepare import bundle_graph

    level, int8_graph = bundle_graph(bundle)
    words = [f"optimised {level}" if level else "unfused"]
    if int8_graph:
        words.append(f"int8 {int8_graph} graph")
    return ", ".join(words)


def select(candidates: list[Candidate], names: list[str] | None) -> list[Candidate]:
    if not names:
        return candidates
    known = {c.name: c for c in candidates}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; available: {', '.join(known)}")
    return [known[n] for n in names]


def source_checkpoint(bundles: dict[str, Path]) -> Path:
    """The checkpoint the bundles' manifests name as their source (it must still exist)."""
    from rrdistill.runtime.bundle import load_manifest

    for bundle in bundles.values():
        source = (load_manifest(bundle, verify_files=False).provenance.get("source") or {}).get("path")
        if source and (Path(source) / "config.json").is_file():
            return Path(source)
    raise ExportError("the bundles do not name an existing source checkpoint; pass --model")


# -- the run -----------------------------------------------------------------------------------


def measure_system(
    candidate: Candidate, requests: Path, config: BenchConfig, threads: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Prepare one system, time its import in bare interpreters, then measure it in a worker.
    Whatever fails is returned as a ``failed`` result with the reason: one peer that cannot load
    this model does not stop the comparison."""
    from rrdistill.bench.analysis import failed
    from rrdistill.extras import package_versions

    say(f"{candidate.name}: preparing")
    try:
        spec = candidate.build()
    except Exception as exc:
        return failed(candidate.name, f"preparation failed: {type(exc).__name__}: {exc}")
    say(f"{candidate.name}: timing its import ({config.import_repeats}x)")
    try:
        imports = import_seconds(spec.import_module, threads, config.import_repeats)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return failed(candidate.name, str(exc), spec)
    say(f"{candidate.name}: loading and timing")
    result = run_worker(
        {
            "task": "system",
            "system": spec.to_json(),
            "requests": str(requests),
            "warmup": config.warmup,
            "repeats": config.repeats,
            "batch_queries": config.batch_queries,
            "profile_ops": config.profile_ops,
        },
        threads,
        config.worker_timeout,
    )
    result.update(
        spec=spec.to_json(),
        import_samples=imports,
        import_seconds=statistics.median(imports),
        versions=package_versions(DISTRIBUTIONS[spec.kind]),
    )
    say(
        f"{candidate.name}: {result['status']}"
        + (f" ({result['error']})" if result["status"] != "ok" else "")
    )
    return result


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every selected system; the report as a JSON-ready dict."""
    from rrdistill.bench import analysis, prepare
    from rrdistill.runtime.bundle import load_manifest

    config.check()
    say = progress or (lambda message: None)
    threads = config.threads or available_threads()
    machine_at_start = machine_info(threads)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    bundles = {k: Path(v) for k, v in config.bundles.items()}
    checkpoint = Path(config.checkpoint) if config.checkpoint else source_checkpoint(bundles)
    if not bundles:
        bundles = prepare.export_bundles(checkpoint, work, progress=say)
    manifests = {label: load_manifest(path) for label, path in bundles.items()}
    first = next(iter(manifests.values()))
    max_length = first.inputs.max_length
    template = first.inputs.passage_template
    shape = EncoderShape.from_checkpoint(checkpoint)
    chosen = select(candidate_systems(checkpoint, bundles, work, max_length, template), config.systems)

    say(f"retrieving BM25 top-{config.passages} for {config.data}")
    data = prepare.bench_data(config.data, config.split, config.queries, config.passages, config.seed, work)
    lengths = analysis.pair_lengths(next(iter(bundles.values())), data.requests)

    model_gemm = (MODEL_CALL_PAIRS * max_length, shape.hidden, shape.intermediate)
    gemm_config = GemmConfig(
        sizes=config.gemm.sizes,
        repeats=config.gemm.repeats,
        shapes=[*config.gemm.shapes, model_gemm],
        seed=config.gemm.seed,
    )
    say(f"measuring this machine's GEMM peak ({threads} threads)")
    gemm = run_worker({"task": "gemm", "gemm": asdict(gemm_config)}, threads, config.worker_timeout)

    raw = [measure_system(candidate, data.path, config, threads, say) for candidate in chosen]

    payload = analysis.analyse(raw, data, lengths, shape, gemm, REFERENCE)
    payload.update(
        schema=SCHEMA,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine={
            **machine_info(threads),
            "load_average_at_start": machine_at_start["load_average_1_5_15_min"],
        },
        config={
            "checkpoint": str(checkpoint),
            "bundles": {k: str(v) for k, v in bundles.items()},
            "data": str(config.data),
            "split": config.split,
            "queries": len(data.requests),
            "passages": config.passages,
            "batch_queries": config.batch_queries,
            "repeats": config.repeats,
            "warmup": config.warmup,
            "threads": threads,
            "import_repeats": config.import_repeats,
            "gemm": asdict(gemm_config),
            "seed": config.seed,
        },
        model={
            "checkpoint": str(checkpoint),
            "max_length": max_length,
            "shape": shape.to_json(),
            "flops_per_pair_at_max_length": shape.sequence_flops(max_length),
        },
    )
    return payload
