"""The ``rrdistill`` command line: one typer app, one thin command per stage.

Commands only parse arguments, call the stage's module and print a summary; the work lives in
the modules so that it can be used from Python without the CLI. Heavy imports happen inside
the commands, so ``rrdistill --help`` is instant and the base install can run it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rrdistill.extras import MissingExtraError
from rrdistill.io import LineError, ReadReport

app = typer.Typer(
    name="rrdistill",
    help="Distil a listwise reasoning reranker into compact rerankers that run at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    from rich.markup import escape

    from rrdistill.reporting import console

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _report_skips(report: ReadReport) -> None:
    from rich.markup import escape

    from rrdistill.reporting import console

    if report.skipped:
        console.print(f"[yellow]{escape(report.summary())}[/]", highlight=False, soft_wrap=True)
        for error in report.skipped[:5]:
            console.print(f"  [yellow]{escape(str(error))}[/]", highlight=False, soft_wrap=True)


def _qrels_path(qrels: Path, split: str) -> Path:
    """A qrels file, or a BEIR folder whose ``qrels/<split>.tsv`` is meant."""
    return qrels / "qrels" / f"{split}.tsv" if qrels.is_dir() else qrels


@app.command()
def retrieve(
    corpus: Annotated[
        Path, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)", exists=True)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Request JSONL to write")],
    split: Annotated[
        str | None, typer.Option(help="Only queries judged in qrels/<split>.tsv; all queries if omitted")
    ] = "test",
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Candidates per query")] = 100,
    trec: Annotated[Path | None, typer.Option(help="Also write the ranking as a TREC run")] = None,
    no_title: Annotated[bool, typer.Option("--no-title", help="Index text only, without titles")] = False,
    stemmer: Annotated[str, typer.Option(help="Snowball stemmer language, or 'none'")] = "english",
) -> None:
    """Rank a BEIR corpus with BM25 (bm25s) and write the top-k as request JSONL with passage text."""
    from rrdistill.io import read_beir, write_requests, write_trec_run
    from rrdistill.reporting import console, print_table
    from rrdistill.retrieve import BM25Config, BM25Retriever
    from rrdistill.types import Ranking

    started = time.perf_counter()
    try:
        data = read_beir(corpus, split)
    except (FileNotFoundError, LineError) as exc:
        raise _fail(str(exc)) from None
    queries = data.split_queries() if split else list(data.queries.values())
    config = BM25Config(use_title=not no_title, stemmer=None if stemmer.lower() == "none" else stemmer)
    try:
        with console.status(f"indexing {len(data.corpus):,} passages with BM25"):
            retriever = BM25Retriever(list(data.corpus.values()), config)
        with console.status(f"retrieving the top {top_k} for {len(queries):,} queries"):
            requests = retriever.search(queries, k=top_k)
    except MissingExtraError as exc:
        raise _fail(str(exc)) from None
    write_requests(output, requests)
    if trec is not None:
        write_trec_run(trec, (Ranking.from_request(r) for r in requests), tag="bm25")
    elapsed = time.perf_counter() - started
    rows = [
        ("passages indexed", f"{len(data.corpus):,}"),
        ("queries", f"{len(requests):,}"),
        (
            "candidates per query (mean)",
            f"{sum(len(r.candidates) for r in requests) / max(len(requests), 1):.1f}",
        ),
        ("requests", str(output)),
        ("TREC run", str(trec) if trec else "-"),
        ("wall time", f"{elapsed:.1f} s"),
    ]
    print_table("BM25 retrieval", ["", "value"], rows)


@app.command("eval")
def evaluate_run(
    run: Annotated[
        Path,
        typer.Argument(help="TREC run, or request/result JSONL (candidate order = ranking)", exists=True),
    ],
    qrels: Annotated[
        Path, typer.Argument(help="Qrels file (TREC or BEIR .tsv), or a BEIR folder", exists=True)
    ],
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="ndcg@k, recall@k or mrr@k (repeatable)")
    ] = None,
    split: Annotated[str, typer.Option(help="Split when QRELS is a BEIR folder")] = "test",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write means and per-query values as JSON")
    ] = None,
    only_run_queries: Annotated[
        bool,
        typer.Option(help="Average over judged queries the run ranks, instead of counting missing ones as 0"),
    ] = False,
    skip_bad: Annotated[bool, typer.Option(help="Skip malformed lines (counted) instead of failing")] = False,
) -> None:
    """Score a run against qrels (nDCG, Recall, MRR; identical to trec_eval) and print a table."""
    from rrdistill.io import read_qrels, read_run
    from rrdistill.metrics import DEFAULT_METRICS, evaluate
    from rrdistill.reporting import console, print_table, write_json

    names = tuple(metric) if metric else DEFAULT_METRICS
    run_report, qrels_report = ReadReport(), ReadReport()
    try:
        ranking = read_run(run, skip_bad=skip_bad, report=run_report)
        judgments = read_qrels(_qrels_path(qrels, split), skip_bad=skip_bad, report=qrels_report)
        result = evaluate(ranking, judgments, names, only_run_queries=only_run_queries)
    except (FileNotFoundError, LineError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _report_skips(run_report)
    _report_skips(qrels_report)
    if result.missing:
        how = "left out" if only_run_queries else "scored 0"
        console.print(f"[yellow]{len(result.missing)} judged queries have no ranking in the run ({how})[/]")
    print_table(
        f"{run.name}: {len(result.per_query)} queries",
        ["metric", "mean"],
        [(name, value) for name, value in result.means.items()],
    )
    if json_path is not None:
        write_json(json_path, result.to_json())


@app.command()
def rerank(
    requests: Annotated[
        Path, typer.Argument(help="Request JSONL (e.g. from `rrdistill retrieve`)", exists=True)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result JSONL (resumed if it exists)")],
    bundle: Annotated[
        Path | None, typer.Option(help="A cross-encoder bundle made by `rrdistill export`")
    ] = None,
    trec: Annotated[Path | None, typer.Option(help="Also write the reranked lists as a TREC run")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per model call")] = 32,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Queries per step (each step's results are saved)")
    ] = 8,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime intra-op threads (default: all cores)")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip malformed request lines (counted) instead of failing")
    ] = False,
) -> None:
    """Rerank request JSONL with a bundle; killed and rerun, it resumes where it stopped."""
    from rrdistill.export.bundle import BundleError
    from rrdistill.reporting import console, print_table, progress_bar
    from rrdistill.rerank import rerank_file

    if bundle is None:
        raise _fail("give --bundle (a bundle directory made by `rrdistill export`)")
    from rrdistill.runtime import Reranker

    try:
        reranker = Reranker.load(bundle, threads=threads)
    except BundleError as exc:
        raise _fail(str(exc)) from None

    def rerank_chunk(chunk: list) -> list:
        results = reranker.rerank_many(chunk, batch_size=batch_size)
        return [
            request.reordered([r.index for r in ranked], [r.score for r in ranked])
            for request, ranked in zip(chunk, results, strict=True)
        ]

    with progress_bar() as bar:
        task = bar.add_task(f"reranking with {bundle.name}", total=None)
        try:
            summary = rerank_file(
                requests,
                output,
                rerank_chunk,
                chunk_size=chunk_size,
                trec_path=trec,
                tag=bundle.name,
                skip_bad=skip_bad,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except (LineError, ValueError) as exc:
            raise _fail(str(exc)) from None
    stats = reranker.stats
    rows = [
        *summary.rows(),
        ("bundle", f"{bundle} ({reranker.manifest.precision}, {', '.join(reranker.providers)})"),
        (
            "passages truncated",
            f"{stats.truncated_passages:,} of {stats.pairs:,} (max_length {reranker.max_length})",
        ),
        ("queries truncated", f"{stats.truncated_queries:,}"),
    ]
    if stats.padded_tokens:
        rows.append(("padding overhead", f"{stats.padded_tokens / max(stats.tokens, 1) - 1:.1%}"))
    console.print()
    print_table("rerank", ["", "value"], rows)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="A cross-encoder bundle made by `rrdistill export`")],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    threads: Annotated[int | None, typer.Option(min=1, help="onnxruntime intra-op threads")] = None,
    max_documents: Annotated[int, typer.Option(min=1, help="Documents per request before 413")] = 1000,
    max_body_mb: Annotated[float, typer.Option(help="Request body limit in MB before 413")] = 4.0,
) -> None:
    """Serve a bundle over HTTP: POST /rerank (Cohere/TEI-shaped), GET /health."""
    from rrdistill.export.bundle import BundleError
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.server import ServerConfig
    from rrdistill.runtime.server import serve as run_server

    try:
        reranker = Reranker.load(bundle, threads=threads)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    config = ServerConfig(max_body_bytes=int(max_body_mb * 1024 * 1024), max_documents=max_documents)
    try:
        run_server(reranker, host=host, port=port, config=config)
    except MissingExtraError as exc:
        raise _fail(str(exc)) from None


@app.command("export")
def export_model(
    model_dir: Annotated[
        Path, typer.Argument(help="Hugging Face cross-encoder checkpoint (num_labels=1)", exists=True)
    ],
    out_dir: Annotated[Path, typer.Argument(help="Bundle directory to write (must not exist)")],
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (GPU) | int8 (CPU, dynamic)")] = "fp32",
    optimize: Annotated[str | None, typer.Option(help="Optimum level O1..O4 (fp16 defaults to O4)")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build a TensorRT engine (GPU + tensorrt)")] = False,
    max_length: Annotated[
        int | None, typer.Option(min=8, help="Tokens per pair (default: the model's, at most 512)")
    ] = None,
    accept_drift: Annotated[
        bool, typer.Option("--accept-drift", help="Write the bundle even if parity misses the thresholds")
    ] = False,
    parity_queries: Annotated[int, typer.Option(min=1, help="Queries parity is measured on")] = 30,
    parity_passages: Annotated[int, typer.Option(min=2, help="BM25 candidates per parity query")] = 50,
    parity_data: Annotated[
        Path, typer.Option(help="BEIR folder parity is measured on (its test split)")
    ] = Path("data/scifact"),
    max_abs_diff: Annotated[float | None, typer.Option(help="Threshold: max |Δscore|")] = None,
    min_tau: Annotated[float | None, typer.Option(help="Threshold: mean Kendall τ per query")] = None,
    max_ndcg_delta: Annotated[float | None, typer.Option(help="Threshold: |Δ nDCG@10|")] = None,
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="int8 weight scales per channel or per tensor")
    ] = True,
    isa: Annotated[
        str | None, typer.Option(help="int8: avx512_vnni | avx512 | avx2 | arm64 (default: this CPU's)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR if it exists")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the export report (parity, timings) as JSON")
    ] = None,
) -> None:
    """Export a cross-encoder to a self-checking bundle (Optimum ONNX, fp32/fp16/int8, TensorRT)."""
    from dataclasses import replace

    from rrdistill.export import ExportError
    from rrdistill.reporting import console, print_table, write_json

    try:
        from rrdistill.export.pipeline import ExportConfig, ParityError, export_bundle
        from rrdistill.export.validate import DEFAULT_THRESHOLDS, ParityConfig
    except MissingExtraError as exc:
        raise _fail(str(exc)) from None
    if precision not in DEFAULT_THRESHOLDS:
        raise _fail(f"--precision must be one of {', '.join(DEFAULT_THRESHOLDS)}, got {precision!r}")
    overrides = {
        k: v
        for k, v in {
            "max_abs_diff": max_abs_diff,
            "min_mean_tau": min_tau,
            "max_ndcg_delta": max_ndcg_delta,
        }.items()
        if v is not None
    }
    config = ExportConfig(
        precision=precision,
        optimize=optimize.upper() if optimize else None,
        trt=trt,
        max_length=max_length,
        accept_drift=accept_drift,
        per_channel=per_channel,
        isa=isa,
        thresholds=replace(DEFAULT_THRESHOLDS[precision], **overrides),
        parity=ParityConfig(data=parity_data, queries=parity_queries, passages=parity_passages),
        overwrite=overwrite,
    )
    try:
        with console.status("exporting") as status:
            result = export_bundle(
                model_dir, out_dir, config, progress=lambda message: status.update(message)
            )
    except ParityError as exc:
        print_table(
            "parity (refused)", ["", "value"], _parity_rows(exc.report.to_json(), exc.thresholds.to_json())
        )
        raise _fail(str(exc)) from None
    except (ExportError, MissingExtraError, FileExistsError, OSError) as exc:
        raise _fail(str(exc)) from None
    manifest = result.manifest
    export_details = manifest.extra.get("export", {})
    quantization = export_details.get("quantization")
    rows = [
        ("bundle", str(result.bundle)),
        ("model", f"{manifest.model.file} ({manifest.model.engine})"),
        ("precision", manifest.precision),
        ("optimisation", export_details.get("optimize") or "-"),
        (
            "int8 quantization",
            f"dynamic, {quantization['isa']}, {'per-channel' if quantization['per_channel'] else 'per-tensor'}"
            if quantization
            else "-",
        ),
        ("max_length", str(manifest.inputs.max_length)),
        ("providers validated", ", ".join(manifest.providers_validated)),
        *_parity_rows(manifest.parity, result.thresholds.to_json()),
        ("verdict", "passed" if not result.violations else "DRIFT ACCEPTED: " + "; ".join(result.violations)),
        ("bundle size", f"{result.size_bytes / 1e6:.1f} MB"),
        ("wall time", f"{result.timings.get('total', 0.0):.1f} s"),
    ]
    print_table("export", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, {"bundle": str(result.bundle), "manifest": manifest.to_json()})


def _parity_rows(parity: dict, thresholds: dict) -> list[tuple[str, str]]:
    def bound(name: str, relation: str) -> str:
        value = thresholds.get(name)
        return "" if value is None else f"  (threshold {relation} {value:g})"

    return [
        ("parity data", f"{parity['data']} ({parity['pairs']:,} pairs)"),
        ("max |Δscore|", f"{parity['max_abs_diff']:.3g}{bound('max_abs_diff', '≤')}"),
        ("mean |Δscore|", f"{parity['mean_abs_diff']:.3g}"),
        (
            "Kendall τ per query (mean / min)",
            f"{parity['kendall_tau_mean']:.4f} / {parity['kendall_tau_min']:.4f}{bound('min_mean_tau', '≥')}",
        ),
        ("nDCG@10 source → exported", f"{parity['ndcg@10_source']:.4f} → {parity['ndcg@10_exported']:.4f}"),
        ("Δ nDCG@10", f"{parity['ndcg@10_delta']:+.4f}{bound('max_ndcg_delta', '|Δ| ≤')}"),
        ("top-1 agreement", f"{parity['top1_agreement']:.1%}"),
    ]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
