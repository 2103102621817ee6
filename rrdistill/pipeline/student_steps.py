"""Stages from the reference ranker to the students: train, label, distill, export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrdistill.chat import is_url
from rrdistill.checkpoint_names import TRAINING_RECORD
from rrdistill.pipeline.context import PipelineContext

REFERENCE = "reference"
STUDENT = "student-ce"
BASELINE = "baseline-ce"
BI_STUDENT = "student-bi"
BI_BASELINE = "baseline-bi"
LISTWISE = "listwise-lm"


def _checkpoint_of(run_dir: Path) -> Path:
    """The one trained checkpoint a cached training folder holds (named by its config hash)."""
    found = sorted(p.parent for p in run_dir.glob(f"*/{TRAINING_RECORD}"))
    if len(found) != 1:
        raise RuntimeError(f"{run_dir} should hold exactly one trained checkpoint, found {len(found)}")
    return found[0]


def keep_only(run_dir: Path, keep: Path) -> None:
    """Drop checkpoints of earlier configurations, so the folder has one answer."""
    import shutil

    for path in run_dir.iterdir() if run_dir.exists() else []:
        if path.is_dir() and path != keep and (path / TRAINING_RECORD).exists():
            shutil.rmtree(path)


def train_reference(ctx: PipelineContext) -> dict[str, Any]:
    """The best ranker available offline: MiniLM-L6 fine-tuned on the qrels (BM25 hard negatives)."""
    from rrdistill.distill.students.trainer import (
        CrossEncoderTrainConfig,
        fixture_config,
        train_cross_encoder,
    )

    settings = ctx.config.reference
    if settings.base_model is None:
        config = fixture_config(ctx.train_data, **settings.overrides)
    else:
        config = CrossEncoderTrainConfig(
            base_model=str(ctx.path(settings.base_model)),
            data=str(ctx.train_data),
            name=REFERENCE,
            **settings.overrides,
        )
    trained = train_cross_encoder(
        config, ctx.layout.reference_dir, progress=ctx.progress("reference cross-encoder")
    )
    keep_only(ctx.layout.reference_dir, trained.path)
    return {
        "checkpoint": str(trained.path),
        "train_seconds": trained.info["timing"]["train_seconds"],
        "steps": trained.info["metrics"]["steps"],
    }


def export_checkpoint(ctx: PipelineContext, checkpoint: Path, name: str) -> dict[str, Any]:
    """fp32/int8 bundles of one checkpoint, parity measured on dev queries and recorded in each manifest.

    Parity decides whether a bundle is accepted (``export.accept_drift``), so it is measured on
    the dev split, not on the evaluated queries.
    """
    from rrdistill.export.pipeline import ExportConfig, export_bundle
    from rrdistill.export.validate import ParityConfig
    from rrdistill.pipeline.heldout import DEV_SPLIT

    settings = ctx.config.export
    summary: dict[str, Any] = {}
    for precision in settings.precisions:
        bundle = ctx.layout.bundle(f"{name}-{precision}")
        result = export_bundle(
            checkpoint,
            bundle,
            ExportConfig(
                precision=precision,
                accept_drift=settings.accept_drift,
                overwrite=True,
                parity=ParityConfig(
                    data=ctx.train_data,
                    split=DEV_SPLIT,
                    queries=settings.parity_queries,
                    passages=settings.parity_passages,
                ),
            ),
        )
        summary[precision] = {
            "bundle": str(result.bundle),
            "bytes": result.size_bytes,
            "max_abs_diff": result.parity.max_abs_diff,
            "ndcg_delta": result.parity.ndcg_delta,
            "violations": result.violations,
        }
    return summary


def export_reference(ctx: PipelineContext) -> dict[str, Any]:
    return export_checkpoint(ctx, _checkpoint_of(ctx.layout.reference_dir), ctx.reference_name)


def label(ctx: PipelineContext) -> dict[str, Any]:
    """Teacher permutations of the labelling queries' BM25 top-k (resumable)."""
    from rrdistill.distill.students.label import bundle_reranker, label_requests, results_path_for
    from rrdistill.pipeline import dense
    from rrdistill.pipeline.heldout import fusion_weight

    settings, layout = ctx.config, ctx.layout
    if settings.labels.labeller == "reference":
        bundle = ctx.labeller_bundle
        rerank = bundle_reranker(bundle, threads=settings.threads)
        identity: dict[str, Any] = {"labeller": bundle}
        share = dense.mix_weight(ctx)
        if share is not None:  # the reference mixed with a zero-shot bi-encoder (`labels.dense`)
            rerank = dense.ensemble_reranker(ctx, rerank, share)
            identity["dense"] = {"model": dense.dense_system(ctx), "weight": share}
        weight = fusion_weight(ctx)
        if weight is not None:
            from rrdistill.fusion import fused_reranker

            rerank = fused_reranker(rerank, weight)
        identity["fusion"] = weight
    elif settings.labels.labeller == "teacher":
        from rrdistill.distill.backends import SamplingParams, open_backend
        from rrdistill.distill.teacher.rerank import teacher_prompt_settings, window_batch_reranker
        from rrdistill.distill.window_ranker import GenerativeRanker
        from rrdistill.window import WindowConfig

        prompt = teacher_prompt_settings(ctx.teacher)
        ranker = GenerativeRanker(
            open_backend(ctx.teacher, model=settings.teacher.model),
            SamplingParams(max_new_tokens=settings.teacher.max_new_tokens, temperature=0.0),
            reasoning=prompt.get("reasoning", True),
            max_passage_tokens=prompt.get("max_passage_tokens", 512),
        )
        rerank = window_batch_reranker(
            ranker, WindowConfig(settings.eval.window, settings.eval.step, settings.labels.top_k)
        )
        identity = {"labeller": ctx.teacher if is_url(ctx.teacher) else Path(ctx.teacher)}
    else:
        raise ValueError(
            f"labels.labeller must be 'reference' or 'teacher', not {settings.labels.labeller!r}"
        )
    identity["requests"] = layout.label_requests
    ctx.resume_or_clear("label", [layout.labels, results_path_for(layout.labels)], identity)
    summary = label_requests(
        layout.label_requests,
        layout.labels,
        rerank,
        progress=ctx.progress(f"labelling ({settings.labels.labeller})"),
    )
    return {
        "labels": summary.labels,
        "labeller": settings.labels.labeller,
        "seconds": round(summary.job.seconds, 1),
        "with_reasoning": summary.with_reasoning,
        "repairs": summary.repairs.to_dict(),
    }


