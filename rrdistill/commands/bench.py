"""Benchmarks: `rrdistill bench` (the runtime against sentence-transformers and FlashRank)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrdistill.commands.common import fail
from rrdistill.extras import MissingExtraError


def _bundle_option(values: list[str]) -> dict[str, Path]:
    bundles: dict[str, Path] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise fail(f"--bundle takes LABEL=DIR (e.g. int8=bundles/minilm-int8), got {value!r}")
        if label in bundles:
            raise fail(f"--bundle label {label!r} given twice")
        bundles[label] = Path(path)
    return bundles


def bench(
    model: Annotated[
        Path | None,
        typer.Option(
            help="Cross-encoder checkpoint (HF folder) the peers load; default: the bundles' recorded source"
        ),
    ] = None,
    bundle: Annotated[
        list[str] | None,
        typer.Option(help="LABEL=DIR of a bundle to measure (repeat); none: fp32 and int8 are exported"),
    ] = None,
    data: Annotated[Path, typer.Option(help="BEIR folder (its judged queries of --split)")] = Path(
        "data/scifact"
    ),
    split: Annotated[str, typer.Option(help="Qrels split whose queries are reranked")] = "test",
    queries: Annotated[
        int,
        typer.Option(min=1, help="Judged queries (seeded choice; SciFact test has 300: pass 300 for all)"),
    ] = 96,
    passages: Annotated[int, typer.Option(min=2, help="BM25 candidates per query")] = 100,
    batch_queries: Annotated[int, typer.Option(min=1, help="Queries per call in the batch workload")] = 32,
    repeats: Annotated[int, typer.Option(min=1, help="Timed single-query calls")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls before timing")] = 2,
    threads: Annotated[
        list[int] | None,
        typer.Option(
            min=1,
            help="Threads for every system (default: all available cores); repeat to measure each thread "
            "count in turn (e.g. --threads 1 --threads 2): one report per count, targets side by side",
        ),
    ] = None,
    systems: Annotated[
        str | None,
        typer.Option(help="Comma-separated systems to run, e.g. rrdistill-int8,st-torch (default: all)"),
    ] = None,
    work_dir: Annotated[
        Path, typer.Option(help="Where the data and the peers' converted models are kept (reused)")
    ] = Path("runs/bench"),
    import_repeats: Annotated[int, typer.Option(min=1, help="Fresh interpreters timed per import")] = 3,
    gemm_size: Annotated[
        list[int] | None,
        typer.Option(
            min=16, help="Side of a square GEMM measured for the peak (repeat; default 1024 and 2048)"
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the quality-vs-latency plot (PNG)")] = None,
) -> None:
    """Measure the runtime against sentence-transformers (torch, ONNX) and FlashRank on one model:
    nDCG@10, docs/s, p50/p99, import/load time, peak RSS, FLOP/s vs this machine's GEMM peak."""
    from dataclasses import replace

    from rrdistill.bench.gemm import GemmConfig
    from rrdistill.bench.runner import BenchConfig, run_bench
    from rrdistill.export import ExportError
    from rrdistill.reporting import console
    from rrdistill.runtime.bundle import BundleError

    base = BenchConfig(
        checkpoint=model,
        bundles=_bundle_option(bundle or []),
        data=data,
        split=split,
        queries=queries,
        passages=passages,
        batch_queries=batch_queries,
        repeats=repeats,
        warmup=warmup,
        systems=[s.strip() for s in systems.split(",") if s.strip()] if systems else None,
        work_dir=work_dir,
        import_repeats=import_repeats,
        gemm=GemmConfig(sizes=tuple(gemm_size)) if gemm_size else GemmConfig(),
    )
    payloads = []
    for count in list(dict.fromkeys(threads)) if threads else [None]:
        config = replace(base, threads=count)
        try:
            with console.status("benchmarking") as status:

                def progress(message: str, count: int | None = count) -> None:
                    status.update(message)
                    console.log(message if count is None else f"[{count} threads] {message}", highlight=False)

                payloads.append(run_bench(config, progress))
        except (ExportError, BundleError, MissingExtraError, ValueError, OSError) as exc:
            raise fail(str(exc)) from None
    from rrdistill.bench.report import print_report, print_sweep_targets, save_json, sweep_payload

    for payload in payloads:
        print_report(payload)
    if len(payloads) > 1:
        print_sweep_targets(payloads)
    if json_path is not None:
        save_json(payloads[0] if len(payloads) == 1 else sweep_payload(payloads), json_path)
        console.print(f"report written to {json_path}")
    if plot is not None:
        from rrdistill.bench.plot import plot_quality_latency

        for payload in payloads:
            path = plot
            if len(payloads) > 1:
                path = plot.with_name(f"{plot.stem}-{payload['config']['threads']}threads{plot.suffix}")
            try:
                plot_quality_latency(payload, path)
            except MissingExtraError as exc:
                raise fail(str(exc)) from None
            console.print(f"plot written to {path}")
    if not any(s["status"] == "ok" for payload in payloads for s in payload["systems"]):
        raise fail("no system ran; see the errors above")
