"""The teacher: `rrdistill synthesize`, `rrdistill train-teacher`, `rrdistill tiny-model`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrdistill.commands.common import fail, progress_callback
from rrdistill.extras import MissingExtraError
from rrdistill.io import LineError


def synthesize(
    source: Annotated[
        Path,
        typer.Argument(help="Request JSONL, or a BEIR folder (BM25 candidates are retrieved)", exists=True),
    ],
    labeller: Annotated[
        str, typer.Option("--labeller", help="Labeller: checkpoint directory or OpenAI-compatible server URL")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Teacher-sample JSONL to write (resumable)")],
    model: Annotated[
        str | None, typer.Option(help="Model name the server serves (required with a URL)")
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(help="Relevance labels (TREC/BEIR); without any, the labeller picks the positives"),
    ] = None,
    split: Annotated[str, typer.Option(help="Qrels split of a BEIR folder")] = "train",
    list_size: Annotated[int, typer.Option("--list-size", min=2, help="Passages per list (≤ 20)")] = 20,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Keep when nDCG@10(list, positives) ≥ α")
    ] = 0.4,
    max_queries: Annotated[int | None, typer.Option(min=1, help="Only the first N queries")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 8192,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.6,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    max_passage_tokens: Annotated[int, typer.Option(min=1)] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per backend call")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent requests to a server")] = 16,
    dataset: Annotated[str, typer.Option(help="Name recorded as each sample's 'dataset'")] = "",
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer (dir or name) to cut passages with, for a server labeller")
    ] = None,
    require_reasoning: Annotated[bool, typer.Option(help="Reject answers without a <think> block")] = True,
    retry_failed: Annotated[bool, typer.Option(help="Try the recorded failures again")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON")] = None,
) -> None:
    """Synthesize reasoning-ranking data with a labeller LLM and ReasonRank's self-consistency filter."""
    from rrdistill.distill.backends import SamplingParams, load_tokenizer, open_backend
    from rrdistill.distill.teacher.synthesize import SynthesisConfig, Synthesizer, load_inputs
    from rrdistill.reporting import print_table, progress_bar, write_json

    try:
        requests, labels = load_inputs(
            source, qrels_path=qrels, split=split, top_k=list_size, max_queries=max_queries
        )
        config = SynthesisConfig(
            list_size=list_size,
            alpha=alpha,
            require_reasoning=require_reasoning,
            max_passage_tokens=max_passage_tokens,
            batch_size=batch_size,
            sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
            dataset=dataset or (source.name if source.is_dir() else source.stem),
        )
        backend = open_backend(labeller, model=model, batch_size=batch_size, concurrency=concurrency)
        with progress_bar() as progress:
            task = progress.add_task("synthesizing", total=len(requests))
            cutter = load_tokenizer(tokenizer) if tokenizer else None
            summary = Synthesizer(backend, config, tokenizer=cutter).run(
                requests,
                output,
                labels,
                retry_failed=retry_failed,
                progress=progress_callback(progress, task),
            )
    except (FileNotFoundError, LineError, ValueError, MissingExtraError) as exc:
        raise fail(str(exc)) from None
    print_table("Synthesis", ["", "value"], summary.rows())
    if json_path is not None:
        write_json(json_path, summary.to_json())


def train_teacher(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config (configs/teacher/…)", exists=True)
    ],
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run: skip finished stages, resume from checkpoints")
    ] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Override the config's output_dir")] = None,
    train: Annotated[Path | None, typer.Option(help="Override the config's data.train")] = None,
) -> None:
    """Train the teacher: cold-start SFT then GRPO with the multi-view ranking reward (trl)."""
    from rrdistill.config import ConfigError, load_config
    from rrdistill.reporting import print_table

    try:
        from rrdistill.distill.teacher.config import TeacherConfig
        from rrdistill.distill.teacher.train import StageExistsError, TeacherTrainer

        settings = load_config(TeacherConfig, config)
        if output_dir is not None:
            settings.output_dir = str(output_dir)
        if train is not None:
            settings.data.train = str(train)
        summary = TeacherTrainer(settings, config_path=str(config)).run(resume=resume)
    except (
        ConfigError,
        StageExistsError,
        FileNotFoundError,
        LineError,
        ValueError,
        MissingExtraError,
    ) as exc:
        raise fail(str(exc)) from None
    if "checkpoint" not in summary:
        return  # not the main process of a distributed run
    rows: list[tuple[str, str]] = [
        ("training samples", f"{summary['samples']['train']:,}"),
        ("held-out windows", f"{summary['samples']['heldout']:,}"),
    ]
    for stage in ("sft", "grpo"):
        info = summary.get(stage)
        if info:
            state = "skipped (complete)" if info.get("skipped") else f"{info['seconds']:.1f} s"
            rows.append((f"{stage}: steps", f"{info.get('global_steps', '-')} ({state})"))
    for key in ("reward_before_grpo", "reward_after_grpo", "reward_after_sft"):
        report = summary.get(key)
        for mode in ("greedy", "sampled"):
            if report and mode in report and report[mode].get("count"):
                values = report[mode]
                rows.append(
                    (
                        f"{key.replace('_', ' ')} ({mode})",
                        f"mean {values['mean']:.3f}  median {values['median']:.3f}  "
                        f"format fails {values['format_failures']:.0%}  invalid {values['invalid_permutations']:.0%}",
                    )
                )
    rows += [
        ("checkpoint", summary["checkpoint"]),
        ("summary", str(Path(summary["checkpoint"]).parent / "training_summary.json")),
        ("wall time", f"{summary['seconds']:.1f} s"),
    ]
    print_table("Teacher training", ["", "value"], rows)


def tiny_model(
    output: Annotated[Path, typer.Argument(help="Checkpoint directory to write")],
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Teacher config whose model.tiny section to build", exists=True),
    ],
) -> None:
    """Build the tiny random-weight Qwen2-shaped model of a config (no hub): for demos and tests."""
    from rrdistill.config import ConfigError, load_config
    from rrdistill.reporting import print_table

    try:
        from rrdistill.distill.teacher.config import TeacherConfig
        from rrdistill.distill.tiny import build_tiny_model

        settings = load_config(TeacherConfig, config)
        if settings.model.tiny is None:
            raise ValueError(f"{config}: model.tiny is not set")
        path = build_tiny_model(settings.model.tiny, output)
    except (ConfigError, FileNotFoundError, ValueError, MissingExtraError) as exc:
        raise fail(str(exc)) from None
    print_table("Tiny model", ["", "value"], [("checkpoint", str(path))])
