"""The listwise LM student: a small causal LM trained (trl SFT) on the teacher's window rankings.

One model learns two modes from the same windows: the **reasoning** mode
(``<think>…</think><answer>…</answer>``, from windows where the teacher reasoned) and the **fast**
mode (``<answer>…</answer>`` only, from every window). The runtime serves both from one bundle;
with whole-token identifiers the fast mode ranks a window from the logits of its first answer
token (FIRST).

Training windows come from the labels: the teacher's own windows when it recorded them (a
listwise teacher: input order, output order, reasoning), otherwise windows cut from the
first-stage order with the teacher's relative order inside each (a cross-encoder or TREC
teacher). The trainer is the teacher's (:class:`~rrdistill.distill.teacher.train.TeacherTrainer`, SFT
only), so LoRA, DeepSpeed and resume work the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrdistill.distill.students.label import PermutationLabel
from rrdistill.distill.students.rationale import evidence_rationale
from rrdistill.distill.teacher.samples import TeacherSample
from rrdistill.io import atomic_writer, dumps_line
from rrdistill.types import Candidate, Query, Request
from rrdistill.window import WindowConfig, window_spans


def window_samples(
    labels: Iterable[PermutationLabel],
    requests: dict[str, Request],
    window: WindowConfig | None = None,
    *,
    rationale: bool = False,
) -> Iterator[TeacherSample]:
    """One teacher sample per window: the window's passages in input order and the teacher's order.

    With `rationale`, windows without teacher reasoning get an evidence rationale
    (:mod:`rrdistill.distill.students.rationale`), marked as such in the sample's provenance.
    """
    window = window or WindowConfig()
    for label in labels:
        request = requests.get(label.qid)
        if request is None:
            raise ValueError(f"label for query {label.qid!r} has no request (passage texts) to train on")
        passages = {c.docid: c.passage for c in request.candidates}
        missing = [d for d in label.docids if d not in passages]
        if missing:
            raise ValueError(f"query {label.qid!r}: labelled documents {missing[:3]} are not in its request")
        source = label.teacher.get("model") or label.teacher.get("source") or "teacher"
        if label.windows:
            spans = [
                (w["docids"], [w["docids"][i] for i in w["order"]], w.get("reasoning")) for w in label.windows
            ]
        else:
            rank = {d: i for i, d in enumerate(label.docids)}
            initial = [d for d in request.docids if d in rank][: window.top_k]
            spans = [
                (initial[start:end], sorted(initial[start:end], key=rank.__getitem__), None)
                for start, end in window_spans(len(initial), window.window_size, window.step)
            ]
        for k, (docids, final, reasoning) in enumerate(spans):
            provenance: dict[str, Any] = {"teacher": source, "qid": label.qid, "window": k}
            if reasoning:
                provenance["reasoning_source"] = "teacher"
            elif rationale:
                position = {d: i for i, d in enumerate(docids)}
                reasoning = evidence_rationale(
                    label.query or request.query.text,
                    [passages[d].full_text() for d in docids],
                    [position[d] for d in final],
                )
                provenance["reasoning_source"] = "evidence-rationale"
            yield TeacherSample(
                request=Request(
                    Query(f"{label.qid}/w{k}", label.query or request.query.text),
                    [Candidate(passages[d]) for d in docids],
                ),
                final_list=final,
                reasoning=reasoning,
                relevant_docids=[],
                dataset="labels",
                provenance=provenance,
            )


def write_window_samples(path: str | Path, samples: Iterable[TeacherSample]) -> dict[str, int]:
    counts = {"windows": 0, "with_reasoning": 0}
    with atomic_writer(path) as handle:
        for sample in samples:
            sample.validate()
            handle.write(dumps_line(sample.to_json()))
            counts["windows"] += 1
            counts["with_reasoning"] += int(bool(sample.reasoning))
    return counts


def cut_blocks(config: Any, layers: int) -> Any:
    """`config` with its model cut to `layers` transformer blocks, written beside the run.

    The blocks kept are the cross-encoder students' (the first, the last and evenly spaced ones
    between, weights copied exactly: :func:`~rrdistill.distill.students.cross_encoder.kept_layers`):
    the first reads the embeddings and the last feeds the LM head, as they were trained to. A tiny
    config's model is built first, then cut like any checkpoint.
    """
    from rrdistill.distill.students.cross_encoder import truncate_layers

    out = Path(config.output_dir)
    source = config.model.name_or_path
    if config.model.tiny is not None:
        from rrdistill.distill.tiny import build_tiny_model

        source = str(build_tiny_model(config.model.tiny, out / "base-full"))
    else:  # a registry name or GGUF file becomes a checkpoint folder first (converted once, cached)
        from rrdistill.distill.checkpoints import materialize_checkpoint

        source = str(materialize_checkpoint(str(source)))
    if not (Path(source) / "config.json").is_file():
        raise ValueError(f"cutting blocks needs a local checkpoint folder, and {source!r} is not one")
    cut = truncate_layers(source, layers, out / f"base-{layers}-blocks")
    return replace(config, model=replace(config.model, name_or_path=str(cut), tiny=None))


def train_listwise_student(
    config: Any,
    labels: Iterable[PermutationLabel],
    requests: dict[str, Request],
    *,
    resume: bool = False,
    rationale: bool = False,
    window: WindowConfig | None = None,
) -> dict[str, Any]:
    """Write the window samples beside the run and train `config` (a TeacherConfig, SFT only).

    `rationale` gives windows without teacher reasoning an evidence rationale, so a student of a
    scoring teacher still learns a reasoning mode (see :mod:`rrdistill.distill.students.rationale`).
    """
    from rrdistill.distill.teacher.train import TeacherTrainer

    out = Path(config.output_dir)
    samples_path = out / "window_samples.jsonl"
    counts = write_window_samples(samples_path, window_samples(labels, requests, window, rationale=rationale))
    if counts["with_reasoning"] == 0 and "reasoning" in config.sft_modes:
        raise ValueError(
            "the labels carry no teacher reasoning, so the reasoning mode has nothing to learn from: "
            "add labels from a reasoning teacher, or train modes: [fast]"
        )
    config = replace(
        config, data=replace(config.data, train=str(samples_path)), grpo=replace(config.grpo, enabled=False)
    )
    summary = TeacherTrainer(config).run(resume=resume)
    summary["windows"] = counts
    return summary
