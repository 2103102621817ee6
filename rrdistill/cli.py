"""The ``rrdistill`` command line: one typer app, one thin command per stage.

Commands only parse arguments, call the stage's module and print a summary; the work lives in
the modules so that it can be used from Python without the CLI. The commands are grouped by
stage in :mod:`rrdistill.commands`; heavy imports happen inside them, so ``rrdistill --help`` is
instant and the base install can run it.
"""

from __future__ import annotations

import typer

from rrdistill.commands import bench, data, export, models, pipeline, rerank, students, teacher

app = typer.Typer(
    name="rrdistill",
    help="Distil a listwise reasoning reranker into compact rerankers that run at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(data.retrieve)
app.command("synthesize")(teacher.synthesize)
app.command("train-teacher")(teacher.train_teacher)
app.command("tiny-model")(teacher.tiny_model)
app.command()(students.label)
app.command()(students.distill)
app.command()(rerank.rerank)
app.command()(rerank.serve)
app.command("export")(export.export_model)
app.command("eval")(data.evaluate_run)
app.command()(pipeline.pipeline)
app.command("bench")(bench.bench)
app.add_typer(models.app, name="models")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
