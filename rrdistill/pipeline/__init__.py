"""The whole pipeline as one command: dev split → BM25 → synthesize → teacher → label → students → export → eval.

Stages are chained with :class:`~rrdistill.stages.StageRunner`: each declares the files it reads
and writes and the config section it depends on, so a rerun skips finished stages (content
hashes) and ``from_stage`` redoes from there. Stage functions live in small modules by concern
(``teacher_steps``, ``student_steps``, ``eval_steps``, ``out_of_domain``, ``report``); this module
only wires them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rrdistill.chat import is_url
from rrdistill.pipeline.config import PipelineConfig
from rrdistill.pipeline.context import PipelineContext
from rrdistill.stages import Stage, StageResult, StageRunner

__all__ = ["PipelineConfig", "PipelineContext", "build_stages", "run_pipeline"]


def _data_files(ctx: PipelineContext, split: str) -> list[Path]:
    return [ctx.data / "corpus.jsonl", ctx.data / "queries.jsonl", ctx.data / "qrels" / f"{split}.tsv"]


def _train_files(ctx: PipelineContext) -> list[Path]:
    """The run's training data: the labelling split without its dev queries."""
    view = ctx.train_data
    return [view / "corpus.jsonl", view / "queries.jsonl", view / "qrels" / f"{ctx.config.labels.split}.tsv"]


