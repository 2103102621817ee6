"""Evaluation stages: every bundle through the runtime, the cascade curve, and its calibrated bundle."""

from __future__ import annotations

import glob
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.student_steps import (
    BASELINE,
    BI_BASELINE,
    BI_STUDENT,
    LISTWISE,
    REFERENCE,
    STUDENT,
)
from rrdistill.pipeline.systems import (
    EvalSet,
    SystemRecord,
    bundle_size,
    describe_model,
    model_provenance,
    run_metrics,
)


def cascade_bundle(precision: str) -> str:
    """The listwise bundle of `precision` with the cascade's threshold: what ``reasoning="auto"`` serves."""
    return f"{LISTWISE}-{precision}-cascade"


def _trained_on(ctx: PipelineContext, name: str) -> str:
    """What a system of this run learned from, in words (from the config: who labels, which split)."""
    from rrdistill.pipeline import dense
    from rrdistill.pipeline.heldout import fusion_weight

    config = ctx.config
    split = f"{config.labels.split} minus {config.dev.queries} dev queries"
    if config.labels.labeller == "reference":
        weight = fusion_weight(ctx)
        share = dense.mix_weight(ctx)
        mixed = f" mixed with {dense.dense_system(ctx)}, a={share}," if share is not None else ""
        labeller = f"{ctx.labeller_system} (the reference{mixed}" + (
            f" fused with BM25, w={weight})" if weight is not None else ")"
        )
    else:
        labeller = f"the listwise teacher ({config.teacher.source})"
    labels = f"permutations by {labeller} of the BM25 top-{config.labels.top_k} of {split}"
    if name == LISTWISE:
        return (
            labels
            + (" with evidence rationales as its reasoning" if config.listwise.rationale else "")
            + f", first {config.listwise.max_queries} queries"
        )
    if name in (STUDENT, BI_STUDENT):
        return labels + (" (their scores, KL)" if name == BI_STUDENT else "")
    return f"{split} qrels + BM25 hard negatives"


def in_domain(ctx: PipelineContext, requests: Path) -> EvalSet:
    """The in-domain evaluated queries (all of them, or a subset's `requests`) and their qrels."""
    return EvalSet(ctx.dataset, requests, ctx.eval_qrels)


def scored_systems(ctx: PipelineContext) -> list[tuple[str, str]]:
    """(system, what it is) of every scoring bundle the evaluation scores (cross-encoders and
    bi-encoders), in report order."""
    config = ctx.config
    names = [REFERENCE]
    if config.cross_encoder.enabled:
        names += [STUDENT] + ([BASELINE] if config.cross_encoder.baseline else [])
    if config.bi_encoder.enabled:
        names += [BI_STUDENT] + ([BI_BASELINE] if config.bi_encoder.baseline else [])
    scored = config.eval.precisions or config.export.precisions
    systems = [
        (f"{ctx.reference_name if name == REFERENCE else name}-{precision}", name)
        for name in names
        for precision in config.export.precisions
        if precision in scored
    ]
    if (ctx.labeller_bundle.name, REFERENCE) not in systems:
        systems.insert(0, (ctx.labeller_bundle.name, REFERENCE))
    return systems