def student_config(ctx: PipelineContext) -> Any:
    """The run's cross-encoder student settings (also what ``benchmarks/student_losses.py`` varies)."""
    from rrdistill.distill.students.cross_encoder import CrossEncoderStudentConfig

    reference = ctx.config.reference
    settings = ctx.config.cross_encoder
    if settings.init == "reference":
        base = _checkpoint_of(ctx.layout.reference_dir)
    elif settings.init == "base":
        if reference.base_model:
            base = ctx.path(reference.base_model)
        else:
            from rrdistill.distill.students.trainer import fixture_config

            base = Path(fixture_config(ctx.train_data).base_model)
    else:
        raise ValueError(f"cross_encoder.init must be 'reference' or 'base', not {settings.init!r}")
    return CrossEncoderStudentConfig(
        base_model=str(base),
        labels=str(ctx.layout.labels),
        data=str(ctx.train_data),
        layers=settings.layers,
        loss=settings.loss,
        name=STUDENT,
        **settings.overrides,
    )


def train_baseline(ctx: PipelineContext) -> dict[str, Any]:
    """The same architecture trained on the qrels alone: what distillation has to beat."""
    from rrdistill.distill.students.cross_encoder import supervised_baseline_config
    from rrdistill.distill.students.trainer import train_cross_encoder
    from rrdistill.pipeline.student_selection import chosen_settings

    run_dir = ctx.layout.model_dir(BASELINE)
    student = replace(student_config(ctx), **chosen_settings(ctx))  # the same settings as the student
    config = replace(supervised_baseline_config(student, run_dir), name=BASELINE)
    trained = train_cross_encoder(config, run_dir, progress=ctx.progress("supervised baseline"))
    keep_only(run_dir, trained.path)
    return {"checkpoint": str(trained.path), "train_seconds": trained.info["timing"]["train_seconds"]}


def _export_models(ctx: PipelineContext, names: list[str]) -> dict[str, Any]:
    """Bundles of each named model folder's one checkpoint (see :func:`export_checkpoint`)."""
    return {name: export_checkpoint(ctx, _checkpoint_of(ctx.layout.model_dir(name)), name) for name in names}


def export_students(ctx: PipelineContext) -> dict[str, Any]:
    return _export_models(ctx, [STUDENT] + ([BASELINE] if ctx.config.cross_encoder.baseline else []))


def bi_student_config(ctx: PipelineContext) -> Any:
    """The run's bi-encoder student: the configured bi-encoder learning the labels' scores (KL)."""
    from rrdistill.distill.students.bi_encoder import BiEncoderStudentConfig
    from rrdistill.pipeline.dense import model_path

    settings = ctx.config.bi_encoder
    return BiEncoderStudentConfig(
        base_model=str(model_path(ctx, settings.base_model)),
        labels=str(ctx.layout.labels),
        layers=settings.layers,
        name=BI_STUDENT,
        **settings.overrides,
    )


