"""Helpers every command shares: error exit, skipped-line report, small argument conveniences."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from rrdistill.io import ReadReport


def fail(message: str) -> typer.Exit:
    from rich.markup import escape

    from rrdistill.reporting import console

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def current_context() -> Any:
    """The click context of the running command, or None outside one. Typer ≥ 0.20 vendors its own
    click (``typer._click``), whose context stack plain ``click`` does not see, so both are asked."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            context = importlib.import_module(module).get_current_context(silent=True)
        except ImportError:
            continue
        if context is not None:
            return context
    return None


def given(name: str) -> bool:
    """Whether the user set parameter `name` (its Python name) on the command line or in the
    environment, rather than leaving it at its default. Outside a click context (a command called
    as a Python function) nothing counts as given."""
    context = current_context()
    if context is None:
        return False
    source = context.get_parameter_source(name)
    return getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")


def spelling(name: str) -> str:
    """How the user wrote parameter `name`: its flag (``--per-tensor`` for the off side of a
    switch), or an argument's metavar (``REQUESTS``)."""
    context = current_context()
    if context is None:
        return "--" + name.replace("_", "-")
    for param in context.command.params:
        if param.name != name:
            continue
        if getattr(param, "param_type_name", "") == "option":
            if param.secondary_opts and context.params.get(name) is False:
                return max(param.secondary_opts, key=len)
            return max(param.opts, key=len)
        return (param.metavar or name).upper()
    raise KeyError(name)


def refuse_options(mode: str, reasons: dict[str, str]) -> None:
    """Fail, naming each parameter of `reasons` the user gave, with why it does not apply to `mode`.

    A command with modes calls this for the options the chosen mode cannot honour, so no option
    is ever silently ignored (tests/test_cli_options.py checks every mode of every command).
    """
    found = [
        f"{spelling(name)} does not apply to {mode}: {why}" for name, why in reasons.items() if given(name)
    ]
    if found:
        raise fail("; ".join(found))


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
