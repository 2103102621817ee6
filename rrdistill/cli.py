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


# ----------------------------------------------------------------------------------------------
# Teacher: synthesis, training, reranking
# ----------------------------------------------------------------------------------------------


def _progress_callback(progress, task):  # type: ignore[no-untyped-def]
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


@app.command()
def synthesize(
    source: Annotated[
        Path,
        typer.Argument(help="Request JSONL, or a BEIR folder (BM25 candidates are retrieved)", exists=True),
    ],
    labeller: Annotated[
        str, typer.Option("--labeller", help="Labeller: checkpoint directory or OpenAI-compatible server URL")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Teacher-sample JSONL to write (resumable)")],
    model: Annotated[
        str | None, typer.Option(help="Model name the server serves (required with a URL)")
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(help="Relevance labels (TREC/BEIR); without any, the labeller picks the positives"),
    ] = None,
    split: Annotated[str, typer.Option(help="Qrels split of a BEIR folder")] = "train",
    list_size: Annotated[int, typer.Option("--list-size", min=2, help="Passages per list (≤ 20)")] = 20,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Keep when nDCG@10(list, positives) ≥ α")
    ] = 0.4,
    max_queries: Annotated[int | None, typer.Option(min=1, help="Only the first N queries")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 8192,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.6,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    max_passage_tokens: Annotated[int, typer.Option(min=1)] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per backend call")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent requests to a server")] = 16,
    dataset: Annotated[str, typer.Option(help="Name recorded as each sample's 'dataset'")] = "",
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer (dir or name) to cut passages with, for a server labeller")
    ] = None,
    require_reasoning: Annotated[bool, typer.Option(help="Reject answers without a <think> block")] = True,
    retry_failed: Annotated[bool, typer.Option(help="Try the recorded failures again")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON")] = None,
) -> None:
    """Synthesize reasoning-ranking data with a labeller LLM and ReasonRank's self-consistency filter."""
    from rrdistill.distill.backends import SamplingParams, load_tokenizer, open_backend
    from rrdistill.distill.synthesize import SynthesisConfig, Synthesizer, load_inputs
    from rrdistill.reporting import print_table, progress_bar, write_json

    try:
        requests, labels = load_inputs(
            source, qrels_path=qrels, split=split, top_k=list_size, max_queries=max_queries
        )
        config = SynthesisConfig(
            list_size=list_size,
            alpha=alpha,
            require_reasoning=require_reasoning,
            max_passage_tokens=max_passage_tokens,
            batch_size=batch_size,
            sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
            dataset=dataset or (source.name if source.is_dir() else source.stem),
        )
        backend = open_backend(labeller, model=model, batch_size=batch_size, concurrency=concurrency)
        with progress_bar() as progress:
            task = progress.add_task("synthesizing", total=len(requests))
            cutter = load_tokenizer(tokenizer) if tokenizer else None
            summary = Synthesizer(backend, config, tokenizer=cutter).run(
                requests,
                output,
                labels,
                retry_failed=retry_failed,
                progress=_progress_callback(progress, task),
            )
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise _fail(str(exc)) from None
    print_table("Synthesis", ["", "value"], summary.rows())
    if json_path is not None:
        write_json(json_path, summary.to_json())


