"""`rrdistill pipeline` end to end on tiny models: every stage, the report, skipping and --from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.io import read_qrels, read_rankgpt, read_requests, read_trec_run
from rrdistill.runtime.bundle import load_manifest

pytest.importorskip("trl")
REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()

ROW_KEYS = {
    "system",
    "dataset",
    "kind",
    "mode",
    "precision",
    "ndcg@10",
    "recall@10",
    "latency_ms_per_query",
    "bundle",
    "vs_bm25",
    "vs_baseline",
}
OUT_OF_DOMAIN = ("cranfield", "noveleval")
LABELLER = "reference-fp32+all-minilm-l6-v2"
"""The reference mixed with the packaged bi-encoder (``labels.dense``); ``+bm25``: the labeller."""
SCORED = {
    f"{name}{fused}"
    for name in (
        *(
            f"{model}-{p}"
            for model in ("reference", "student-ce", "baseline-ce", "student-bi", "baseline-bi")
            for p in ("fp32", "int8")
        ),
        "all-minilm-l6-v2",
        LABELLER,
    )
    for fused in ("", "+bm25")
}
"""Every scoring row: bundles (cross- and bi-encoders), the bi-encoder zero-shot and the mix, alone and fused."""


def rows_of(report: dict, dataset: str = "scifact") -> dict[str, dict]:
    """The report's rows judged on one collection, by system."""
    return {row["system"]: row for row in report["rows"] if row["dataset"] == dataset}


