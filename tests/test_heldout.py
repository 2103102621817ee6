"""Held-out choices: the dev split is disjoint from what is trained and what is scored, every tuned
value names the split it was chosen on, and the report finds the labeller from the config.

The end-to-end checks on a finished run (cascade calibrated on dev, choices in report.json) are in
test_pipeline.py, which shares one pipeline run; these run in seconds on the embedded SciFact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipelines import small_context

from rrdistill.io import read_beir, read_qrels, read_requests, write_requests, write_trec_run
from rrdistill.pipeline import PipelineContext
from rrdistill.pipeline.config import ReferenceSettings
from rrdistill.pipeline.heldout import (
    DEV_SPLIT,
    LeakError,
    carve_dev,
    check_disjoint,
    gather_choices,
    write_split,
)
from rrdistill.pipeline.report import report_rows
from rrdistill.pipeline.systems import SystemRecord
from rrdistill.types import Ranking


def test_carving_is_deterministic_order_free_and_salted() -> None:
    qids = [str(i) for i in range(200)]
    dev = carve_dev(qids, 20, "s")
    assert dev == carve_dev(list(reversed(qids)), 20, "s") and len(set(dev)) == 20
    assert carve_dev(qids, 20, "other") != dev
    assert carve_dev(qids, 30, "s")[:20] == dev  # a larger split extends the smaller one
    with pytest.raises(ValueError, match="dev.queries"):
        carve_dev(qids, 200, "s")  # nothing would be left to train on


def test_the_dev_split_is_disjoint_from_training_and_evaluated_queries(
    tmp_path: Path, data_dir: Path
) -> None:
    from rrdistill.pipeline.teacher_steps import retrieve

    ctx = small_context(tmp_path, data_dir)
    write_split(ctx)
    split = json.loads(ctx.layout.split_file.read_text())
    dev = set(split["dev"])
    assert len(dev) == 12
    original = read_qrels(data_dir / "scifact" / "qrels" / "train.tsv")
    view_train = read_beir(ctx.train_data, "train").qrels
    view_dev = read_beir(ctx.train_data, DEV_SPLIT).qrels
    # the training split every trainer reads has no dev query, and nothing else is lost
    assert not dev & set(view_train) and set(view_train) | set(view_dev) == set(original)
    assert view_dev == {q: original[q] for q in dev}
    assert read_beir(ctx.train_data, "test").qrels == ctx.eval_qrels
    assert not dev & set(ctx.eval_qrels)

    retrieve(ctx)
    label = {r.qid for r in read_requests(ctx.layout.label_requests)}
    dev_requests = [r.qid for r in read_requests(ctx.layout.dev_requests)]
    evaluated = {r.qid for r in read_requests(ctx.layout.eval_requests)}
    assert set(dev_requests) == dev and label and evaluated
    assert not dev & label and not dev & evaluated and not label & evaluated
    assert len(list(read_requests(ctx.layout.dev_subset_requests))) == 4

    # the teacher's synthesis reads the same training split
    from rrdistill.distill.teacher.synthesize import load_inputs

    synthesis, _ = load_inputs(ctx.train_data, split="train", top_k=3, max_queries=None)
    assert synthesis and not dev & {r.qid for r in synthesis}


def test_dev_cannot_be_carved_from_the_evaluated_split(tmp_path: Path, data_dir: Path) -> None:
    ctx = small_context(tmp_path, data_dir)
    ctx.config.labels.split = "test"
    with pytest.raises(ValueError, match="must differ"):
        write_split(ctx)


def test_a_choice_made_on_evaluated_queries_is_refused(tmp_path: Path, data_dir: Path) -> None:
    ctx = small_context(tmp_path, data_dir)
    ctx.config.export.precisions = ["fp32"]
    ctx.config.cross_encoder.chosen_on = "fixed (prior sweep)"
    write_split(ctx)
    dev = json.loads(ctx.layout.split_file.read_text())["dev"]
    chosen = {"threshold": 0.3, "share": 0.2, "quality": 0.5, "latency_ms": 1.0, "escalated": 1}
    cascade = {"curves": {}, "chosen": chosen, "calibrated_on": dev[:4], "evaluated_on": []}
    ctx.layout.cascade.write_text(json.dumps(cascade))
    choices = gather_choices(ctx)
    assert choices["cascade_threshold"]["chosen_on"] == "dev"
    assert choices["cascade_threshold"]["queries"] == dev[:4]
    assert choices["student_layers"] == {
        "value": 4,
        "chosen_on": "fixed (prior sweep)",
        "queries": [],
        "note": "",
        "details": {},
    }

    leaked = next(iter(ctx.eval_qrels))
    ctx.layout.cascade.write_text(json.dumps({**cascade, "calibrated_on": [dev[0], leaked]}))
    with pytest.raises(LeakError, match="cascade_threshold"):
        gather_choices(ctx)
    ctx.layout.cascade.unlink()
    ctx.config.cross_encoder.chosen_on = "test"
    with pytest.raises(LeakError, match="evaluated split"):
        gather_choices(ctx)
    with pytest.raises(LeakError):
        check_disjoint("x", ["a", "b"], ["b"])


def _record(ctx: PipelineContext, system: str, kind: str, run: dict[str, list[str]]) -> SystemRecord:
    trec = ctx.layout.run_file(system, ".trec")
    trec.parent.mkdir(parents=True, exist_ok=True)
    rankings = [Ranking(q, docs, [float(len(docs) - i) for i in range(len(docs))]) for q, docs in run.items()]
    write_trec_run(trec, rankings, tag=system)
    per_query = {q: 0.5 for q in run}
    return SystemRecord(
        system=system,
        kind=kind,
        mode=None,
        precision="fp32",
        bundle=None,
        model=f"model of {system}",
        trained_on="-",
        queries=len(run),
        depth=5,
        metrics={"ndcg@10": 0.5, "recall@10": 0.5},
        latency_ms_per_query=10.0 if "+bm25" in system else 2.0,
        per_query=per_query,
        run_file=str(trec),
    )


@pytest.mark.parametrize(
    ("name", "fusion", "labeller", "expected"),
    [
        ("ce-prime", 0.5, "reference", "ce-prime-fp32+bm25"),
        ("ce-prime", None, "reference", "ce-prime-fp32"),
        ("reference", 0.5, "teacher", "teacher"),
    ],
)
def test_the_report_finds_the_labeller_from_the_config_not_by_its_name(
    tmp_path: Path, data_dir: Path, name: str, fusion: float | None, labeller: str, expected: str
) -> None:
    ctx = small_context(
        tmp_path,
        data_dir,
        reference=ReferenceSettings(name=name),
    )
    ctx.config.labels.fusion, ctx.config.labels.labeller = fusion, labeller
    assert ctx.labeller_system == expected
    qids = list(ctx.eval_qrels)[:3]
    docs = [f"d{i}" for i in range(12)]
    write_requests(ctx.layout.subset_requests, [])
    records = [
        _record(ctx, "teacher", "teacher", {q: docs for q in qids}),
        _record(ctx, f"{name}-fp32", "cross-encoder", {q: docs for q in qids}),
        _record(ctx, f"{name}-fp32+bm25", "cross-encoder", {q: docs for q in qids}),
        _record(ctx, "student-ce-fp32", "cross-encoder", {q: docs[::-1] for q in qids}),
        _record(ctx, "twin-fp32", "cross-encoder", {q: docs for q in qids}),
    ]
    rows = {row["system"]: row for row in report_rows(ctx, records)}
    assert all(row["model"] == f"model of {system}" for system, row in rows.items())
    labeller_row = rows[expected]
    assert labeller_row["fidelity_tau@10"] is None  # the labeller is not compared with itself
    student, twin = rows["student-ce-fp32"], rows["twin-fp32"]
    assert student["speedup_vs_labeller"] == pytest.approx(
        records[[r.system for r in records].index(expected)].latency_ms_per_query / 2.0
    )
    # fidelity is measured against the labeller's run: a reversed ranking disagrees, a copy agrees
    assert student["fidelity_tau@10"] == pytest.approx(-1.0) and student["fidelity_queries"] == 3
    assert student["fidelity_ndcg@10"] < 0.5
    assert twin["fidelity_tau@10"] == pytest.approx(1.0) and twin["fidelity_ndcg@10"] == pytest.approx(1.0)
