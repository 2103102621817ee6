"""Reranking with bundles or teachers, and serving bundles: `rrdistill rerank`, `rrdistill serve`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rrdistill.commands.common import fail, progress_callback, refuse_options
from rrdistill.extras import MissingExtraError
from rrdistill.io import LineError

if TYPE_CHECKING:
    from rrdistill.runtime import Chunking

# `rerank --bundle` and `serve` score long passages the same way
LongPassagesOption = Annotated[
    str,
    typer.Option(
        help="Cross-encoders: passages longer than the model's window are truncated ('first', FirstP) "
        "or scored as overlapping chunks, best chunk wins ('max', MaxP)"
    ),
]
StrideOption = Annotated[
    int | None,
    typer.Option(min=0, help="Tokens shared by consecutive MaxP chunks (default: a quarter of max_length)"),
]


def rerank(
    requests: Annotated[
        Path, typer.Argument(help="Request JSONL (e.g. from `rrdistill retrieve`)", exists=True)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result JSONL (resumed if it exists)")],
    bundle: Annotated[
        Path | None, typer.Option(help="A bundle made by `rrdistill export` (cross-encoder or listwise-lm)")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="A listwise teacher: checkpoint directory or OpenAI-compatible server URL"),
    ] = None,
    trec: Annotated[Path | None, typer.Option(help="Also write the reranked lists as a TREC run")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Pairs (cross-encoder) or windows (listwise) per model call")
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="Queries per step; each step's results are saved before the next"),
    ] = None,
    reasoning: Annotated[
        bool | None,
        typer.Option(
            help="Listwise models: reasoning prompt (teacher default: as trained; bundle default: fast)"
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime intra-op threads (default: all cores)")
    ] = None,
    activation: Annotated[
        str | None,
        typer.Option(
            help="Bundle scores: identity (raw logits) or sigmoid (0..1, as sentence-transformers); "
            "default: the bundle's. Listwise scores are ranks (n - rank) and take no sigmoid"
        ),
    ] = None,
    long_passages: LongPassagesOption = "first",
    stride: StrideOption = None,
    model: Annotated[
        str | None, typer.Option(help="Model name the server serves (with a teacher URL)")
    ] = None,
    window: Annotated[int, typer.Option(min=2, help="Window size (listwise)")] = 20,
    step: Annotated[int, typer.Option(min=1, help="Window step (listwise)")] = 10,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="Rerank the first K candidates (listwise)")
    ] = 100,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generation budget per window (teacher)")] = 4096,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy (teacher)")] = 0.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent requests to a teacher server")] = 16,
    max_passage_tokens: Annotated[
        int | None, typer.Option(min=1, help="Cut passages to N tokens (teacher)")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer (dir or name) to cut passages with, for a server teacher")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip malformed request lines (counted) instead of failing")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON")] = None,
) -> None:
    """Rerank request JSONL with a bundle or a listwise teacher; killed and rerun, it resumes where it stopped."""
    from rrdistill.reporting import console, print_table, write_json

    if (bundle is None) == (teacher is None):
        raise fail(
            "give exactly one of --bundle (made by `rrdistill export`) or --teacher (checkpoint or URL)"
        )
    if activation is not None and bundle is None:
        raise fail("--activation applies to --bundle scores (a teacher's are ranks)")
    if (long_passages != "first" or stride is not None) and bundle is None:
        raise fail("--long-passages / --stride apply to a cross-encoder --bundle (a teacher cuts passages)")
    chunking = _chunking(long_passages, stride)
    if bundle is not None:
        teacher_only = "it drives a --teacher's generation; a bundle's manifest fixes its prompt and windows"
        refuse_options(
            "--bundle",
            {
                "model": "it names the model a --teacher server serves",
                "window": teacher_only,
                "step": teacher_only,
                "top_k": teacher_only,
                "max_new_tokens": teacher_only,
                "temperature": teacher_only,
                "concurrency": "it bounds requests to a --teacher server",
                "max_passage_tokens": teacher_only,
                "tokenizer": "it cuts passages for a --teacher server",
            },
        )
    else:
        refuse_options("--teacher", {"threads": "onnxruntime threads apply to --bundle"})
    if bundle is not None:
        rows, payload = _rerank_with_bundle(
            requests,
            output,
            bundle,
            trec,
            batch_size,
            chunk_size or 8,
            threads,
            bool(reasoning),
            skip_bad,
            activation,
            chunking,
        )
    else:
        assert teacher is not None
        rows, payload = _rerank_with_teacher(
            requests,
            output,
            teacher,
            trec=trec,
            model=model,
            window=window,
            step=step,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size or 16,
            concurrency=concurrency,
            chunk_size=chunk_size or 16,
            reasoning=reasoning,
            max_passage_tokens=max_passage_tokens,
            tokenizer=tokenizer,
            skip_bad=skip_bad,
        )
    console.print()
    print_table("rerank", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, payload)


def _chunking(long_passages: str, stride: int | None) -> Chunking | None:
    """The runtime's long-passage setting for the command line's words (None: the default, FirstP)."""
    from rrdistill.runtime import Chunking

    if long_passages == "first" and stride is None:
        return None
    if long_passages == "first":
        raise fail("--stride sets the overlap of MaxP chunks: give it with --long-passages max")
    try:
        return Chunking(long_passages, stride)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(f"--long-passages / --stride: {exc}") from None


def _rerank_with_bundle(
    requests: Path,
    output: Path,
    bundle: Path,
    trec: Path | None,
    batch_size: int | None,
    chunk_size: int,
    threads: int | None,
    reasoning: bool,
    skip_bad: bool,
    activation: str | None = None,
    chunking: Chunking | None = None,
) -> tuple[list, dict]:
    from rrdistill.reporting import progress_bar
    from rrdistill.rerank import rerank_file
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.bundle import BundleError

    try:
        reranker = Reranker.load(bundle, threads=threads, activation=activation, chunking=chunking)
    except (BundleError, ValueError) as exc:
        raise fail(str(exc)) from None
    if reasoning and not reranker.supports_reasoning:
        raise fail(f"{bundle}: a {reranker.kind} bundle cannot reason; drop --reasoning")

    def rerank_chunk(chunk: list) -> list:
        results = reranker.rerank_many(chunk, batch_size=batch_size, reasoning=reasoning)
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
            raise fail(str(exc)) from None
    stats = reranker.stats.to_dict()
    manifest = reranker.manifest
    rows = [*summary.rows(), ("bundle", f"{bundle} ({reranker.kind})")]
    if manifest is not None:
        rows.append(("precision / providers", f"{manifest.precision}, {', '.join(reranker.providers)}"))
    if "truncated_passages" in stats:  # a cross-encoder's token accounting
        max_length = manifest.inputs.max_length if manifest is not None else "?"
        rows += [
            (
                "passages truncated",
                f"{stats['truncated_passages']:,} of {stats['pairs']:,} (max_length {max_length})",
            ),
            ("queries truncated", f"{stats['truncated_queries']:,}"),
        ]
        if stats["chunked_passages"]:
            rows.append(
                (
                    "passages scored in chunks (MaxP)",
                    f"{stats['chunked_passages']:,} (+{stats['extra_chunks']:,} model inputs)",
                )
            )
        if stats["padded_tokens"]:
            rows.append(("padding overhead", f"{stats['padded_tokens'] / max(stats['tokens'], 1) - 1:.1%}"))
    if "windows" in stats:  # a listwise model's window accounting
        rows.append(
            (
                "windows (reasoning / repaired)",
                f"{stats['windows']:,} ({stats['reasoning_windows']:,} / {stats['repaired_windows']:,})",
            )
        )
        if stats["generated_tokens"]:
            rows.append(("generated tokens", f"{stats['generated_tokens']:,}"))
    payload = summary.to_json()
    payload["runtime_stats"] = stats
    return rows, payload


def _rerank_with_teacher(
    requests: Path,
    output: Path,
    teacher: str,
    *,
    trec: Path | None,
    model: str | None,
    window: int,
    step: int,
    top_k: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    concurrency: int,
    chunk_size: int,
    reasoning: bool | None,
    max_passage_tokens: int | None,
    tokenizer: str | None,
    skip_bad: bool,
) -> tuple[list, dict]:
    from rrdistill.reporting import progress_bar

    try:
        from rrdistill.distill.backends import SamplingParams
        from rrdistill.distill.teacher.rerank import rerank_with_teacher
        from rrdistill.window import WindowConfig

        with progress_bar() as progress:
            task = progress.add_task("reranking", total=None)
            summary = rerank_with_teacher(
                requests,
                output,
                teacher,
                model=model,
                window=WindowConfig(window_size=window, step=step, top_k=top_k),
                sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature),
                chunk_size=chunk_size,
                batch_size=batch_size,
                concurrency=concurrency,
                reasoning=reasoning,
                max_passage_tokens=max_passage_tokens,
                tokenizer=tokenizer,
                skip_bad=skip_bad,
                trec_path=trec,
                progress=progress_callback(progress, task),
            )
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise fail(str(exc)) from None
    return summary.rows(), summary.to_json()


def serve(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle made by `rrdistill export` (cross-encoder or listwise-lm)")
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    threads: Annotated[int | None, typer.Option(min=1, help="onnxruntime intra-op threads")] = None,
    max_documents: Annotated[int, typer.Option(min=1, help="Documents per request before 413")] = 1000,
    max_body_mb: Annotated[float, typer.Option(help="Request body limit in MB before 413")] = 4.0,
    activation: Annotated[
        str | None,
        typer.Option(
            help="Scores on every route: identity (raw logits) or sigmoid (0..1); default: 0..1 where "
            "the API promises it (Cohere, Jina, TEI), the bundle's on /rerank with documents. "
            "Listwise scores are ranks (n - rank) and take no sigmoid"
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Pairs (cross-encoder) or windows (listwise) per model call")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RRDISTILL_API_KEY",
            show_default=False,
            help="Require 'Authorization: Bearer <key>' on every route but /health (prefer the "
            "environment variable: a command line is visible to other users)",
        ),
    ] = None,
    request_timeout: Annotated[
        float,
        typer.Option(min=0, help="Seconds a request may wait for the model before 504; 0 = no limit"),
    ] = 60.0,
    long_passages: LongPassagesOption = "first",
    stride: StrideOption = None,
) -> None:
    """Serve a bundle over HTTP: POST /v1/rerank, /v2/rerank (Cohere), /jina/v1/rerank (Jina), /rerank
    (TEI, or Cohere-like), `reasoning` for listwise; GET /health, /metrics (Prometheus)."""
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.bundle import BundleError
    from rrdistill.runtime.server import ServerConfig
    from rrdistill.runtime.server import serve as run_server

    try:
        reranker = Reranker.load(
            bundle, threads=threads, activation=activation, chunking=_chunking(long_passages, stride)
        )
    except (BundleError, ValueError) as exc:
        raise fail(str(exc)) from None
    config = ServerConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_documents=max_documents,
        batch_size=batch_size,
        activation=activation,
        request_timeout_s=request_timeout or None,
        api_key=api_key or None,
    )
    try:
        run_server(reranker, host=host, port=port, config=config)
    except (MissingExtraError, ValueError) as exc:
        raise fail(str(exc)) from None