def tiny_generative_config(path: Path, *, sft_epochs: int, grpo: bool) -> Path:
    """The shipped tiny teacher config, shrunk to seconds (one epoch, a couple of GRPO steps)."""
    config = yaml.safe_load((REPO / "configs" / "teacher" / "tiny-cpu.yaml").read_text())
    config["model"]["tiny"].update(max_documents=300, vocab_size=1024, hidden_size=64, intermediate_size=128)
    config["model"]["tiny"]["identifier_tokens"] = 20
    config["data"].update(heldout=2, max_passage_tokens=8)
    config["sft"].update(num_train_epochs=sft_epochs, max_length=512, save_steps=1000, logging_steps=1)
    config["grpo"] = (
        {
            "learning_rate": 1.0e-4,
            "max_steps": 2,
            "num_generations": 2,
            "per_device_train_batch_size": 4,
            "max_completion_length": 24,
            "logging_steps": 1,
            "save_steps": 1000,
        }
        if grpo
        else {"enabled": False}
    )
    config["evaluation"] = {"batch_size": 4, "samples_per_window": 1, "max_new_tokens": 48}
    if not grpo:
        config["modes"] = ["reasoning", "fast"]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def pipeline_config(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    teacher = tiny_generative_config(root / "teacher.yaml", sft_epochs=1, grpo=True)
    listwise = tiny_generative_config(root / "listwise.yaml", sft_epochs=1, grpo=False)
    config = {
        "run_dir": str(root / "run"),
        "data": str(data_dir / "scifact"),
        "eval": {"max_queries": 6, "top_k": 20, "generative_queries": 3, "generative_depth": 10},
        "dev": {"queries": 8, "top_k": 20, "generative_queries": 3},
        "teacher": {
            "config": str(teacher),
            "max_new_tokens": 32,
            "synthesis": {"max_queries": 8, "list_size": 5, "max_new_tokens": 24, "max_passage_tokens": 8},
        },
        "reference": {
            "base_model": str(tiny_checkpoint),
            "overrides": {"max_queries": 8, "negatives": 2, "negative_pool": 5, "max_length": 64},
        },
        "labels": {
            "top_k": 10,
            "max_queries": 8,
            "fusion_grid": [0.3, 0.5, 0.7],
            "dense": "all-minilm-l6-v2",  # the packaged weights, at a test's length
            "dense_max_length": 32,
        },
        "cross_encoder": {
            "loss": "listmle",
            "overrides": {"max_length": 64, "max_queries": 8},
            "candidates": [{"layers": 1, "learning_rate": 1.0e-4}, {"layers": 2, "learning_rate": 5.0e-4}],
        },
        "bi_encoder": {
            "enabled": True,
            "overrides": {"max_length": 32, "list_size": 4, "batch_size": 4, "max_queries": 8},
        },
        "listwise": {"config": str(listwise), "max_queries": 3, "top_k": 10, "precisions": ["fp32", "int8"]},
        "export": {"parity_queries": 2, "parity_passages": 5, "accept_drift": True},
        "bench": {"enabled": False},
        "out_of_domain": [
            {"name": "cranfield", "data": str(data_dir / "cranfield"), "top_k": 10, "max_queries": 3},
            {"name": "noveleval", "data": str(data_dir / "noveleval"), "top_k": 20, "max_queries": 3},
        ],
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished(pipeline_config: Path) -> Path:
    result = runner.invoke(app, ["pipeline", "--config", str(pipeline_config)])
    assert result.exit_code == 0, result.output
    return Path(yaml.safe_load(pipeline_config.read_text())["run_dir"])


def test_every_stage_lands_in_the_run_folder_and_the_report_has_every_system(finished: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    rows = rows_of(report)
    assert all(set(row) >= ROW_KEYS for row in rows.values())
    kinds = {"bm25", "teacher", "ensemble", "cross-encoder", "bi-encoder", "listwise-lm"}
    assert {row["kind"] for row in rows.values()} == kinds
    expected = {
        f"{name}-{p}"
        for name in ("reference", "student-ce", "baseline-ce", "student-bi", "baseline-bi")
        for p in ("fp32", "int8")
    }
    assert set(rows) >= SCORED
    for name in ("student-bi", "baseline-bi"):  # sentence-embedding bundles at the trained length
        manifest = load_manifest(Path(rows[f"{name}-int8"]["bundle"]))
        assert manifest.kind == "bi-encoder" and manifest.inputs.max_length == 32
        assert rows[f"{name}-int8"]["kind"] == "bi-encoder"
    assert rows[LABELLER]["kind"] == "ensemble" and rows["all-minilm-l6-v2"]["bundle"] is None
    assert expected <= set(rows)
    for precision in ("fp32", "int8"):  # every mode of every listwise bundle has its row
        modes = {rows[f"listwise-lm-{precision}-{m}"]["mode"] for m in ("fast", "reasoning", "auto")}
        assert modes == {"fast", "reasoning", "auto"}
        assert rows[f"listwise-lm-{precision}-auto"]["precision"] == precision
    for name in expected:
        assert Path(rows[name]["bundle"]).parent == finished / "bundles"
        assert rows[name]["queries"] == 6 and rows[name]["depth"] == 20
    assert rows["teacher"]["queries"] == 3 and rows["teacher"]["bundle"] is None
    for row in rows.values():
        assert 0.0 <= row["ndcg@10"] <= 1.0 and row["model"]
        assert row["subset_ndcg@10"] is not None  # every system covers the shared subset
    cascade = json.loads((finished / "cascade.json").read_text())
    for curve in cascade["curves"].values():
        assert [p["share"] for p in curve["curve"]] == pytest.approx([i / 10 for i in range(11)])
    for precision in ("fp32", "int8"):  # one threshold, calibrated once, in every auto bundle
        manifest = json.loads(
            (finished / "bundles" / f"listwise-lm-{precision}-cascade" / "rrdistill.json").read_text()
        )
        assert manifest["precision"] == precision
        assert (
            manifest["extra"]["cascade"]["threshold"]
            == cascade["curves"]["listwise-lm fast"]["chosen"]["threshold"]
        )
        assert manifest["extra"]["cascade"]["calibrated_with"] == "listwise-lm-fp32"
    markdown = (finished / "report.md").read_text()
    assert "| system |" in markdown and "student-ce-int8" in markdown
    assert all(Path(p).stat().st_size > 0 for p in report["plots"])
    state = json.loads((finished / "stages.json").read_text())
    assert list(state)[:2] == ["split", "retrieve"] and list(state)[-1] == "report"


def test_the_stage_list_says_what_a_rerun_would_redo(finished: Path, pipeline_config: Path) -> None:
    listed = runner.invoke(app, ["pipeline", "--config", str(pipeline_config), "--list"])
    assert listed.exit_code == 0, listed.output
    status = dict(line.split(None, 1) for line in listed.output.splitlines())
    assert set(status.values()) == {"up to date"}  # a finished run has nothing to redo
    elsewhere = runner.invoke(
        app,
        ["pipeline", "--config", str(pipeline_config), "--list", "--run-dir", str(finished.parent / "new")],
    )
    assert {line.split(None, 1)[1] for line in elsewhere.output.splitlines()} == {"to run"}
    assert not (finished.parent / "new").exists()  # listing creates nothing


def test_every_choice_is_made_on_dev_and_test_queries_are_only_scored(finished: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    dev = set(report["splits"]["dev"]["queries"])
    evaluated = set(report["splits"]["evaluated"]["queries"])
    assert len(dev) == 8 and not dev & evaluated
    labelled = {json.loads(line)["qid"] for line in (finished / "labels" / "train.jsonl").open()}
    assert labelled and not dev & labelled  # no student or labeller trains on a dev query
    choices = report["choices"]
    assert {c["chosen_on"] for c in choices.values()} <= {"dev", "config", "fixed (prior sweep)"}
    # the cascade threshold: calibrated on dev, applied to (and scored on) the evaluated queries
    cascade = report["cascade"]
    calibrated = set(cascade["calibrated_on"])
    assert calibrated and calibrated <= dev and not calibrated & evaluated
    assert set(cascade["evaluated_on"]) <= evaluated
    assert choices["cascade_threshold"]["chosen_on"] == "dev"
    assert choices["cascade_threshold"]["value"] == cascade["chosen"]["threshold"]
    assert set(choices["cascade_threshold"]["queries"]) == calibrated
    manifest = json.loads((finished / "bundles" / "listwise-lm-int8-cascade" / "rrdistill.json").read_text())
    assert manifest["extra"]["cascade"]["threshold"] == cascade["chosen"]["threshold"]
    assert set(manifest["extra"]["cascade"]["calibrated_qids"]) == calibrated
    # the fusion weight: the best of the grid on dev, and the one the labeller's row uses
    fusion = choices["fusion_weight"]
    assert fusion["chosen_on"] == "dev" and set(fusion["queries"]) == dev
    assert fusion["value"] in (0.3, 0.5, 0.7)
    assert max(fusion["details"]["ndcg@10"].values()) == fusion["details"]["ndcg@10"][str(fusion["value"])]
    # the bi-encoder's share of the mix: the best of its grid on every dev query, before the fusion weight
    mix = choices["dense_weight"]
    assert mix["chosen_on"] == "dev" and set(mix["queries"]) == dev
    assert max(mix["details"]["ndcg@10"].values()) == mix["details"]["ndcg@10"][str(mix["value"])]
    rows = rows_of(report)
    labeller = f"{LABELLER}+bm25"
    assert report["labeller"] == labeller and rows[labeller]["roles"] == ["labeller"]
    assert rows["reference-fp32+bm25"]["roles"] == []
    assert (
        f"w={fusion['value']}" in rows[labeller]["model"] and f"a={mix['value']}" in rows[labeller]["model"]
    )
    first = json.loads((finished / "labels" / "train.jsonl").open().readline())
    assert first["teacher"]["kind"] == "ensemble" and first["teacher"]["mix"]["reference"] == mix["value"]
    assert first["teacher"]["fusion"]["weight"] == fusion["value"]
    bi = json.loads((finished / "bundles" / "student-bi-int8" / "rrdistill.json").read_text())
    assert bi["provenance"]["training"]["data"]["targets"] == "teacher scores (softmax)"
    # the student's layers and learning rate: the best dev candidate, and the student that was exported
    layers, rate = choices["student_layers"], choices["learning_rate"]
    assert layers["chosen_on"] == rate["chosen_on"] == "dev" and set(layers["queries"]) == dev
    candidates = layers["details"]["candidates"]
    assert [c["settings"]["layers"] for c in candidates] == [1, 2]
    best = max(candidates, key=lambda c: c["ndcg@10"])
    assert (layers["value"], rate["value"]) == (best["settings"]["layers"], best["settings"]["learning_rate"])
    for name in ("student-ce-fp32", "baseline-ce-fp32"):
        training = json.loads((finished / "bundles" / name / "rrdistill.json").read_text())["provenance"][
            "training"
        ]
        assert training["config"]["learning_rate"] == rate["value"], name
    student = json.loads((finished / "bundles" / "student-ce-fp32" / "rrdistill.json").read_text())
    assert student["provenance"]["training"]["initial_model"]["layers"] == layers["value"]
    # int8 drift was judged on dev queries
    assert (
        choices["int8_drift_acceptance"]["queries"]
        and set(choices["int8_drift_acceptance"]["queries"]) <= dev
    )
    markdown = (finished / "report.md").read_text()
    assert "Where each tuned value was chosen" in markdown and "τ vs labeller" in markdown


def test_the_mix_row_is_the_reference_and_the_bi_encoder_z_scored_at_the_dev_weight(finished: Path) -> None:
    """The ensemble's run, recomputed from the reference's and the zero-shot bi-encoder's own runs."""
    import numpy as np

    from rrdistill.fusion import zscore

    share = json.loads((finished / "report.json").read_text())["choices"]["dense_weight"]["value"]
    for folder in (finished / "eval", *(finished / "eval" / name for name in OUT_OF_DOMAIN)):

        def scores(system: str) -> dict[str, dict[str, float]]:
            return {
                r.qid: {c.docid: c.score for c in r.candidates}
                for r in read_requests(folder / f"{system}.jsonl")  # noqa: B023
            }

        reference, bi, mix = scores("reference-fp32"), scores("all-minilm-l6-v2"), scores(LABELLER)
        assert set(reference) == set(bi) == set(mix) and mix
        for qid, docs in mix.items():
            docids = list(reference[qid])
            expected = share * zscore([reference[qid][d] for d in docids]) + (1 - share) * zscore(
                [bi[qid][d] for d in docids]
            )
            assert np.allclose([docs[d] for d in docids], expected), (folder.name, qid)
        # the bi-encoder's scores are cosines of normalised embeddings
        assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for docs in bi.values() for v in docs.values())


def test_rows_name_their_model_from_provenance_and_students_carry_fidelity(finished: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    rows = rows_of(report)
    student = rows["student-ce-int8"]
    layers = report["choices"]["student_layers"]["value"]  # chosen on dev
    assert student["provenance"]["layers"] == layers and student["provenance"]["loss"] == "listmle"
    assert student["provenance"]["precision"] == "int8"
    assert f"{layers} layers" in student["model"] and "listmle" in student["model"]
    for system, row in rows.items():
        assert row["model"]
        if system == report["labeller"]:
            assert row["fidelity_tau@10"] is None
            continue
        assert row["fidelity_queries"] > 0, system
        assert -1.0 <= row["fidelity_tau@10"] <= 1.0 and 0.0 <= row["fidelity_ndcg@10"] <= 1.0


def _trec_eval(run_file: str, qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10 and recall@10 by trec_eval's own code, on the judged queries the run ranks."""
    import pytrec_eval

    run = read_trec_run(run_file)
    judged = {q: qrels[q] for q in run if q in qrels}
    measures = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.10"}).evaluate(
        {q: run[q] for q in judged}
    )
    return {q: {"ndcg@10": m["ndcg_cut_10"], "recall@10": m["recall_10"]} for q, m in measures.items()}


def _query_texts(path: Path) -> set[str]:
    """The query texts a JSONL file of requests or samples holds."""
    texts = set()
    for line in path.read_text().splitlines():
        query = json.loads(line).get("query") if line.strip() else None
        texts.add(query.get("text") if isinstance(query, dict) else query)
    return texts - {None}


def test_every_collection_is_judged_on_its_own_qrels_with_paired_intervals(
    finished: Path, data_dir: Path
) -> None:
    report = json.loads((finished / "report.json").read_text())
    assert list(dict.fromkeys(row["dataset"] for row in report["rows"])) == ["scifact", *OUT_OF_DOMAIN]
    qrels = {
        "scifact": read_qrels(data_dir / "scifact" / "qrels" / "test.tsv"),
        "cranfield": read_qrels(data_dir / "cranfield" / "qrels" / "test.tsv"),
        "noveleval": read_qrels(data_dir / "noveleval" / "qrels.txt"),
    }
    for dataset, judged in qrels.items():
        rows = rows_of(report, dataset)
        per_query = {system: _trec_eval(row["run_file"], judged) for system, row in rows.items()}
        for system, row in rows.items():
            mine = per_query[system]
            assert row["queries"] == len(mine) > 0, (dataset, system)
            for metric in ("ndcg@10", "recall@10"):
                expected = sum(m[metric] for m in mine.values()) / len(mine)
                assert row[metric] == pytest.approx(expected), (dataset, system, metric)
            precision, fused = row["precision"], "+bm25" if system.endswith("+bm25") else ""
            family = {"cross-encoder": "baseline-ce", "bi-encoder": "baseline-bi"}.get(row["kind"])
            anchors = {"vs_bm25": "bm25", "vs_baseline": f"{family}-{precision}{fused}"}
            for key, anchor in anchors.items():
                delta = row[key]
                if system == anchor or anchor not in rows:
                    assert delta is None, (dataset, system, key)
                    continue
                theirs = per_query[anchor]
                shared = [q for q in mine if q in theirs]
                differences = [mine[q]["ndcg@10"] - theirs[q]["ndcg@10"] for q in shared]
                assert delta["against"] == anchor and delta["queries"] == len(shared)
                assert delta["mean"] == pytest.approx(sum(differences) / len(shared)), (dataset, system, key)
                assert delta["low"] <= delta["mean"] <= delta["high"]
    markdown = (finished / "report.md").read_text()
    headings = ["### scifact (in domain)", *(f"### {name} (out of domain)" for name in OUT_OF_DOMAIN)]
    assert all(h in markdown for h in headings)
    assert [markdown.index(h) for h in headings] == sorted(markdown.index(h) for h in headings)


def test_out_of_domain_sets_get_every_cross_encoder_and_nothing_trains_on_them(
    finished: Path, data_dir: Path
) -> None:
    report = json.loads((finished / "report.json").read_text())
    weight = report["choices"]["fusion_weight"]["value"]  # chosen on scifact dev
    state = list(json.loads((finished / "stages.json").read_text()))
    assert state.index("evaluate") < state.index("retrieve-ood") < state.index("evaluate-ood")
    trained = set()
    for path in ("bm25/label.jsonl", "bm25/dev.jsonl", "teacher/samples.jsonl"):
        trained |= _query_texts(finished / path)
    assert len(trained) > 8
    for name, depth in zip(OUT_OF_DOMAIN, (10, 20), strict=True):
        rows = rows_of(report, name)
        assert set(rows) == {"bm25"} | SCORED, name
        for system, row in rows.items():
            assert row["queries"] == 3 and row["depth"] == depth, (name, system)
            if system != "bm25":
                assert Path(row["run_file"]).parent == finished / "eval" / name
            if system.endswith("+bm25"):
                assert f"w={weight}" in row["model"]  # the in-domain dev choice, not one made here
        requests = list(read_requests(finished / "bm25" / "ood" / f"{name}.jsonl"))
        assert [r.qid for r in requests] == report["splits"]["out_of_domain"][name]["queries"]
        assert not {r.query.text for r in requests} & trained  # never a training or dev query
        for request in requests:
            scores = [c.score for c in request.candidates]
            assert scores == sorted(scores, reverse=True)  # in BM25's order
    given = {r.qid: set(r.docids) for r in read_rankgpt(data_dir / "noveleval" / "data.json")}
    novel = read_requests(finished / "bm25" / "ood" / "noveleval.jsonl")
    assert all(set(r.docids) == given[r.qid] for r in novel)  # its own 20 candidates, all of them


def test_a_rerun_skips_everything_and_from_redoes_the_rest(finished: Path, pipeline_config: Path) -> None:
    before = json.loads((finished / "stages.json").read_text())
    result = runner.invoke(app, ["pipeline", "--config", str(pipeline_config)])
    assert result.exit_code == 0, result.output
    after = json.loads((finished / "stages.json").read_text())
    assert after == before  # nothing ran again

    result = runner.invoke(app, ["pipeline", "--config", str(pipeline_config), "--from", "evaluate-listwise"])
    assert result.exit_code == 0, result.output
    redone = json.loads((finished / "stages.json").read_text())
    names = list(redone)
    later = names[names.index("evaluate-listwise") :]
    assert all(redone[n]["finished"] >= before[n]["finished"] for n in names)
    assert all(redone[n] == before[n] for n in names if n not in later)
    assert redone["student-listwise"] == before["student-listwise"]


def test_a_synthesis_rerun_on_other_queries_starts_clean(
    finished: Path, pipeline_config: Path, tmp_path: Path
) -> None:
    """Fewer synthesis queries is another job: its outputs are cleared, not resumed (and refused)."""
    from dataclasses import replace

    from rrdistill.config import load_config
    from rrdistill.pipeline.config import PipelineConfig
    from rrdistill.pipeline.context import PipelineContext
    from rrdistill.pipeline.teacher_steps import synthesize

    run = shutil.copytree(finished, tmp_path / "run")
    settings = load_config(PipelineConfig, pipeline_config)
    fewer = replace(settings.teacher.synthesis, max_queries=3)
    ctx = PipelineContext(
        replace(settings, run_dir=str(run), teacher=replace(settings.teacher, synthesis=fewer))
    )
    before = _qids(ctx.layout.samples) | _qids(ctx.layout.samples.with_suffix(".rejected.jsonl"))
    summary = synthesize(ctx)
    after = _qids(ctx.layout.samples) | _qids(ctx.layout.samples.with_suffix(".rejected.jsonl"))
    assert len(before) == 8 and summary["total"] == 3 and summary["resumed"] == 0
    assert len(after) == 3 and after < before  # the same first queries, labelled again


def _qids(path: Path) -> set[str]:
    return {json.loads(line)["qid"] for line in path.read_text().splitlines() if line.strip()}


def test_unknown_stage_and_bad_config_are_clear_errors(pipeline_config: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["pipeline", "--config", str(pipeline_config), "--from", "nope"])
    assert result.exit_code == 2 and "unknown stage 'nope'" in result.output
    bad = tmp_path / "bad.yaml"
    cases = {
        "eval:\n  top_kk: 3\n": "eval.top_kk",
        # the dense mix and bi-encoder students need scores: a listwise labeller writes permutations
        "labels:\n  labeller: teacher\n  dense: all-minilm-l6-v2\n": "labels: labels.dense mixes a bi-encoder",
        "labels:\n  labeller: teacher\nbi_encoder:\n  enabled: true\n": "bi_encoder students learn the labels' scores",
        "labels:\n  dense_grid: [0.5, 1.5]\n": "dense_grid",
    }
    for text, message in cases.items():
        bad.write_text(text)
        result = runner.invoke(app, ["pipeline", "--config", str(bad)])
        assert result.exit_code == 2 and message in result.output, text


def test_the_demo_config_loads_and_lists_its_stages() -> None:
    result = runner.invoke(
        app, ["pipeline", "--config", str(REPO / "configs" / "pipeline" / "demo.yaml"), "--list"]
    )
    assert result.exit_code == 0, result.output
    stages = [line.split(None, 1)[0] for line in result.output.splitlines()]
    assert stages[:2] == ["split", "retrieve"] and stages[-1] == "report"
    assert {
        "synthesize",
        "teacher",
        "label",
        "student-ce",
        "baseline-ce",
        "student-listwise",
        "cascade",
        "retrieve-ood",
        "evaluate-ood",
        "student-bi",
        "export-bi",
    } <= set(stages)
    # a listwise teacher as labeller writes no scores: the mix and the bi-encoder student step aside
    result = runner.invoke(
        app,
        [
            "pipeline",
            "--config",
            str(REPO / "configs" / "pipeline" / "demo.yaml"),
            "--labeller",
            "teacher",
            "--list",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "both are off for this run" in result.output
    stages = [line.split(None, 1)[0] for line in result.output.splitlines()]
    assert "student-ce" in stages and "student-bi" not in stages and "export-bi" not in stages


def test_the_student_study_chooses_on_dev_and_judges_on_test(
    finished: Path, tiny_checkpoint: Path, tmp_path: Path, data_dir: Path
) -> None:
    """benchmarks/student_study.py on the run folder: teacher labels with scores, students, baselines,
    judged on test and out of domain."""
    from benchmark_scripts import load_benchmark

    study = load_benchmark(REPO, "student_study")
    args = [str(finished), "--teacher", str(tiny_checkpoint), "--lengths", "32", "--blocks", "1"]
    args += ["--losses", "margin-mse", "listmle", "--baseline", "--list-size", "5"]
    args += ["--ood", f"cranfield={data_dir / 'cranfield'}", "--ood", f"noveleval={data_dir / 'noveleval'}"]
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    assert study.main([*args, "--json", str(first)]) == 0
    report = json.loads(first.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {"teacher", "margin-mse-32t-1b", "listmle-32t-1b", "baseline-32t-1b"}
    for row in rows.values():
        by_weight = {float(w): v for w, v in row["dev_by_weight"].items()}
        assert len(by_weight) == 11 and row["dev_alone"] == by_weight[1.0]
        assert by_weight[row["fusion_weight"]] == max(by_weight.values())  # fused at its dev-best weight
        assert 0.0 <= row["test_alone"] <= 1.0 and 0.0 <= row["test_fused"] <= 1.0
        assert set(row["out_of_domain"]) == {"cranfield", "noveleval"}
        for name, ood in row["out_of_domain"].items():
            assert 0.0 <= ood["alone"] <= 1.0 and ood["vs_bm25"]["queries"] == 3
            # the paired Δ against BM25 is the difference of the two means over the same queries
            assert ood["vs_bm25"]["mean"] == pytest.approx(ood["alone"] - report["bm25"][name])
            assert (ood["vs_baseline"] is None) == (row["name"] in ("teacher", "baseline-32t-1b"))
    students = [n for n in rows if n not in ("teacher", "baseline-32t-1b")]
    assert report["chosen_on_dev"] == max(students, key=lambda n: rows[n]["dev_alone"])
    assert report["queries"] == {
        "dev": "8 × BM25 top-20",
        "test": "6 × BM25 top-20",
        "cranfield": "3 × BM25 top-10",
        "noveleval": "3 × BM25 top-20",
    }
    with pytest.raises(SystemExit, match="no such request file"):
        study.main([*args, "--ood", f"trec-covid={data_dir / 'cranfield'}"])
    # the teacher's labels keep its (fused) scores: MarginMSE trained on them
    (labels,) = (p for p in (finished / "study" / "labels").glob("*.jsonl") if ".results." not in p.name)
    first_label = json.loads(labels.read_text().splitlines()[0])
    assert first_label["scores"] and len(set(first_label["scores"])) > 1
    assert study.main([*args, "--json", str(again)]) == 0  # a rerun retrains nothing, scores the same

    def figures(payload: dict) -> list[dict]:
        timing = {"ms_per_query", "speedup_vs_teacher"}
        return [{k: v for k, v in row.items() if k not in timing} for row in payload["rows"]]

    assert figures(json.loads(again.read_text())) == figures(report)

    # an ensemble teacher: the cross-encoder mixed with the zero-shot bi-encoder at the dev-best weight
    mixed = tmp_path / "dense.json"
    dense_args = [str(finished), "--teacher", str(tiny_checkpoint), "--lengths", "32", "--blocks", "1"]
    assert (
        study.main([*dense_args, "--losses", "listmle", "--list-size", "5", "--dense", "--json", str(mixed)])
        == 0
    )
    ensemble = json.loads(mixed.read_text())
    teacher, alone, bi, student = ensemble["rows"]
    assert (alone["name"], student["name"]) == ("cross-encoder alone", "listmle-32t-1b")
    assert bi["name"].startswith("bi-encoder") and bi["blocks"] == 6
    # weight 1 is the cross-encoder alone, 0 the bi-encoder alone: the dev-best mix is at least both
    assert teacher["dev_alone"] >= max(alone["dev_alone"], bi["dev_alone"])
    assert teacher["cross_encoder_weight"] in [round(0.1 * i, 1) for i in range(11)]
    assert alone["dev_alone"] == rows["teacher"]["dev_alone"]
    assert ensemble["chosen_on_dev"] == "listmle-32t-1b"  # the parts are not students
    assert teacher["ms_per_query"] > alone["ms_per_query"]  # the teacher runs both models
    (mixed_labels,) = (
        p for p in (finished / "study" / "labels").glob("*+*-w*.jsonl") if ".results." not in p.name
    )
    assert json.loads(mixed_labels.read_text().splitlines()[0])["scores"]

    # bi-encoder students of that ensemble: KL on its scores, from all 6 blocks of the pretrained
    # bi-encoder; the MNRL baseline of the same blocks; and the starting point itself (zero-shot)
    bi = tmp_path / "bi.json"
    bi_args = [*dense_args[:-2], "--blocks", "6", "--dense", "--architectures", "bi-encoder", "--baseline"]
    assert study.main([*bi_args, "--bi-list-size", "4", "--json", str(bi)]) == 0
    bi_rows = {row["name"]: row for row in json.loads(bi.read_text())["rows"]}
    assert {"bi-kl-32t-6b", "bi-baseline-32t-6b", "bi-zero-shot-32t-6b"} <= set(bi_rows)
    for name in ("bi-kl-32t-6b", "bi-baseline-32t-6b", "bi-zero-shot-32t-6b"):
        assert bi_rows[name]["architecture"] == "bi-encoder" and bi_rows[name]["max_length"] == 32
        assert load_manifest(Path(bi_rows[name]["bundle"])).kind == "bi-encoder"
        assert load_manifest(Path(bi_rows[name]["bundle"])).inputs.max_length == 32
    # the distilled student and the untrained start are both judged against the same-size baseline
    kl, zero_shot = bi_rows["bi-kl-32t-6b"], bi_rows["bi-zero-shot-32t-6b"]
    assert kl["vs_baseline"]["mean"] == pytest.approx(
        kl["test_alone"] - bi_rows["bi-baseline-32t-6b"]["test_alone"]
    )
    assert zero_shot["vs_baseline"] is not None and zero_shot["train_seconds"] == 0
    assert json.loads(bi.read_text())["chosen_on_dev"] == "bi-kl-32t-6b"  # the only student


def test_eval_precisions_score_those_bundles_and_always_the_labeller(tmp_path: Path) -> None:
    from rrdistill.pipeline.config import EvalSettings, PipelineConfig
    from rrdistill.pipeline.context import PipelineContext
    from rrdistill.pipeline.eval_steps import scored_systems

    def systems(**eval_settings: object) -> list[str]:
        config = PipelineConfig(run_dir=str(tmp_path / "run"), eval=EvalSettings(**eval_settings))  # type: ignore[arg-type]
        return [name for name, _ in scored_systems(PipelineContext(config))]

    everything = systems()
    assert everything == [
        f"{n}-{p}" for n in ("reference", "student-ce", "baseline-ce") for p in ("fp32", "int8")
    ]
    # int8 rows only, and the fp32 labeller's own row (it is what the students learn from)
    assert systems(precisions=["int8"]) == [
        "reference-fp32",
        "reference-int8",
        "student-ce-int8",
        "baseline-ce-int8",
    ]
    with pytest.raises(ValueError, match=r"eval.precisions \['fp16'\] are not exported"):
        PipelineConfig(eval=EvalSettings(precisions=["fp16"]))


def test_rows_an_earlier_config_scored_leave_the_evaluation_folder(tmp_path: Path) -> None:
    from rrdistill.pipeline.config import EvalSettings, PipelineConfig
    from rrdistill.pipeline.context import PipelineContext
    from rrdistill.pipeline.eval_steps import _drop_stale_rows
    from rrdistill.pipeline.systems import EvalSet, SystemRecord

    ctx = PipelineContext(
        PipelineConfig(run_dir=str(tmp_path / "run"), eval=EvalSettings(precisions=["int8"]))
    )
    folder = ctx.layout.eval_dir()
    folder.mkdir(parents=True)
    for system, kind in [
        ("student-ce-fp32", "cross-encoder"),
        ("student-ce-fp32+bm25", "cross-encoder"),
        ("student-ce-int8", "cross-encoder"),
        ("bm25", "bm25"),
    ]:
        SystemRecord(system, kind, None, None, None, "m", "t", 1, 1, {}, None).save(folder / f"{system}.json")
        (folder / f"{system}.trec").write_text("")
    _drop_stale_rows(ctx, EvalSet(ctx.dataset, ctx.layout.eval_requests, {}), {"student-ce-int8"})
    assert sorted(p.name for p in folder.iterdir()) == [
        "bm25.json",
        "bm25.trec",
        "student-ce-int8.json",
        "student-ce-int8.trec",
    ]