@app.command("train-teacher")
def train_teacher(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config (configs/teacher/…)", exists=True)
    ],
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run: skip finished stages, resume from checkpoints")
    ] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Override the config's output_dir")] = None,
    train: Annotated[Path | None, typer.Option(help="Override the config's data.train")] = None,
) -> None:
    """Train the teacher: cold-start SFT then GRPO with the multi-view ranking reward (trl)."""
    from rrdistill.config import ConfigError, load_config
    from rrdistill.reporting import print_table

    try:
        from rrdistill.distill.teacher import StageExistsError, TeacherTrainer
        from rrdistill.distill.teacher_config import TeacherConfig

        settings = load_config(TeacherConfig, config)
        if output_dir is not None:
            settings.output_dir = str(output_dir)
        if train is not None:
            settings.data.train = str(train)
        summary = TeacherTrainer(settings, config_path=str(config)).run(resume=resume)
    except (
        ConfigError,
        StageExistsError,
        FileNotFoundError,
        LineError,
        ValueError,
        MissingExtraError,
    ) as exc:
        raise _fail(str(exc)) from None
    if "checkpoint" not in summary:
        return  # not the main process of a distributed run
    rows: list[tuple[str, str]] = [
        ("training samples", f"{summary['samples']['train']:,}"),
        ("held-out windows", f"{summary['samples']['heldout']:,}"),
    ]
    for stage in ("sft", "grpo"):
        info = summary.get(stage)
        if info:
            state = "skipped (complete)" if info.get("skipped") else f"{info['seconds']:.1f} s"
            rows.append((f"{stage}: steps", f"{info.get('global_steps', '-')} ({state})"))
    for key in ("reward_before_grpo", "reward_after_grpo", "reward_after_sft"):
        report = summary.get(key)
        for mode in ("greedy", "sampled"):
            if report and mode in report and report[mode].get("count"):
                values = report[mode]
                rows.append(
                    (
                        f"{key.replace('_', ' ')} ({mode})",
                        f"mean {values['mean']:.3f}  median {values['median']:.3f}  "
                        f"format fails {values['format_failures']:.0%}  invalid {values['invalid_permutations']:.0%}",
                    )
                )
    rows += [
        ("checkpoint", summary["checkpoint"]),
        ("summary", str(Path(summary["checkpoint"]).parent / "training_summary.json")),
        ("wall time", f"{summary['seconds']:.1f} s"),
    ]
    print_table("Teacher training", ["", "value"], rows)


@app.command("tiny-model")
def tiny_model(
    output: Annotated[Path, typer.Argument(help="Checkpoint directory to write")],
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Teacher config whose model.tiny section to build", exists=True),
    ],
) -> None:
    """Build the tiny random-weight Qwen2-shaped model of a config (no hub): for demos and tests."""
    from rrdistill.config import ConfigError, load_config
    from rrdistill.reporting import print_table

    try:
        from rrdistill.distill.teacher_config import TeacherConfig
        from rrdistill.distill.tiny import build_tiny_model

        settings = load_config(TeacherConfig, config)
        if settings.model.tiny is None:
            raise ValueError(f"{config}: model.tiny is not set")
        path = build_tiny_model(settings.model.tiny, output)
    except (ConfigError, FileNotFoundError, ValueError, MissingExtraError) as exc:
        raise _fail(str(exc)) from None
    print_table("Tiny model", ["", "value"], [("checkpoint", str(path))])


@app.command()
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
        raise _fail(
            "give exactly one of --bundle (made by `rrdistill export`) or --teacher (checkpoint or URL)"
        )
    if bundle is not None:
        rows, payload = _rerank_with_bundle(
            requests, output, bundle, trec, batch_size, chunk_size or 8, threads, bool(reasoning), skip_bad
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
        )
    console.print()
    print_table("rerank", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, payload)


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
) -> tuple[list, dict]:
    from rrdistill.export.bundle import BundleError
    from rrdistill.reporting import progress_bar
    from rrdistill.rerank import rerank_file
    from rrdistill.runtime import Reranker

    try:
        reranker = Reranker.load(bundle, threads=threads)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    from rrdistill.runtime.reasoning import ListwiseReranker

    listwise = isinstance(reranker, ListwiseReranker)

    def rerank_chunk(chunk: list) -> list:
        options = {"reasoning": reasoning} if listwise else {}
        results = reranker.rerank_many(chunk, batch_size=batch_size, **options)
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
    rows = [*summary.rows(), ("bundle", str(bundle))]
    stats = getattr(reranker, "stats", None)
    if stats is not None:
        rows += [
            ("precision / providers", f"{reranker.manifest.precision}, {', '.join(reranker.providers)}"),
            (
                "passages truncated",
                f"{stats.truncated_passages:,} of {stats.pairs:,} (max_length {reranker.max_length})",
            ),
            ("queries truncated", f"{stats.truncated_queries:,}"),
        ]
        if stats.padded_tokens:
            rows.append(("padding overhead", f"{stats.padded_tokens / max(stats.tokens, 1) - 1:.1%}"))
    payload = summary.to_json()
    if stats is not None:
        payload["runtime_stats"] = stats.to_dict()
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
) -> tuple[list, dict]:
    from rrdistill.reporting import progress_bar

    try:
        from rrdistill.distill.backends import SamplingParams
        from rrdistill.distill.teacher_rerank import rerank_with_teacher
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
                trec_path=trec,
                progress=_progress_callback(progress, task),
            )
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise _fail(str(exc)) from None
    return summary.rows(), summary.to_json()


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