def _record_bundle(
    ctx: PipelineContext,
    system: str,
    name: str,
    bundle: Path,
    judged: EvalSet,
    *,
    kind: str,
    mode: str | None,
    depth: int,
    reasoning: bool | str = False,
) -> SystemRecord:
    """One bundle reranks `judged`'s candidates through the runtime; its row is scored on `judged`'s qrels."""
    from rrdistill.distill.students.label import bundle_reranker
    from rrdistill.rerank import rerank_file
    from rrdistill.runtime.bundle import load_manifest

    layout = ctx.layout
    output = layout.run_file(system, ".jsonl", judged.out_of_domain)
    trec = layout.run_file(system, ".trec", judged.out_of_domain)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    rerank = bundle_reranker(bundle, threads=ctx.config.threads, reasoning=reasoning)  # type: ignore[arg-type]
    where = f" ({judged.dataset})" if judged.out_of_domain else ""
    job = rerank_file(
        judged.requests,
        output,
        rerank,
        trec_path=trec,
        tag=system,
        progress=ctx.progress(f"rerank: {system}{where}"),
    )
    metrics, per_query, queries = run_metrics(trec, judged.qrels)
    manifest = load_manifest(bundle)
    provenance = model_provenance(bundle)
    record = SystemRecord(
        system=system,
        kind=kind,
        mode=mode,
        precision=manifest.precision,
        bundle=str(bundle),
        model=describe_model(provenance) + (f", {mode} mode" if mode else ""),
        trained_on=_trained_on(ctx, name),
        queries=queries,
        depth=depth,
        metrics=metrics,
        latency_ms_per_query=1000 * job.seconds / max(job.reranked, 1),
        size_bytes=bundle_size(bundle),
        parity=manifest.parity,
        per_query=per_query,
        run_file=str(trec),
        provenance=provenance,
        roles=["labeller"] if system == ctx.labeller_system else [],
        dataset=judged.dataset,
    )
    record.save(layout.system_file(system, judged.out_of_domain))
    return record


def _evaluate_bundles(ctx: PipelineContext, judged: EvalSet, depth: int) -> dict[str, Any]:
    """Every scoring bundle reranks `judged`'s candidates, alone and fused with BM25; with
    ``labels.dense`` the bi-encoder alone and the reference mixed with it get rows too."""
    from rrdistill.pipeline import dense
    from rrdistill.pipeline.heldout import fusion_weight

    weight = fusion_weight(ctx)
    summary = {}
    systems = scored_systems(ctx)
    rows = {system for system, _ in systems}
    if ctx.config.labels.dense is not None:
        rows |= {dense.dense_system(ctx), dense.ensemble_system(ctx)}
    _drop_stale_rows(ctx, judged, rows)
    records = {}
    for system, name in systems:
        records[system] = _record_bundle(
            ctx,
            system,
            name,
            ctx.layout.bundle(system),
            judged,
            kind="bi-encoder" if name in (BI_STUDENT, BI_BASELINE) else "cross-encoder",
            mode=None,
            depth=depth,
        )
    share = dense.mix_weight(ctx)
    if share is not None:
        records.update(_record_dense(ctx, records[ctx.labeller_bundle.name], share, judged))
    for system, record in records.items():
        summary[system] = {
            "ndcg@10": round(record.metrics["ndcg@10"], 4),
            "ms": round(record.latency_ms_per_query or 0, 1),
        }
        if weight is not None:
            # the student learned a fused ranking: fused the same way at inference (free), it is
            # compared with its labeller on equal terms, and so is the supervised baseline
            fused = _record_fusion(ctx, record, weight, judged)
            summary[fused.system] = {"ndcg@10": round(fused.metrics["ndcg@10"], 4)}
    return summary


def _record_dense(
    ctx: PipelineContext, reference: SystemRecord, share: float, judged: EvalSet
) -> dict[str, SystemRecord]:
    """The labeller's bi-encoder alone (zero-shot) and the reference mixed with it, on `judged`.

    The reference's scores are read from its run (it was just scored); the bi-encoder embeds the
    passages it has not embedded yet. Its latency is its batched embedding time per passage.
    """
    from dataclasses import replace

    from rrdistill.io import read_requests
    from rrdistill.pipeline import dense

    requests = list(read_requests(judged.requests))
    ranked = {
        r.qid: r for r in read_requests(ctx.layout.run_file(reference.system, ".jsonl", judged.out_of_domain))
    }
    ce = dense.aligned_scores(requests, [ranked[r.qid] for r in requests])
    bi = dense.scorer(ctx).scores(requests)
    passages = sum(len(r.candidates) for r in requests) / max(len(requests), 1)
    bi_ms = dense.ms_per_query(ctx, passages)
    name = dense.dense_system(ctx)
    alone = replace(
        reference,
        system=name,
        kind="bi-encoder",
        precision=None,
        bundle=None,
        model=f"{name} as pretrained (zero-shot bi-encoder, cosine, {ctx.config.labels.dense_max_length} "
        "tokens): the labeller's dense part",
        trained_on="nothing here (pretrained sentence embeddings)",
        latency_ms_per_query=bi_ms,
        size_bytes=None,
        parity=None,
        provenance={"kind": "bi-encoder", "model": name},
        roles=[],
        notes={},
    )
    mix = replace(
        reference,
        system=dense.ensemble_system(ctx),
        kind="ensemble",
        trained_on=f"{reference.trained_on} (the reference); {name}: nothing here",
        model=f"{reference.model} mixed with {name} (a={share}·z(reference) + {1 - share:.1f}·z(cosine))",
        latency_ms_per_query=(reference.latency_ms_per_query or 0) + bi_ms,
        roles=[],
        notes={"mix": {"reference": share, "bi-encoder": name, "normalisation": "z-score per query"}},
    )
    records = {}
    for record, scores in (
        (alone, bi),
        (mix, [dense.mixed(c, b, share) for c, b in zip(ce, bi, strict=True)]),
    ):
        records[record.system] = _record_scores(ctx, record, requests, scores, judged)
    return records


