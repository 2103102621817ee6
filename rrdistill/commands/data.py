"""First stage and evaluation: `rrdistill retrieve`, `rrdistill eval`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rrdistill.commands.common import fail, qrels_path, report_skips
from rrdistill.extras import MissingExtraError
from rrdistill.io import LineError, ReadReport


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
        raise fail(str(exc)) from None
    queries = data.split_queries() if split else list(data.queries.values())
    config = BM25Config(use_title=not no_title, stemmer=None if stemmer.lower() == "none" else stemmer)
    try:
        with console.status(f"indexing {len(data.corpus):,} passages with BM25"):
            retriever = BM25Retriever(list(data.corpus.values()), config)
        with console.status(f"retrieving the top {top_k} for {len(queries):,} queries"):
            requests = retriever.search(queries, k=top_k)
    except MissingExtraError as exc:
        raise fail(str(exc)) from None
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
        judgments = read_qrels(qrels_path(qrels, split), skip_bad=skip_bad, report=qrels_report)
        result = evaluate(ranking, judgments, names, only_run_queries=only_run_queries)
    except (FileNotFoundError, LineError, ValueError) as exc:
        raise fail(str(exc)) from None
    report_skips(run_report)
    report_skips(qrels_report)
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
