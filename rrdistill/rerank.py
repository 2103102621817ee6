"""A resumable rerank job over a request JSONL file, for any reranker.

The runtime's cross-encoders, listwise students and the teacher all run through this loop:
requests are reranked in chunks, each result line is appended and fsync'd as soon as its chunk
is done, and a job started again with the same arguments skips the queries already on disk.
Killed at any point, the final output equals an uninterrupted run's: no query lost, none
written twice, no torn line accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rrdistill.io import JsonlAppender, ReadReport, read_requests, request_to_json, write_trec_run
from rrdistill.types import Ranking, Request

RerankBatch = Callable[[list[Request]], Sequence[Request]]
"""Reranks a chunk of requests; returns them (same queries, same order) with candidates reordered."""


@dataclass
class RerankSummary:
    total: int
    resumed: int
    """Queries found already done in the output (a previous run's work, not redone)."""
    reranked: int
    skipped_lines: int
    seconds: float
    output: Path
    trec: Path | None

    def to_json(self) -> dict[str, object]:
        return {
            "queries": self.total,
            "resumed": self.resumed,
            "reranked": self.reranked,
            "skipped_lines": self.skipped_lines,
            "seconds": round(self.seconds, 3),
            "ms_per_query": round(1000 * self.seconds / self.reranked, 3) if self.reranked else None,
            "output": str(self.output),
            "trec": str(self.trec) if self.trec else None,
        }

    def rows(self) -> list[tuple[str, str]]:
        per_query = self.seconds / self.reranked if self.reranked else 0.0
        return [
            ("queries", f"{self.total:,}"),
            ("already done (resumed)", f"{self.resumed:,}"),
            ("reranked now", f"{self.reranked:,}"),
            ("malformed lines skipped", f"{self.skipped_lines:,}"),
            ("wall time", f"{self.seconds:.1f} s ({per_query * 1000:.1f} ms/query)"),
            ("results", str(self.output)),
            ("TREC run", str(self.trec) if self.trec else "-"),
        ]


def _qid(obj: dict) -> str:
    return str(obj["query"]["qid"])


def load_unique_requests(
    path: Path, *, skip_bad: bool = False, report: ReadReport | None = None
) -> list[Request]:
    requests = list(read_requests(path, skip_bad=skip_bad, report=report))
    seen: set[str] = set()
    for request in requests:
        if request.qid in seen:
            raise ValueError(f"{path}: query {request.qid!r} appears more than once")
        seen.add(request.qid)
    return requests


def rerank_file(
    requests_path: str | Path,
    output_path: str | Path,
    rerank: RerankBatch,
    *,
    chunk_size: int = 16,
    trec_path: str | Path | None = None,
    tag: str = "rrdistill",
    skip_bad: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RerankSummary:
    """Rerank every request of `requests_path` into `output_path`, resuming a previous run.

    `progress(done, total)` is called after each chunk. The TREC run, when asked for, is
    rebuilt from the complete output at the end (written atomically, in input order).
    """
    started = time.perf_counter()
    requests_path, output_path = Path(requests_path), Path(output_path)
    report = ReadReport()
    requests = load_unique_requests(requests_path, skip_bad=skip_bad, report=report)
    wanted = {r.qid for r in requests}
    with JsonlAppender(output_path, key=_qid) as out:
        foreign = out.done - wanted
        if foreign:
            raise ValueError(
                f"{output_path} holds results for queries that are not in {requests_path} "
                f"(e.g. {sorted(foreign)[0]!r}): it belongs to another job; choose another output"
            )
        resumed = len(out.done)
        todo = [r for r in requests if r.qid not in out.done]
        if progress is not None:
            progress(resumed, len(requests))
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            results = list(rerank(chunk))
            if [r.qid for r in results] != [r.qid for r in chunk]:
                raise ValueError("the reranker must return one result per request, in order")
            for request, result in zip(chunk, results, strict=True):
                if sorted(result.docids) != sorted(request.docids):
                    raise ValueError(f"query {request.qid!r}: the reranker changed the candidate set")
                out.append(request_to_json(result))
            if progress is not None:
                progress(resumed + start + len(chunk), len(requests))
    trec = Path(trec_path) if trec_path is not None else None
    if trec is not None:
        by_qid = {r.qid: r for r in read_requests(output_path)}
        write_trec_run(trec, (Ranking.from_request(by_qid[r.qid]) for r in requests), tag=tag)
    return RerankSummary(
        total=len(requests),
        resumed=resumed,
        reranked=len(todo),
        skipped_lines=len(report.skipped),
        seconds=time.perf_counter() - started,
        output=output_path,
        trec=trec,
    )