def _record_scores(
    ctx: PipelineContext, record: SystemRecord, requests: list[Any], scores: list[Any], judged: EvalSet
) -> SystemRecord:
    """`record` with the metrics of `scores` (each request's, in candidate order): run files written."""
    from rrdistill.io import write_requests

    results = [r.ranked_by(s) for r, s in zip(requests, scores, strict=True)]
    write_requests(ctx.layout.run_file(record.system, ".jsonl", judged.out_of_domain), results)
    return _save_ranked(ctx, record, results, judged)


def _save_ranked(
    ctx: PipelineContext, record: SystemRecord, results: list[Any], judged: EvalSet
) -> SystemRecord:
    """`record` judged on `results` (ranked requests, best first): TREC run, metrics, row file."""
    from dataclasses import replace

    from rrdistill.io import write_trec_run
    from rrdistill.types import Ranking

    layout, where = ctx.layout, judged.out_of_domain
    trec = layout.run_file(record.system, ".trec", where)
    write_trec_run(
        trec,
        (
            Ranking(r.qid, [c.docid for c in r.candidates], [float(c.score) for c in r.candidates])
            for r in results
        ),  # type: ignore[arg-type]
        tag=record.system,
    )
    metrics, per_query, queries = run_metrics(trec, judged.qrels)
    record = replace(record, metrics=metrics, per_query=per_query, queries=queries, run_file=str(trec))
    record.save(layout.system_file(record.system, where))
    return record


def _drop_stale_rows(ctx: PipelineContext, judged: EvalSet, current: set[str]) -> None:
    """Remove cross-encoder rows (and their runs) an earlier config scored and this one does not.

    Otherwise a row dropped from the config (e.g. by ``eval.precisions``) would stay in the report
    with the figures of a run that no longer matches the config.
    """
    folder = ctx.layout.eval_dir(judged.out_of_domain)
    for path in sorted(folder.glob("*.json")):
        record = SystemRecord.load(path)
        scored = record.kind in ("cross-encoder", "bi-encoder", "ensemble")
        if scored and record.system.removesuffix("+bm25") not in current:
            for stale in folder.glob(f"{glob.escape(path.stem)}.*"):
                stale.unlink()


def evaluate_bundles(ctx: PipelineContext) -> dict[str, Any]:
    """Every scoring bundle reranks the evaluation queries' BM25 top-k through the runtime."""
    return _evaluate_bundles(ctx, in_domain(ctx, ctx.layout.eval_requests), ctx.config.eval.top_k)


def evaluate_out_of_domain(ctx: PipelineContext) -> dict[str, Any]:
    """The same bundles (and fusion weight) on each out-of-domain set: nothing is chosen there."""
    from rrdistill.pipeline.out_of_domain import eval_set

    return {
        settings.name: _evaluate_bundles(ctx, eval_set(ctx, settings), settings.top_k)
        for settings in ctx.config.out_of_domain
    }


