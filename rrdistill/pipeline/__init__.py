"""The whole pipeline as one command: BM25 → synthesize → teacher → label → students → export → eval.

Stages are chained with :class:`~rrdistill.stages.StageRunner`: each declares the files it reads
and writes and the config section it depends on, so a rerun skips finished stages (content
hashes) and ``from_stage`` redoes from there. Stage functions live in small modules by concern
(``teacher_steps``, ``student_steps``, ``eval_steps``, ``report``); this module only wires them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rrdistill.pipeline.config import PipelineConfig
from rrdistill.pipeline.context import PipelineContext
from rrdistill.stages import Stage, StageResult, StageRunner

__all__ = ["PipelineConfig", "PipelineContext", "build_stages", "run_pipeline"]


def _data_files(ctx: PipelineContext, split: str) -> list[Path]:
    return [ctx.data / "corpus.jsonl", ctx.data / "queries.jsonl", ctx.data / "qrels" / f"{split}.tsv"]


def build_stages(ctx: PipelineContext) -> list[Stage]:
    from rrdistill.pipeline import eval_steps, report, student_steps, teacher_steps
    from rrdistill.pipeline.student_steps import BASELINE, LISTWISE, REFERENCE, STUDENT

    config, layout = ctx.config, ctx.layout

    def stage(
        name: str,
        run: Callable[[PipelineContext], Any],
        inputs: list[Path],
        outputs: list[Path],
        **params: Any,
    ) -> Stage:
        return Stage(name, lambda: run(ctx), inputs=inputs, outputs=outputs, params=params)

    def bundles(name: str, precisions: list[str]) -> list[Path]:
        return [layout.bundle(f"{name}-{p}") for p in precisions]

    precisions = config.export.precisions
    data = _data_files(ctx, config.eval.split) + _data_files(ctx, config.labels.split)[2:]
    stages = [
        stage(
            "retrieve",
            teacher_steps.retrieve,
            data,
            [layout.eval_requests, layout.subset_requests, layout.label_requests, layout.eval_trec],
            eval=asdict(config.eval),
            labels=asdict(config.labels),
        )
    ]
    if ctx.teacher_is_trained_here:
        teacher_config = ctx.path(config.teacher.config)
        stages += [
            stage(
                "synthesize",
                teacher_steps.synthesize,
                [teacher_config, *_data_files(ctx, config.labels.split)],
                [layout.samples],
                synthesis=asdict(config.teacher.synthesis),
            ),
            stage(
                "teacher",
                teacher_steps.train_teacher,
                [teacher_config, layout.samples],
                [layout.teacher_checkpoint],
            ),
        ]
    teacher_inputs = [layout.subset_requests] + ([Path(ctx.teacher)] if "://" not in ctx.teacher else [])
    stages += [
        stage(
            "teacher-eval",
            teacher_steps.evaluate_teacher,
            teacher_inputs,
            [layout.system_file("teacher")],
            teacher=ctx.teacher,
            max_new_tokens=config.teacher.max_new_tokens,
        ),
        stage(
            "reference",
            student_steps.train_reference,
            _data_files(ctx, config.labels.split),
            [layout.reference_dir],
            reference=asdict(config.reference),
        ),
        stage(
            "export-reference",
            student_steps.export_reference,
            [layout.reference_dir],
            bundles(REFERENCE, precisions),
            export=asdict(config.export),
        ),
    ]
    labeller = (
        bundles(REFERENCE, precisions)[:1] if config.labels.labeller == "reference" else teacher_inputs[1:]
    )
    stages.append(
        stage(
            "label",
            student_steps.label,
            [layout.label_requests, *labeller],
            [layout.labels],
            labels=asdict(config.labels),
            teacher=ctx.teacher,
        )
    )
    student_bundles: list[Path] = []
    if config.cross_encoder.enabled:
        students = [layout.model_dir(STUDENT)]
        stages.append(
            stage(
                "student-ce",
                student_steps.distill_student,
                [layout.labels, layout.reference_dir],
                [layout.model_dir(STUDENT)],
                settings=asdict(config.cross_encoder),
                reference=asdict(config.reference),
            )
        )
        if config.cross_encoder.baseline:
            students.append(layout.model_dir(BASELINE))
            stages.append(
                stage(
                    "baseline-ce",
                    student_steps.train_baseline,
                    [*_data_files(ctx, config.labels.split), layout.reference_dir],
                    [layout.model_dir(BASELINE)],
                    settings=asdict(config.cross_encoder),
                    reference=asdict(config.reference),
                )
            )
        student_bundles = bundles(STUDENT, precisions) + (
            bundles(BASELINE, precisions) if config.cross_encoder.baseline else []
        )
        stages.append(
            stage(
                "export-students",
                student_steps.export_students,
                students,
                student_bundles,
                export=asdict(config.export),
            )
        )
    evaluated = [*bundles(REFERENCE, precisions), *student_bundles]
    stages.append(
        stage(
            "evaluate",
            eval_steps.evaluate_bundles,
            [layout.eval_requests, *evaluated],
            [layout.system_file(b.name) for b in evaluated],
            threads=config.threads,
            fusion=config.labels.fusion,
        )
    )
    if config.listwise.enabled:
        listwise_config = ctx.path(config.listwise.config)
        listwise_bundles = bundles(LISTWISE, config.listwise.precisions)
        stages += [
            stage(
                "student-listwise",
                student_steps.train_listwise,
                [layout.labels, layout.label_requests, listwise_config],
                [layout.model_dir(LISTWISE) / "final"],
                settings=asdict(config.listwise),
            ),
            stage(
                "export-listwise",
                student_steps.export_listwise,
                [layout.model_dir(LISTWISE) / "final"],
                listwise_bundles,
                eval=asdict(config.eval),
            ),
            stage(
                "evaluate-listwise",
                eval_steps.evaluate_listwise,
                [layout.subset_requests, *listwise_bundles],
                [
                    layout.system_file(f"{b.name}-{m}")
                    for b in listwise_bundles
                    for m in ("fast", "reasoning")
                ],
                threads=config.threads,
            ),
        ]
        if config.cascade.enabled:
            fast = bundles(STUDENT, precisions)[-1:] if config.cross_encoder.enabled else []
            stages.append(
                stage(
                    "cascade",
                    eval_steps.cascade,
                    [layout.subset_requests, listwise_bundles[0], *fast],
                    [layout.cascade, layout.bundle(eval_steps.CASCADE_BUNDLE)],
                    cascade=asdict(config.cascade),
                    threads=config.threads,
                )
            )
    if config.bench.enabled:
        from rrdistill.pipeline import bench_step

        stages.append(
            stage(
                "bench",
                bench_step.run_bench,
                [layout.reference_dir, *bundles(REFERENCE, precisions)],
                [layout.bench],
                bench=asdict(config.bench),
                threads=config.threads,
            )
        )
    stages.append(
        stage(
            "report",
            report.write_report,
            [layout.root / "eval", layout.cascade, layout.bench],
            [layout.report_json, layout.report_md],
        )
    )
    return stages


def run_pipeline(
    ctx: PipelineContext,
    *,
    from_stage: str | None = None,
    on_start: Callable[[Stage], None] | None = None,
) -> list[StageResult]:
    """Run (or skip, when up to date) every stage of the pipeline in its run folder."""
    return StageRunner(ctx.layout.root).run(build_stages(ctx), from_stage=from_stage, on_start=on_start)
