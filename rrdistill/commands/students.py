"""Students: `rrdistill label` (teacher permutations) and `rrdistill distill` (train a student)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrdistill.commands.common import fail, given, progress_callback, refuse_options
from rrdistill.extras import MissingExtraError
from rrdistill.io import LineError

LABEL_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "requests": (
        ("--bundle", "--teacher", "--from-trec"),
        "imported results and ReasonRank data carry their own queries and passages",
    ),
    "model": (("--teacher",), "it names the model a teacher server serves"),
    "window": (("--teacher",), "windows are a listwise teacher's"),
    "step": (("--teacher",), "windows are a listwise teacher's"),
    "top_k": (("--teacher",), "a listwise teacher reranks the first K; other sources label every candidate"),
    "max_new_tokens": (("--teacher",), "only a listwise teacher generates"),
    "threads": (("--bundle",), "onnxruntime threads are a bundle teacher's"),
}
"""Parameters that apply to some teacher sources only: the sources, and why not the others."""


def label(
    requests: Annotated[
        Path | None,
        typer.Argument(help="Request JSONL to label (BM25 top-k); not needed when importing", exists=True),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Label JSONL to write")] = Path(
        "labels.jsonl"
    ),
    bundle: Annotated[Path | None, typer.Option(help="A runtime bundle as the teacher")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="A listwise teacher: checkpoint directory or OpenAI-compatible URL")
    ] = None,
    from_results: Annotated[
        Path | None, typer.Option(help="Import RankLLM/RankGPT result JSONL (or rrdistill rerank output)")
    ] = None,
    from_trec: Annotated[Path | None, typer.Option(help="Import a TREC run's orders")] = None,
    from_reasonrank: Annotated[
        Path | None, typer.Option(help="Import ReasonRank's released data (final_list + reasoning)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name the server serves (teacher URL)")] = None,
    window: Annotated[int, typer.Option(min=2, help="Window size (listwise teacher)")] = 20,
    step: Annotated[int, typer.Option(min=1, help="Window step (listwise teacher)")] = 10,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Rerank the first K candidates")] = 100,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generation budget per window")] = 4096,
    threads: Annotated[int | None, typer.Option(min=1, help="onnxruntime threads (bundle teacher)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON")] = None,
) -> None:
    """Teacher permutations for a query set (resumable), or imported from existing teacher outputs."""
    from rrdistill.reporting import print_table, progress_bar, write_json

    sources = {
        "--bundle": bundle,
        "--teacher": teacher,
        "--from-results": from_results,
        "--from-trec": from_trec,
        "--from-reasonrank": from_reasonrank,
    }
    chosen = [name for name, value in sources.items() if value is not None]
    if len(chosen) != 1:
        raise fail(f"give exactly one teacher source: {', '.join(sources)}")
    mode = chosen[0]
    refuse_options(mode, {n: why for n, (modes, why) in LABEL_OPTIONS.items() if mode not in modes})
    try:
        from rrdistill.distill.students import label as labelling

        if bundle is not None or teacher is not None:
            if requests is None:
                raise fail("labelling with a teacher needs REQUESTS (e.g. from `rrdistill retrieve`)")
            rerank = (
                labelling.bundle_reranker(bundle, threads=threads)
                if bundle is not None
                else _teacher_reranker(teacher, model, window, step, top_k, max_new_tokens)  # type: ignore[arg-type]
            )
            with progress_bar() as bar:
                task = bar.add_task("labelling", total=None)
                summary = labelling.label_requests(
                    requests, output, rerank, progress=progress_callback(bar, task)
                )
            rows = summary.rows()
            payload = {
                **summary.job.to_json(),
                "labels": summary.labels,
                "with_reasoning": summary.with_reasoning,
                "repairs": summary.repairs.to_dict(),
                "labels_path": str(output),
            }
        else:
            imported = _imported(labelling, from_results, from_trec, from_reasonrank, requests)
            count = labelling.write_labels(output, imported)
            rows = [("labels imported", f"{count:,} → {output}"), ("source", mode)]
            payload = {"labels": count, "labels_path": str(output), "source": mode}
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise fail(str(exc)) from None
    print_table("label", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, payload)


def _teacher_reranker(
    teacher: str, model: str | None, window: int, step: int, top_k: int, max_new_tokens: int
):  # type: ignore[no-untyped-def]
    from rrdistill.distill.backends import SamplingParams, open_backend
    from rrdistill.distill.teacher.rerank import teacher_ranker, window_batch_reranker
    from rrdistill.window import WindowConfig

    windows = WindowConfig(window, step, top_k)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    ranker, _ = teacher_ranker(teacher, open_backend(teacher, model=model), sampling, windows)
    return window_batch_reranker(ranker, windows)


def _imported(labelling, from_results, from_trec, from_reasonrank, requests):  # type: ignore[no-untyped-def]
    if from_results is not None:
        return labelling.labels_from_results(from_results)
    if from_trec is not None:
        from rrdistill.io import read_requests

        queries = {r.qid: r.query.text for r in read_requests(requests)} if requests else None
        return labelling.labels_from_trec(from_trec, queries)
    return labelling.labels_from_reasonrank(from_reasonrank)


_CROSS_ENCODER_ONLY = "the listwise LM learns by trl SFT on the teacher's windows"
DISTILL_REFUSED: dict[str, dict[str, str]] = {
    "listwise-lm": {
        "loss": f"it picks a cross-encoder loss; {_CROSS_ENCODER_ONLY} (token cross-entropy)",
        "targets": f"targets turn permutations into cross-encoder scores; {_CROSS_ENCODER_ONLY}",
        "list_size": "training windows come from the labels (the teacher's own, else 20 passages, step 10), "
        "and the bundle ranks windows of the same size",
        "head_learning_rate": "a causal LM has no classifier head (one learning rate: --learning-rate)",
        "baseline_data": "the supervised baseline is a cross-encoder trained on qrels",
    },
    "cross-encoder": {
        "config": "the YAML config describes a listwise LM's training (trl SFT)",
        "rationale": "rationales are reasoning for a listwise LM to learn",
        "resume": "cross-encoder runs are cached by their settings in the run folder: rerun the same "
        "command to reuse finished checkpoints",
    },
    "bi-encoder": {
        "loss": "a bi-encoder student learns the teacher's scores by KL divergence (its baseline: MNRL on qrels)",
        "targets": "a bi-encoder student reads the teacher's scores, not targets made from ranks",
        "head_learning_rate": "a bi-encoder has no classifier head (cosine of mean-pooled embeddings)",
        "config": "the YAML config describes a listwise LM's training (trl SFT)",
        "rationale": "rationales are reasoning for a listwise LM to learn",
        "resume": "bi-encoder runs are cached by their settings in the run folder: rerun the same "
        "command to reuse finished checkpoints",
    },
}
"""Options each student kind cannot honour, and why."""


def distill(
    labels: Annotated[Path, typer.Option(help="Label JSONL from `rrdistill label`", exists=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder (checkpoints are cached in it)")],
    student: Annotated[str, typer.Option(help="cross-encoder | bi-encoder | listwise-lm")] = "cross-encoder",
    base_model: Annotated[
        str | None,
        typer.Option(
            help="The HF encoder to start from (cross-encoder: a checkpoint folder or hub id); the causal "
            "LM (listwise LM: a checkpoint folder, hub id, GGUF file or registry name such as "
            "smollm2-135m-instruct; replaces the config's model)",
        ),
    ] = None,
    requests: Annotated[
        Path | None,
        typer.Option(
            help="Request JSONL with the passage texts (default: the labels' .results.jsonl)", exists=True
        ),
    ] = None,
    layers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Keep N blocks of the starting model (the first, the last, evenly spaced between)"
        ),
    ] = None,
    loss: Annotated[
        str,
        typer.Option(
            help="ranknet | weighted-ranknet | listnet | listmle | plistmle | lambdaloss | adr-mse | margin-mse"
        ),
    ] = "listmle",
    targets: Annotated[
        str | None, typer.Option(help="reciprocal | linear | graded (default: per loss)")
    ] = None,
    list_size: Annotated[int, typer.Option(min=2, help="The teacher's top-N per training list")] = 20,
    epochs: Annotated[
        float, typer.Option(min=0.01, help="Training epochs (listwise LM: overrides sft.num_train_epochs)")
    ] = 2.0,
    max_length: Annotated[
        int,
        typer.Option(
            min=8,
            help="Tokens per (query, passage) pair (listwise LM: per SFT sample, overrides sft.max_length)",
        ),
    ] = 96,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            help="Encoder learning rate (a cut student needs ~5e-4; see configs/pipeline); listwise LM: "
            "overrides sft.learning_rate"
        ),
    ] = None,
    head_learning_rate: Annotated[
        float | None, typer.Option(help="Cross-encoder: learning rate of the pooler and classifier head")
    ] = None,
    baseline_data: Annotated[
        Path | None,
        typer.Option(
            help="Also train the same architecture on this BEIR folder's qrels (supervised baseline)"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Listwise LM: teacher-style YAML (configs/students/…)"),
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N labelled queries")
    ] = None,
    rationale: Annotated[
        bool, typer.Option(help="Listwise LM: evidence rationales for windows without teacher reasoning")
    ] = False,
    resume: Annotated[bool, typer.Option(help="Listwise LM: continue an interrupted run")] = False,
) -> None:
    """Train a student on teacher permutations: a cross-encoder, a bi-encoder (on the teacher's scores), or a
    listwise LM (fast + reasoning)."""
    from rrdistill.reporting import print_table, progress_bar

    if student in DISTILL_REFUSED:
        refuse_options(f"--student {student}", DISTILL_REFUSED[student])
    try:
        if student == "cross-encoder":
            if base_model is None:
                raise fail("--student cross-encoder needs --base-model")
            from rrdistill.distill.students.cross_encoder import (
                CrossEncoderStudentConfig,
                distill_cross_encoder,
            )

            settings = CrossEncoderStudentConfig(
                base_model=str(base_model),
                labels=str(labels),
                requests=str(requests) if requests else None,
                data=str(baseline_data) if baseline_data else None,
                layers=layers,
                loss=loss,
                targets=targets,
                list_size=list_size,
                max_queries=max_queries,
                max_length=max_length,
                epochs=epochs,
                **{
                    name: value
                    for name, value in (
                        ("learning_rate", learning_rate),
                        ("head_learning_rate", head_learning_rate),
                    )
                    if value is not None
                },
            )
            with progress_bar() as bar:
                task = bar.add_task(f"distilling ({loss})", total=None)
                trained = distill_cross_encoder(settings, output, progress=progress_callback(bar, task))
                rows = _student_rows(trained)
                if baseline_data is not None:
                    from rrdistill.distill.students.cross_encoder import supervised_baseline_config
                    from rrdistill.distill.students.trainer import train_cross_encoder

                    task = bar.add_task("supervised baseline", total=None)
                    baseline = train_cross_encoder(
                        supervised_baseline_config(settings, output),
                        output,
                        progress=progress_callback(bar, task),
                    )
                    rows.append(("supervised baseline", str(baseline.path)))
        elif student == "bi-encoder":
            rows = _distill_bi_encoder(
                labels,
                output,
                requests,
                base_model,
                layers,
                list_size,
                max_queries,
                max_length,
                epochs,
                learning_rate,
                baseline_data,
            )
        elif student == "listwise-lm":
            overrides = {
                "num_train_epochs": epochs if given("epochs") else None,
                "max_length": max_length if given("max_length") else None,
                "learning_rate": learning_rate,
            }
            rows = _distill_listwise(
                labels,
                output,
                requests,
                config,
                max_queries,
                rationale,
                resume,
                base_model,
                layers,
                overrides,
            )
        else:
            raise fail(f"--student must be cross-encoder, bi-encoder or listwise-lm, got {student!r}")
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise fail(str(exc)) from None
    print_table(f"distill ({student})", ["", "value"], rows)


def _distill_bi_encoder(
    labels: Path,
    output: Path,
    requests: Path | None,
    base_model: str | None,
    layers: int | None,
    list_size: int,
    max_queries: int | None,
    max_length: int,
    epochs: float,
    learning_rate: float | None,
    baseline_data: Path | None,
) -> list[tuple[str, str]]:
    """A sentence-embedding student from a bi-encoder (e.g. all-MiniLM-L6-v2) on the teacher's scores."""
    from dataclasses import replace

    from rrdistill.distill.students.bi_encoder import BiEncoderStudentConfig, distill_bi_encoder
    from rrdistill.reporting import progress_bar

    if base_model is None:
        raise fail("--student bi-encoder needs --base-model (a sentence-transformers or HF encoder folder)")
    # the cross-encoders' CLI defaults (96 tokens, top 20, 2 epochs) are not a bi-encoder's: only
    # the options given override BiEncoderStudentConfig's own
    overrides = {
        "list_size": list_size if given("list_size") else None,
        "max_length": max_length if given("max_length") else None,
        "epochs": epochs if given("epochs") else None,
        "learning_rate": learning_rate,
    }
    settings = BiEncoderStudentConfig(
        base_model=str(base_model),
        labels=str(labels),
        requests=str(requests) if requests else None,
        layers=layers,
        max_queries=max_queries,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    with progress_bar() as bar:
        task = bar.add_task("distilling (KL on the teacher's scores)", total=None)
        rows = _student_rows(distill_bi_encoder(settings, output, progress=progress_callback(bar, task)))
        if baseline_data is not None:
            task = bar.add_task("supervised baseline (MNRL on qrels)", total=None)
            baseline = replace(
                settings, loss="mnrl", labels=None, data=str(baseline_data), name="bi-baseline"
            )
            trained = distill_bi_encoder(baseline, output, progress=progress_callback(bar, task))
            rows.append(("supervised baseline", str(trained.path)))
    return rows


def _student_rows(trained) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    info = trained.info
    metrics = info["metrics"]
    return [
        ("checkpoint", str(trained.path) + (" (cached)" if trained.cached else "")),
        (
            "teacher",
            str(info.get("teacher", {}).get("model") or info.get("teacher", {}).get("source") or "-"),
        ),
        ("loss / targets", f"{info['config']['loss']} / {info['data']['targets']}"),
        ("queries × list size", f"{info['data']['queries']} × {info['data']['list_size']}"),
        (
            "layers (blocks kept)",
            f"{info['initial_model']['layers']} ({', '.join(map(str, info['initial_model'].get('blocks', [])))})",
        ),
        ("steps", str(metrics["steps"])),
        (
            "loss first → last",
            f"{metrics['loss_first']:.4f} → {metrics['loss_last']:.4f}"
            if metrics["loss_first"] is not None
            else "-",
        ),
        ("training time", f"{info['timing']['train_seconds']:.1f} s"),
    ]


def _distill_listwise(
    labels, output, requests, config, max_queries, rationale, resume, base_model, layers, overrides
) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Train the listwise LM: the config's trl SFT settings, with the given command-line overrides
    (--epochs, --max-length, --learning-rate → sft.*; --base-model → model.name_or_path; --layers
    cuts the starting model's blocks)."""
    from dataclasses import replace

    from rrdistill.config import load_config
    from rrdistill.distill.students.label import read_labels, results_path_for
    from rrdistill.distill.students.listwise import cut_blocks, train_listwise_student
    from rrdistill.distill.teacher.config import TeacherConfig
    from rrdistill.io import read_requests

    if config is None:
        raise fail("--student listwise-lm needs --config (e.g. configs/students/listwise-tiny.yaml)")
    settings = replace(load_config(TeacherConfig, config), output_dir=str(output))
    sft = {name: value for name, value in overrides.items() if value is not None}
    if sft:
        settings = replace(settings, sft=replace(settings.sft, **sft))
    if base_model is not None:
        settings = replace(settings, model=replace(settings.model, name_or_path=str(base_model), tiny=None))
    if layers is not None:
        settings = cut_blocks(settings, layers)
    chosen = list(read_labels(labels))[:max_queries]
    texts = {r.qid: r for r in read_requests(requests or results_path_for(labels))}
    summary = train_listwise_student(settings, chosen, texts, resume=resume, rationale=rationale)
    return [
        ("checkpoint", summary["checkpoint"]),
        (
            "windows (with reasoning)",
            f"{summary['windows']['windows']} ({summary['windows']['with_reasoning']})",
        ),
        ("modes", ", ".join(settings.sft_modes)),
        (
            "SFT epochs / max_length / learning rate",
            f"{settings.sft.num_train_epochs:g} / {settings.sft.max_length} / {settings.sft.learning_rate:g}",
        ),
        ("wall time", f"{summary['seconds']:.1f} s"),
    ]
