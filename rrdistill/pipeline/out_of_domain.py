"""Out-of-domain sets: collections no stage trains or tunes on, judged with the in-domain systems.

A student distilled on one collection may have learned that collection rather than relevance.
``retrieve-ood`` gives each set of ``out_of_domain`` its first-stage candidates and BM25 row;
``evaluate-ood`` (:func:`~rrdistill.pipeline.eval_steps.evaluate_out_of_domain`) reranks them with
every cross-encoder bundle, fused with BM25 at the weight chosen on the in-domain dev queries.
Nothing is chosen on these queries, and a set sharing a query with the training or dev queries
is refused: it would not measure anything out of domain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rrdistill.pipeline.config import OutOfDomainSettings
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.systems import EvalSet
from rrdistill.types import Passage, Qrels, Request


def qrels_file(folder: Path, split: str) -> Path:
    """``qrels/<split>.tsv`` (a BEIR folder), else ``qrels.txt`` (RankGPT's folders ship TREC qrels)."""
    for path in (folder / "qrels" / f"{split}.tsv", folder / "qrels.txt"):
        if path.exists():
            return path
    raise FileNotFoundError(f"{folder}: no qrels/{split}.tsv or qrels.txt to judge the out-of-domain set by")


def eval_set(ctx: PipelineContext, settings: OutOfDomainSettings) -> EvalSet:
    """The set as the evaluation stages see it: its cached candidates, its qrels, its folder of rows."""
    from rrdistill.io import read_qrels

    qrels = read_qrels(qrels_file(ctx.path(settings.data), settings.split))
    return EvalSet(settings.name, ctx.layout.ood_requests(settings.name), qrels, out_of_domain=settings.name)


def bm25_order(requests: Sequence[Request], corpus: Iterable[Passage]) -> list[Request]:
    """Each request's candidates scored by BM25 (statistics over `corpus`), best first; ties keep their order.

    A set that comes with its candidates then reaches the rerankers in BM25's order, as a BEIR set
    does, and its BM25 row and ``+bm25`` fusions have BM25 scores. A candidate sharing no term
    with its query scores 0.
    """
    from rrdistill.retrieve import BM25Retriever

    passages = {p.docid: p for p in corpus}
    ranked = BM25Retriever(list(passages.values())).search([r.query for r in requests], k=len(passages))
    ordered = []
    for request, hits in zip(requests, ranked, strict=True):
        bm25 = {c.docid: float(c.score or 0.0) for c in hits.candidates}
        scores = [bm25.get(c.docid, 0.0) for c in request.candidates]
        ordered.append(request.ranked_by(scores))
    return ordered


def retrieved_candidates(folder: Path, settings: OutOfDomainSettings, qrels: Qrels) -> list[Request]:
    """BM25's top-k of a BEIR corpus for the first `max_queries` judged queries (qrels order, as BEIR)."""
    from rrdistill.io import read_beir
    from rrdistill.retrieve import BM25Retriever

    data = read_beir(folder, split=None)
    queries = [data.queries[q] for q in qrels if q in data.queries][: settings.max_queries]
    return BM25Retriever(list(data.corpus.values())).search(queries, k=settings.top_k)


def given_candidates(folder: Path, settings: OutOfDomainSettings, qrels: Qrels) -> list[Request]:
    """A RankGPT file's first `top_k` candidates of its first `max_queries` judged queries, in BM25 order.

    BM25's statistics are those of every passage in the file, however few queries are kept.
    """
    from rrdistill.io import read_rankgpt

    every = read_rankgpt(folder / "data.json")
    judged = [r for r in every if r.qid in qrels][: settings.max_queries]
    heads = [Request(r.query, r.candidates[: settings.top_k]) for r in judged]
    return bm25_order(heads, (c.passage for r in every for c in r.candidates))


def candidates(
    ctx: PipelineContext, settings: OutOfDomainSettings, qrels: Qrels
) -> tuple[list[Request], str]:
    """The set's first-stage candidates and how they were drawn, in words (for the report)."""
    folder = ctx.path(settings.data)
    if (folder / "corpus.jsonl").exists():
        return retrieved_candidates(folder, settings, qrels), f"BM25 top-{settings.top_k} of its corpus"
    if (folder / "data.json").exists():
        described = f"its given candidates (the first {settings.top_k} of each list), in BM25 order"
        return given_candidates(folder, settings, qrels), described
    raise FileNotFoundError(f"{folder}: neither a BEIR folder (corpus.jsonl) nor a RankGPT one (data.json)")


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def training_queries(ctx: PipelineContext) -> set[str]:
    """Texts of every query the run trains or tunes on: the labelling split and the dev split."""
    from rrdistill.io import iter_jsonl, read_qrels
    from rrdistill.pipeline.heldout import DEV_SPLIT

    view = ctx.train_data
    qids: set[str] = set()
    for split in (ctx.config.labels.split, DEV_SPLIT):
        qids.update(read_qrels(view / "qrels" / f"{split}.tsv"))
    return {
        _normalised(str(obj.get("text", "")))
        for _, obj in iter_jsonl(view / "queries.jsonl")
        if str(obj.get("_id")) in qids
    }


def check_unseen(name: str, requests: Sequence[Request], seen: set[str]) -> None:
    """Refuse an out-of-domain set holding a query (by text) that the run trains or tunes on."""
    from rrdistill.pipeline.heldout import LeakError

    shared = sorted({r.query.text for r in requests if _normalised(r.query.text) in seen})
    if shared:
        raise LeakError(
            f"out-of-domain set {name!r} shares {len(shared)} queries with the training or dev queries "
            f"({'; '.join(shared[:3])}…): it is not out of domain"
        )


def retrieve_out_of_domain(ctx: PipelineContext) -> dict[str, Any]:
    """Each out-of-domain set's candidates, written once into the run folder, and its BM25 row."""
    from rrdistill.io import write_requests
    from rrdistill.pipeline.teacher_steps import bm25_record

    seen = training_queries(ctx)
    summary = {}
    for settings in ctx.config.out_of_domain:
        if settings.name == ctx.dataset:
            raise ValueError(f"out_of_domain {settings.name!r} is the in-domain data's name: rename it")
        judged = eval_set(ctx, settings)
        requests, first_stage = candidates(ctx, settings, judged.qrels)
        check_unseen(settings.name, requests, seen)
        write_requests(judged.requests, requests)
        record = bm25_record(
            requests,
            judged.qrels,
            ctx.layout.ood_trec(judged.dataset),
            ctx.layout.system_file("bm25", judged.out_of_domain),
            depth=settings.top_k,
            dataset=judged.dataset,
            notes={"first_stage": first_stage},
        )
        summary[settings.name] = {"queries": record.queries, "ndcg@10": round(record.metrics["ndcg@10"], 4)}
    return summary