def build_stages(ctx: PipelineContext) -> list[Stage]:
    from rrdistill.pipeline import (
        eval_steps,
        heldout,
        out_of_domain,
        report,
        student_selection,
        student_steps,
        teacher_steps,
    )
    from rrdistill.pipeline.student_steps import BASELINE, BI_BASELINE, BI_STUDENT, LISTWISE, STUDENT

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
    reference = ctx.reference_name
    # which candidates and windows: what retrieval and the listwise export depend on (not which
    # cross-encoder precisions the evaluation scores)
    candidates = {k: v for k, v in asdict(config.eval).items() if k != "precisions"}
    data = _data_files(ctx, config.eval.split) + _data_files(ctx, config.labels.split)[2:]
    dev_qrels = layout.data_view / "qrels" / f"{heldout.DEV_SPLIT}.tsv"
    stages = [
        stage(
            "split",
            heldout.write_split,
            data,
            [layout.data_view],
            dev=asdict(config.dev),
            splits=[config.labels.split, config.eval.split],
        ),
        stage(
            "retrieve",
            teacher_steps.retrieve,
            [*data, layout.data_view],
            [
                layout.eval_requests,
                layout.subset_requests,
                layout.label_requests,
                layout.eval_trec,
                layout.dev_requests,
                layout.dev_subset_requests,
            ],
            eval=candidates,
            labels=asdict(config.labels),
            dev=asdict(config.dev),
        ),
    ]
    if ctx.teacher_is_trained_here:
        teacher_config = ctx.path(config.teacher.config)
        stages += [
            stage(
                "synthesize",
                teacher_steps.synthesize,
                [teacher_config, *_train_files(ctx)],
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
    teacher_inputs = [layout.subset_requests] + ([Path(ctx.teacher)] if not is_url(ctx.teacher) else [])
    stages += [
        stage(
            "teacher-eval",
            teacher_steps.evaluate_teacher,
            teacher_inputs,
            [layout.system_file(system) for system, _, _ in teacher_steps.teacher_stages(ctx)],
            teacher=ctx.teacher,
            max_new_tokens=config.teacher.max_new_tokens,
        ),
        stage(
            "reference",
            student_steps.train_reference,
            _train_files(ctx),
            [layout.reference_dir],
            reference=asdict(config.reference),
        ),
        stage(
            "export-reference",
            student_steps.export_reference,
            [layout.reference_dir, dev_qrels],
            bundles(reference, precisions),
            export=asdict(config.export),
            system=reference,
        ),
        stage(
            "fusion",
            heldout.choose_fusion,
            [layout.dev_requests, ctx.labeller_bundle, layout.split_file],
            [layout.fusion_choice],
            labels=asdict(config.labels),
            threads=config.threads,
        ),
    ]
    labeller = [ctx.labeller_bundle] if config.labels.labeller == "reference" else teacher_inputs[1:]
    stages.append(
        stage(
            "label",
            student_steps.label,
            [layout.label_requests, layout.fusion_choice, *labeller],
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
                student_selection.choose_student,
                [layout.labels, layout.reference_dir, layout.dev_requests, layout.split_file],
                [layout.model_dir(STUDENT), layout.student_choice],
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
                    [*_train_files(ctx), layout.reference_dir, layout.student_choice],
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
                [*students, dev_qrels],
                student_bundles,
                export=asdict(config.export),
            )
        )
    if config.bi_encoder.enabled:
        bi_models = [layout.model_dir(BI_STUDENT)]
        bi_settings = asdict(config.bi_encoder)
        stages.append(
            stage(
                "student-bi",
                student_steps.train_bi_student,
                [layout.labels],
                [layout.model_dir(BI_STUDENT)],
                settings=bi_settings,
            )
        )
        if config.bi_encoder.baseline:
            bi_models.append(layout.model_dir(BI_BASELINE))
            stages.append(
                stage(
                    "baseline-bi",
                    student_steps.train_bi_baseline,
                    _train_files(ctx),
                    [layout.model_dir(BI_BASELINE)],
                    settings=bi_settings,
                )
            )
        stages.append(
            stage(
                "export-bi",
                student_steps.export_bi_students,
                [*bi_models, dev_qrels],
                bundles(BI_STUDENT, precisions)
                + (bundles(BI_BASELINE, precisions) if config.bi_encoder.baseline else []),
                export=asdict(config.export),
            )
        )
    evaluated = [layout.bundle(system) for system, _ in eval_steps.scored_systems(ctx)]
    stages.append(
        stage(
            "evaluate",
            eval_steps.evaluate_bundles,
            [layout.eval_requests, layout.fusion_choice, *evaluated],
            [layout.system_file(b.name) for b in evaluated],
            threads=config.threads,
            labels=asdict(config.labels),
            precisions=config.eval.precisions,
        )
    )
    if config.out_of_domain:
        sets = config.out_of_domain
        folders = [ctx.path(s.data) for s in sets]
        requests = [layout.ood_requests(s.name) for s in sets]
        stages += [
            stage(
                "retrieve-ood",
                out_of_domain.retrieve_out_of_domain,
                [*folders, layout.data_view],
                [*requests, *(layout.system_file("bm25", s.name) for s in sets)],
                out_of_domain=[asdict(s) for s in sets],
                labels_split=config.labels.split,
            ),
            stage(
                "evaluate-ood",
                eval_steps.evaluate_out_of_domain,
                [*requests, *folders, layout.fusion_choice, *evaluated],
                [layout.system_file(b.name, s.name) for s in sets for b in evaluated],
                out_of_domain=[asdict(s) for s in sets],
                threads=config.threads,
                labels=asdict(config.labels),
            ),
        ]
    if config.listwise.enabled:
        listwise_config = ctx.path(config.listwise.config)
        listwise_bundles = bundles(LISTWISE, config.listwise.precisions)
        stages += [
            stage(
                "student-listwise",
                student_steps.train_listwise,
                [layout.labels, layout.label_requests, listwise_config],
                [layout.model_dir(LISTWISE) / "final"],
                # what trains the model: the bundles it is exported to are the next stage's business
                settings={k: v for k, v in asdict(config.listwise).items() if k != "precisions"},
            ),
            stage(
                "export-listwise",
                student_steps.export_listwise,
                [layout.model_dir(LISTWISE) / "final"],
                listwise_bundles,
                eval=candidates,
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
                    [layout.dev_subset_requests, layout.subset_requests, listwise_bundles[0], *fast],
                    [
                        layout.cascade,
                        *(layout.bundle(eval_steps.cascade_bundle(p)) for p in config.listwise.precisions),
                        *(layout.system_file(f"{LISTWISE}-{p}-auto") for p in config.listwise.precisions),
                    ],
                    cascade=asdict(config.cascade),
                    dev=asdict(config.dev),
                    threads=config.threads,
                )
            )
    if config.bench.enabled:
        from rrdistill.pipeline import bench_step

        stages.append(
            stage(
                "bench",
                bench_step.run_bench,
                [layout.reference_dir, *bundles(reference, precisions)],
                [layout.bench],
                bench=asdict(config.bench),
                threads=config.threads,
            )
        )
    stages.append(
        stage(
            "report",
            report.write_report,
            [layout.root / "eval", layout.cascade, layout.bench, layout.fusion_choice, layout.split_file],
            [layout.report_json, layout.report_md],
            config=ctx.config_snapshot(),
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