def train_bi_student(ctx: PipelineContext) -> dict[str, Any]:
    """A bi-encoder distilled from the labeller's scores, starting from a pretrained embedding model."""
    return _train_bi_encoder(ctx, bi_student_config(ctx), "bi-encoder student")


def train_bi_baseline(ctx: PipelineContext) -> dict[str, Any]:
    """The same bi-encoder and settings trained on the qrels alone (MNRL, BM25 hard negatives)."""
    config = replace(
        bi_student_config(ctx), loss="mnrl", labels=None, data=str(ctx.train_data), name=BI_BASELINE
    )
    return _train_bi_encoder(ctx, config, "bi-encoder baseline")


def _train_bi_encoder(ctx: PipelineContext, config: Any, what: str) -> dict[str, Any]:
    """Train (or reuse) `config` in its model folder, which then holds that checkpoint only."""
    from rrdistill.distill.students.bi_encoder import distill_bi_encoder

    run_dir = ctx.layout.model_dir(config.name)
    trained = distill_bi_encoder(config, run_dir, progress=ctx.progress(what))
    keep_only(run_dir, trained.path)
    return {
        "checkpoint": str(trained.path),
        "train_seconds": trained.info["timing"]["train_seconds"],
        "queries": trained.info["data"]["queries"],
        "examples": trained.info["data"]["examples"],
    }


def export_bi_students(ctx: PipelineContext) -> dict[str, Any]:
    """bi-encoder bundles of the student (and baseline), parity on dev queries as for cross-encoders."""
    return _export_models(ctx, [BI_STUDENT] + ([BI_BASELINE] if ctx.config.bi_encoder.baseline else []))


def train_listwise(ctx: PipelineContext) -> dict[str, Any]:
    """The small listwise LM: fast + reasoning modes in one model, SFT on the labels' windows."""
    from rrdistill.config import load_config, to_dict
    from rrdistill.distill.students.label import read_labels
    from rrdistill.distill.students.listwise import train_listwise_student
    from rrdistill.distill.teacher.config import TeacherConfig
    from rrdistill.io import read_requests
    from rrdistill.window import WindowConfig

    settings, layout = ctx.config.listwise, ctx.layout
    out = layout.model_dir(LISTWISE)
    config = load_config(TeacherConfig, ctx.path(settings.config))
    config = replace(config, output_dir=str(out))
    labels = list(read_labels(layout.labels))[: settings.max_queries]
    requests = {r.qid: r for r in read_requests(layout.label_requests)}
    resume = ctx.resume_or_clear(
        "listwise", [out], {"config": to_dict(config), "labels": layout.labels, "settings": vars(settings)}
    )
    summary = train_listwise_student(
        config,
        labels,
        requests,
        resume=resume,
        rationale=settings.rationale,
        window=WindowConfig(settings.window, settings.step, settings.top_k),
    )
    return {
        "checkpoint": summary["checkpoint"],
        "seconds": round(summary["seconds"], 1),
        "windows": summary["windows"],
        "queries": len(labels),
    }


def export_listwise(ctx: PipelineContext) -> dict[str, Any]:
    """fp32 / int8 listwise bundles, parity measured on dev windows (it decides drift acceptance)."""
    from rrdistill.export.causal_lm import ListwiseExportConfig, export_listwise_lm
    from rrdistill.export.validate import ParityConfig
    from rrdistill.pipeline.heldout import DEV_SPLIT

    settings = ctx.config
    checkpoint = ctx.layout.model_dir(LISTWISE) / "final"
    summary = {}
    for precision in settings.listwise.precisions:
        bundle = export_listwise_lm(
            checkpoint,
            ctx.layout.bundle(f"{LISTWISE}-{precision}"),
            ListwiseExportConfig(
                precision=precision,
                window_size=settings.eval.window,
                step=settings.eval.step,
                passage_max_tokens=_trained_passage_tokens(checkpoint),
                max_new_tokens_fast=4 * settings.eval.window + 16,
                max_new_tokens_reasoning=256,
                accept_drift=settings.export.accept_drift,
                parity=ParityConfig(
                    data=ctx.train_data, split=DEV_SPLIT, queries=3, passages=settings.eval.window
                ),
            ),
        )
        manifest = json.loads((bundle / "rrdistill.json").read_text())
        summary[precision] = {"bundle": str(bundle), "parity": manifest.get("parity")}
    return summary


def _trained_passage_tokens(checkpoint: Path) -> int:
    """Passages are cut as in training (the checkpoint records it), so prompts look the same."""
    from rrdistill.distill.teacher.train import TEACHER_MANIFEST

    path = checkpoint / TEACHER_MANIFEST
    if path.exists():
        return int(json.loads(path.read_text()).get("max_passage_tokens") or 128)
    return 128
