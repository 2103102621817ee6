"""The whole pipeline in one command: `rrdistill pipeline --config configs/pipeline/demo.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrdistill.commands.common import fail


def pipeline(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline YAML (configs/pipeline/…)", exists=True)
    ],
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Redo this stage and every stage after it")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Use this trained listwise teacher (checkpoint dir or OpenAI-compatible URL) instead of training one"
        ),
    ] = None,
    labeller: Annotated[
        str | None, typer.Option(help="Who labels the students' queries: 'reference' or 'teacher'")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Override the config's run_dir")] = None,
    list_stages: Annotated[
        bool, typer.Option("--list", help="Print the stages, each up to date or to run, and exit")
    ] = False,
) -> None:
    """Run every stage end to end (BM25 → teacher → labels → students → bundles → eval → report)."""
    from rich.markup import escape

    from rrdistill.config import ConfigError, load_config
    from rrdistill.extras import MissingExtraError
    from rrdistill.io import LineError
    from rrdistill.pipeline import PipelineConfig, PipelineContext, build_stages, run_pipeline
    from rrdistill.reporting import console, print_table, progress_bar

    try:
        settings = load_config(PipelineConfig, config)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if teacher is not None:
        settings.teacher.source = teacher
    if labeller is not None:
        settings.labels.labeller = labeller
        if labeller != "reference" and (settings.labels.dense is not None or settings.bi_encoder.enabled):
            # a listwise teacher writes permutations, no scores: nothing to mix or to learn by KL
            console.print(
                f"--labeller {escape(labeller)}: the config's labels.dense mix and bi_encoder student need "
                "a scoring labeller; both are off for this run",
                highlight=False,
                soft_wrap=True,
            )
            settings.labels.dense, settings.bi_encoder.enabled = None, False
    if run_dir is not None:
        settings.run_dir = str(run_dir)
    if list_stages:
        from rrdistill.stages import StageRunner

        ctx = PipelineContext(settings)
        state = StageRunner(ctx.layout.root, create=False)
        for stage in build_stages(ctx):
            status = "up to date" if state.up_to_date(stage) else "to run"
            console.print(f"{stage.name:<18} {status}", highlight=False)
        return
    with progress_bar() as progress:

        def hook(description: str):  # type: ignore[no-untyped-def]
            task = progress.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return update

        def announce(stage) -> None:  # type: ignore[no-untyped-def]
            progress.console.rule(f"[bold]{escape(stage.name)}")

        try:
            results = run_pipeline(PipelineContext(settings, hook), from_stage=from_stage, on_start=announce)
        except (ConfigError, FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
            raise fail(str(exc)) from None
    print_table(
        "Pipeline",
        ["stage", "status", "seconds", "summary"],
        [
            (
                r.name,
                r.status,
                f"{r.seconds:.1f}",
                _brief(r.summary),
            )
            for r in results
        ],
    )
    report = Path(settings.run_dir) / "report.md"
    if report.exists():
        console.print(report.read_text(encoding="utf-8").split("\n## ")[0], highlight=False, soft_wrap=True)


def _brief(summary: dict) -> str:  # type: ignore[type-arg]
    """The scalar figures of a stage summary, short (paths and nested reports stay in stages.json)."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, int | bool) or (isinstance(value, str) and len(value) < 24):
            parts.append(f"{key}={value}")
    return ", ".join(parts)