def _record_fusion(
    ctx: PipelineContext, ranker: SystemRecord, weight: float, judged: EvalSet
) -> SystemRecord:
    """A cross-encoder's run fused with BM25's scores, as the labeller ranks: free at inference time."""
    from dataclasses import replace

    from rrdistill.fusion import interpolate
    from rrdistill.io import read_requests

    layout, where = ctx.layout, judged.out_of_domain
    first = {r.qid: {c.docid: c.score for c in r.candidates} for r in read_requests(judged.requests)}
    results = []
    for result in read_requests(layout.run_file(ranker.system, ".jsonl", where)):
        bm25 = first[result.qid]
        blend = interpolate(
            [bm25[c.docid] for c in result.candidates],  # type: ignore[misc]
            [c.score for c in result.candidates],  # type: ignore[misc]
            weight,
        )
        results.append(result.ranked_by(blend))
    system = f"{ranker.system}+bm25"
    labeller = system == ctx.labeller_system
    record = replace(
        ranker,
        system=system,
        model=f"{ranker.model}, fused with BM25 (w={weight})"
        + (": the students' labeller" if labeller else " as the labeller is"),
        notes={"fusion": {"weight": weight, "normalisation": "z-score per query"}},
        roles=["labeller"] if labeller else [],
    )
    return _save_ranked(ctx, record, results, judged)


def evaluate_listwise(ctx: PipelineContext) -> dict[str, Any]:
    """The listwise student in its fast and reasoning modes, on the generative subset."""
    layout, config = ctx.layout, ctx.config
    summary = {}
    for precision in config.listwise.precisions:
        for mode in ("fast", "reasoning"):
            system = f"{LISTWISE}-{precision}-{mode}"
            record = _record_bundle(
                ctx,
                system,
                LISTWISE,
                layout.bundle(f"{LISTWISE}-{precision}"),
                in_domain(ctx, layout.subset_requests),
                kind="listwise-lm",
                mode=mode,
                depth=config.eval.generative_depth,
                reasoning=mode == "reasoning",
            )
            summary[system] = {
                "ndcg@10": round(record.metrics["ndcg@10"], 4),
                "ms": round(record.latency_ms_per_query or 0, 1),
            }
    return summary


def _per_query_runs(cascade: Any, requests: list[Any], qrels: Any) -> dict[str, list[float]]:
    """Confidence, quality and time of the fast pass and of the reasoning pass, query by query."""
    from rrdistill.metrics import ndcg_at_k

    columns: dict[str, list[float]] = {
        "confidence": [],
        "fast": [],
        "reasoning": [],
        "fast_ms": [],
        "reasoning_ms": [],
    }
    for request in requests:
        query, passages = request.query.text, [c.passage for c in request.candidates]
        judged = qrels.get(request.qid, {})
        started = time.perf_counter()
        fast = cascade.rerank(query, passages, reasoning=False)
        fast_ms = 1000 * (time.perf_counter() - started)
        started = time.perf_counter()
        slow = cascade.rerank(query, passages, reasoning=True)
        total_ms = 1000 * (time.perf_counter() - started)
        columns["confidence"].append(float(fast.confidence))
        columns["fast"].append(ndcg_at_k([r.id for r in fast], judged, 10))
        columns["reasoning"].append(ndcg_at_k([r.id for r in slow], judged, 10))
        columns["fast_ms"].append(fast_ms)
        columns["reasoning_ms"].append(max(total_ms - fast_ms, 0.0))
    return columns


