"""Teacher permutations for a query set: the supervision the students learn from.

A label is one query's global order of its top-k as the teacher sees it, with the windows that
produced it (per-window input and output order, reasoning, repairs) and provenance. Labels come
from running a teacher here — a listwise checkpoint or OpenAI-compatible server through the
sliding window, or any bundle the runtime loads — or from permutations that already exist:
RankLLM/RankGPT result JSONL, TREC runs, ReasonRank's released ``final_list`` data.

Running a teacher goes through the resumable rerank loop into ``<labels>.results.jsonl`` (the
reranked requests, with passage text); the label file is then written from it atomically, so a
killed job resumes without redoing or losing a query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.io import (
    ReadReport,
    atomic_writer,
    dumps_line,
    read_jsonl_records,
    read_requests,
    read_trec_run,
)
from rrdistill.metrics import ranked_docids
from rrdistill.prompts import Repairs
from rrdistill.rerank import RerankSummary, rerank_file
from rrdistill.types import Request


@dataclass
class PermutationLabel:
    qid: str
    query: str
    docids: list[str]
    """The teacher's order, best first."""
    windows: list[dict[str, Any]] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    reasoning: str | None = None
    """The reasoning of the window that decided the head of the list, when the teacher reasons."""
    scores: list[float] | None = None
    """Teacher scores aligned with `docids`, when the teacher scores (cross-encoders): for MarginMSE."""
    teacher: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"qid": self.qid, "query": self.query, "docids": self.docids}
        if self.scores is not None:
            record["scores"] = self.scores
        record.update(
            {
                "windows": self.windows,
                "repairs": self.repairs,
                "reasoning": self.reasoning,
                "teacher": self.teacher,
            }
        )
        return record


def parse_label(obj: dict[str, Any]) -> PermutationLabel:
    docids = obj.get("docids")
    if not isinstance(docids, list) or not all(isinstance(d, str) for d in docids):
        raise ValueError("'docids' must be a list of strings")
    if len(set(docids)) != len(docids):
        raise ValueError("'docids' repeats a document")
    scores = obj.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(docids)):
        raise ValueError("'scores' must be a list aligned with 'docids'")
    qid, query = obj.get("qid"), obj.get("query", "")
    if not isinstance(qid, str) or not qid or not isinstance(query, str):
        raise ValueError("'qid' must be a non-empty string and 'query' a string")
    return PermutationLabel(
        qid,
        query,
        docids,
        obj.get("windows") or [],
        obj.get("repairs") or {},
        obj.get("reasoning"),
        scores,
        obj.get("teacher") or {},
    )


