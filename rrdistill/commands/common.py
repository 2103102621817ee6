"""Helpers every command shares: error exit, skipped-line report, small argument conveniences."""

from __future__ import annotations

from pathlib import Path

import typer

from rrdistill.io import ReadReport


def fail(message: str) -> typer.Exit:
    from rich.markup import escape

    from rrdistill.reporting import console

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def report_skips(report: ReadReport) -> None:
    from rich.markup import escape

    from rrdistill.reporting import console

    if report.skipped:
        console.print(f"[yellow]{escape(report.summary())}[/]", highlight=False, soft_wrap=True)
        for error in report.skipped[:5]:
            console.print(f"  [yellow]{escape(str(error))}[/]", highlight=False, soft_wrap=True)


def qrels_path(qrels: Path, split: str) -> Path:
    """A qrels file, or a BEIR folder whose ``qrels/<split>.tsv`` is meant."""
    return qrels / "qrels" / f"{split}.tsv" if qrels.is_dir() else qrels


def progress_callback(progress, task):  # type: ignore[no-untyped-def]
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update