def cascade(ctx: PipelineContext) -> dict[str, Any]:
    """Escalation curves on the dev queries, the threshold picked there, and a calibrated bundle scored on test.

    The threshold is a tuned value: it is chosen on dev queries (held out from every training
    stage) and then applied, unchanged, to the evaluated queries — which choose nothing.
    """
    from rrdistill.io import atomic_writer, read_beir, read_requests
    from rrdistill.pipeline.heldout import DEV_SPLIT, check_disjoint
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.cascade import CascadeReranker, cascade_curve, pick_threshold
    from rrdistill.runtime.reasoning import ListwiseReranker

    layout, config = ctx.layout, ctx.config
    precision = config.listwise.precisions[0]
    listwise_bundle = layout.bundle(f"{LISTWISE}-{precision}")
    listwise = ListwiseReranker.load(listwise_bundle, threads=config.threads)
    dev_requests = list(read_requests(layout.dev_subset_requests))
    dev_qrels = read_beir(ctx.train_data, DEV_SPLIT).qrels
    calibrated_on = [r.qid for r in dev_requests]
    evaluated_on = [r.qid for r in read_requests(layout.subset_requests)]
    check_disjoint("the cascade threshold", calibrated_on, [*evaluated_on, *ctx.eval_qrels])
    fasts: dict[str, Any] = {f"{LISTWISE} fast": listwise}
    student_precision = config.export.precisions[-1]
    if config.cross_encoder.enabled:
        fasts[f"{STUDENT}-{student_precision}"] = Reranker.load(
            layout.bundle(f"{STUDENT}-{student_precision}"), threads=config.threads
        )
    curves: dict[str, Any] = {}
    for name, fast in fasts.items():
        runner = CascadeReranker(fast, listwise, threshold=float("inf"), head=config.eval.window)
        columns = _per_query_runs(runner, dev_requests, dev_qrels)
        curve = cascade_curve(
            columns["confidence"],
            columns["fast"],
            columns["reasoning"],
            columns["fast_ms"],
            columns["reasoning_ms"],
        )
        chosen = pick_threshold(curve, config.cascade.tolerance)
        curves[name] = {
            "fast": name,
            "reasoner": f"{LISTWISE} reasoning",
            "queries": len(dev_requests),
            "split": DEV_SPLIT,
            "curve": [p.to_json() for p in curve],
            "chosen": chosen.to_json(),
            "per_query": {"qids": calibrated_on, **columns},
        }
    chosen = curves[f"{LISTWISE} fast"]["chosen"]
    calibration = {
        "threshold": chosen["threshold"],
        "share": chosen["share"],
        "tolerance": config.cascade.tolerance,
        "calibrated_on": f"{config.data} {DEV_SPLIT} (carved from {config.labels.split}), "
        f"{len(dev_requests)} queries",
        "calibrated_qids": calibrated_on,
        "calibrated_with": listwise_bundle.name,
    }
    # One threshold, chosen with the first precision's bundle, serves every precision: parity at
    # export keeps their fast passes (and so their confidences) close; each is scored on its own.
    targets, records = {}, {}
    for each in config.listwise.precisions:
        target = _calibrated_copy(
            layout.bundle(f"{LISTWISE}-{each}"), layout.bundle(cascade_bundle(each)), calibration
        )
        record = _record_bundle(
            ctx,
            f"{LISTWISE}-{each}-auto",
            LISTWISE,
            target,
            in_domain(ctx, layout.subset_requests),
            kind="listwise-lm",
            mode="auto",
            depth=config.eval.generative_depth,
            reasoning="auto",
        )
        record.notes["cascade"] = {
            "threshold": chosen["threshold"],
            "expected_share": chosen["share"],
            "calibrated_on": DEV_SPLIT,
            "calibrated_with": listwise_bundle.name,
        }
        record.save(layout.system_file(record.system))
        targets[each], records[record.system] = str(target), round(record.metrics["ndcg@10"], 4)
    with atomic_writer(layout.cascade) as handle:
        json.dump(
            {
                "curves": curves,
                "chosen": chosen,
                "calibrated_on": calibrated_on,
                "evaluated_on": evaluated_on,
                "bundles": targets,
            },
            handle,
            indent=2,
        )
    return {
        name: {"share": c["chosen"]["share"], "dev_quality": round(c["chosen"]["quality"], 4)}
        for name, c in curves.items()
    } | {"test_ndcg@10": records}


def _calibrated_copy(source: Path, target: Path, calibration: dict[str, Any]) -> Path:
    """`source` bundle copied to `target` with the cascade's threshold in its manifest (atomically)."""
    from rrdistill.runtime.bundle import load_manifest, write_manifest

    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    manifest = load_manifest(staging)
    manifest.extra = {**manifest.extra, "cascade": calibration}
    write_manifest(staging, manifest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