def read_labels(
    path: str | Path, *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[PermutationLabel]:
    return read_jsonl_records(path, parse_label, skip_bad=skip_bad, report=report)


def write_labels(path: str | Path, labels: Iterable[PermutationLabel]) -> int:
    count = 0
    with atomic_writer(path) as handle:
        for label in labels:
            handle.write(dumps_line(label.to_json()))
            count += 1
    return count


# ----------------------------------------------------------------------------------------------
# Importing permutations that already exist
# ----------------------------------------------------------------------------------------------


SCORING_TEACHERS = ("cross-encoder", "ensemble")
"""Teacher kinds whose candidate scores are relevance scores (MarginMSE reads them); a listwise
teacher's are only its order."""


def label_from_result(request: Request, source: str) -> PermutationLabel:
    """A reranked request (RankLLM/RankGPT result, or ours) → its label; our teacher extras kept."""
    info = request.extra.get("teacher") or {}
    windows = info.get("windows") or []
    reasoning = next((w.get("reasoning") for w in reversed(windows) if w.get("reasoning")), None)
    scores = [c.score for c in request.candidates]
    teacher = {k: v for k, v in info.items() if k not in ("windows", "repairs")} or {"source": source}
    return PermutationLabel(
        qid=request.qid,
        query=request.query.text,
        docids=request.docids,
        windows=windows,
        repairs=info.get("repairs") or {},
        reasoning=reasoning,
        scores=scores if info.get("kind") in SCORING_TEACHERS and None not in scores else None,  # type: ignore[arg-type]
        teacher=teacher,
    )


def labels_from_results(path: str | Path, *, skip_bad: bool = False) -> Iterator[PermutationLabel]:
    for request in read_requests(path, skip_bad=skip_bad):
        yield label_from_result(request, f"results:{Path(path).name}")


def labels_from_trec(
    run_path: str | Path, queries: dict[str, str] | None = None
) -> Iterator[PermutationLabel]:
    """A TREC run's order per query (trec_eval's tie rule); query texts from `queries` if given."""
    run = read_trec_run(run_path)
    for qid, scores in run.items():
        docids = ranked_docids(scores)
        yield PermutationLabel(
            qid,
            (queries or {}).get(qid, ""),
            docids,
            scores=[scores[d] for d in docids],
            teacher={"source": f"trec:{Path(run_path).name}"},
        )


def labels_from_reasonrank(path: str | Path) -> Iterator[PermutationLabel]:
    """ReasonRank's released data (or our synthesis output): ``final_list`` with its reasoning."""
    from rrdistill.distill.teacher.samples import read_teacher_samples

    for sample in read_teacher_samples(path):
        yield PermutationLabel(
            qid=sample.qid,
            query=sample.request.query.text,
            docids=list(sample.final_list),
            windows=[
                {
                    "start": 0,
                    "end": len(sample.final_list),
                    "docids": sample.initial_list,
                    "order": sample.final_order,
                    "reasoning": sample.reasoning,
                }
            ],
            reasoning=sample.reasoning,
            teacher={"source": f"reasonrank:{Path(path).name}", **sample.provenance},
        )


# ----------------------------------------------------------------------------------------------
# Labelling with a teacher
# ----------------------------------------------------------------------------------------------


@dataclass
class LabelSummary:
    job: RerankSummary
    labels: int
    repairs: Repairs
    with_reasoning: int
    labels_path: Path

    def rows(self) -> list[tuple[str, str]]:
        return [
            *self.job.rows(),
            ("labels written", f"{self.labels:,} → {self.labels_path}"),
            ("with reasoning", f"{self.with_reasoning:,}"),
            (
                "repairs (out of range / duplicates / missing / no answer)",
                f"{self.repairs.out_of_range} / {self.repairs.duplicates} / {self.repairs.missing} / {self.repairs.no_answer}",
            ),
        ]


def results_path_for(labels_path: str | Path) -> Path:
    labels_path = Path(labels_path)
    return labels_path.with_name(labels_path.name.removesuffix(".jsonl") + ".results.jsonl")


def bundle_reranker(
    bundle: str | Path, *, threads: int | None = None, reasoning: bool = False, batch_size: int | None = None
) -> Callable[[list[Request]], list[Request]]:
    """Any runtime bundle as a teacher: scores (cross-encoder) or windows (listwise LM) are kept."""
    from rrdistill.runtime import Reranker

    reranker = Reranker.load(bundle, threads=threads)
    if reasoning and not reranker.supports_reasoning:
        raise ValueError(f"{bundle}: a {reranker.kind} bundle cannot reason (reasoning=True)")
    info = {
        "model": Path(bundle).name,
        "kind": reranker.kind,
        "prompt_version": reranker.manifest.prompt_version if reranker.manifest is not None else None,
    }

    def rerank(chunk: list[Request]) -> list[Request]:
        ranked_lists = reranker.rerank_many(chunk, batch_size=batch_size, reasoning=reasoning)
        out = []
        for request, ranked in zip(chunk, ranked_lists, strict=True):
            result = request.reordered([r.index for r in ranked], [r.score for r in ranked])
            extra: dict[str, Any] = dict(info)
            if ranked.windows:
                extra["windows"] = [w.to_json() for w in ranked.windows]
                total = Repairs()
                for w in ranked.windows:
                    total = total + w.repairs
                extra["repairs"] = total.to_dict()
            result.extra["teacher"] = extra
            out.append(result)
        return out

    return rerank


def label_requests(
    requests_path: str | Path,
    labels_path: str | Path,
    rerank: Callable[[list[Request]], list[Request]],
    *,
    chunk_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> LabelSummary:
    """Rerank every request with the teacher (resumable), then write the labels atomically."""
    results = results_path_for(labels_path)
    job = rerank_file(requests_path, results, rerank, chunk_size=chunk_size, progress=progress, tag="teacher")
    labels = list(labels_from_results(results))
    write_labels(labels_path, labels)
    repairs = Repairs()
    for label in labels:
        repairs = repairs + Repairs(
            **{k: int(v) for k, v in label.repairs.items() if k in Repairs.__dataclass_fields__}
        )
    return LabelSummary(
        job, len(labels), repairs, sum(1 for label in labels if label.reasoning), Path(labels_path)
    )
