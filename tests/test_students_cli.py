"""`rrdistill label` and `rrdistill distill` from the command line: teacher sources, imports,
kill -9 and resume, a distilled student with its supervised baseline."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.distill.students.label import read_labels
from rrdistill.io import read_beir, read_requests, write_requests, write_trec_run
from rrdistill.retrieve import BM25Retriever
from rrdistill.types import Ranking

runner = CliRunner()


@pytest.fixture(scope="module")
def requests_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = read_beir(data_dir / "scifact", "train")
    path = tmp_path_factory.mktemp("students-cli") / "train.jsonl"
    write_requests(path, BM25Retriever(list(data.corpus.values())).search(data.split_queries()[:24], k=8))
    return path


def test_exactly_one_teacher_source(requests_file: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    out = str(tmp_path / "l.jsonl")
    result = runner.invoke(app, ["label", str(requests_file), "-o", out])
    assert result.exit_code == 2 and "exactly one teacher source" in result.output
    result = runner.invoke(
        app, ["label", str(requests_file), "-o", out, "--bundle", str(tiny_bundle), "--from-trec", out]
    )
    assert result.exit_code == 2


def test_label_with_a_bundle_then_import_the_same_order_from_trec(
    requests_file: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.jsonl"
    result = runner.invoke(
        app,
        [
            "label",
            str(requests_file),
            "--bundle",
            str(tiny_bundle),
            "-o",
            str(labels),
            "--json",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    first = list(read_labels(labels))
    assert len(first) == 24 and all(label.scores and len(label.docids) == 8 for label in first)
    assert json.loads((tmp_path / "s.json").read_text())["labels"] == 24

    results = list(read_requests(labels.with_name("labels.results.jsonl")))
    write_trec_run(tmp_path / "run.trec", (Ranking.from_request(r) for r in results))
    imported = tmp_path / "imported.jsonl"
    result = runner.invoke(
        app, ["label", str(requests_file), "--from-trec", str(tmp_path / "run.trec"), "-o", str(imported)]
    )
    assert result.exit_code == 0, result.output
    again = list(read_labels(imported))
    assert [(x.qid, x.query, x.docids) for x in again] == [(x.qid, x.query, x.docids) for x in first]


def test_label_killed_at_random_points_resumes_to_the_uninterrupted_output(
    requests_file: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "rrdistill.cli",
        "label",
        str(requests_file),
        "--bundle",
        str(tiny_bundle),
        "--threads",
        "1",
    ]
    clean = tmp_path / "clean.jsonl"
    subprocess.run([*command, "-o", str(clean)], check=True, capture_output=True)
    out = tmp_path / "killed.jsonl"
    partial = out.with_name("killed.results.jsonl")
    rng, kills = random.Random(3), 0
    for _ in range(3):
        target = rng.randint(1, 23)
        process = subprocess.Popen(
            [*command, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if partial.exists() and partial.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.002)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
        if out.exists():  # labels are only ever written whole
            assert len(list(read_labels(out))) == 24
    subprocess.run([*command, "-o", str(out)], check=True, capture_output=True)
    assert kills >= 1
    assert out.read_bytes() == clean.read_bytes()
    assert partial.read_bytes() == clean.with_name("clean.results.jsonl").read_bytes()


def test_distill_a_cross_encoder_with_its_supervised_baseline(
    requests_file: Path, tiny_bundle: Path, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.jsonl"
    assert (
        runner.invoke(
            app, ["label", str(requests_file), "--bundle", str(tiny_bundle), "-o", str(labels)]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "distill",
            "--student",
            "cross-encoder",
            "--labels",
            str(labels),
            "--base-model",
            str(tiny_checkpoint),
            "--layers",
            "1",
            "--loss",
            "ranknet",
            "--list-size",
            "6",
            "--epochs",
            "1",
            "--max-length",
            "64",
            "--max-queries",
            "8",
            "--baseline-data",
            str(data_dir / "scifact"),
            "-o",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    trained = [p for p in (tmp_path / "run").iterdir() if (p / "rrdistill_training.json").exists()]
    kinds = sorted(json.loads((p / "rrdistill_training.json").read_text())["kind"] for p in trained)
    assert kinds == ["cross-encoder", "cross-encoder-student"]
    result = runner.invoke(app, ["distill", "--labels", str(labels), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--base-model" in result.output


def test_distill_listwise_lm_maps_the_options_onto_its_sft_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--epochs/--max-length/--learning-rate override the YAML's sft section only when given;
    --layers starts from a cut of the config's model (first and last block kept)."""
    from rrdistill.distill.students import listwise

    seen = []

    def train(config, labels, requests, **options):  # type: ignore[no-untyped-def]
        seen.append(config)
        return {"checkpoint": "c", "windows": {"windows": 0, "with_reasoning": 0}, "seconds": 0.0}

    monkeypatch.setattr(listwise, "train_listwise_student", train)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = ["distill", "--student", "listwise-lm", "--labels", str(empty), "--requests", str(empty)]
    base += ["--config", "configs/students/listwise-tiny.yaml"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    sft = seen[-1].sft
    assert (sft.num_train_epochs, sft.max_length, sft.learning_rate) == (6, 2048, 3e-3)  # the YAML's

    options = ["--epochs", "1.5", "--max-length", "512", "--learning-rate", "1e-4", "--layers", "1"]
    result = runner.invoke(app, [*base, *options, "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    config = seen[-1]
    assert (config.sft.num_train_epochs, config.sft.max_length, config.sft.learning_rate) == (1.5, 512, 1e-4)
    assert config.model.tiny is None
    cut = json.loads((Path(config.model.name_or_path) / "config.json").read_text())
    full = json.loads((tmp_path / "b" / "base-full" / "config.json").read_text())
    assert (cut["num_hidden_layers"], full["num_hidden_layers"]) == (1, 2)


def test_distill_a_bi_encoder_with_its_baseline_and_refuse_cross_encoder_options(
    requests_file: Path, tiny_bundle: Path, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.jsonl"
    assert (
        runner.invoke(
            app, ["label", str(requests_file), "--bundle", str(tiny_bundle), "-o", str(labels)]
        ).exit_code
        == 0
    )
    base = [
        "distill",
        "--student",
        "bi-encoder",
        "--labels",
        str(labels),
        "--base-model",
        str(tiny_checkpoint),
    ]
    options = [
        "--layers",
        "1",
        "--list-size",
        "4",
        "--epochs",
        "1",
        "--max-length",
        "48",
        "--max-queries",
        "6",
    ]
    result = runner.invoke(
        app, [*base, *options, "--baseline-data", str(data_dir / "scifact"), "-o", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    trained = [p for p in (tmp_path / "run").iterdir() if (p / "rrdistill_training.json").exists()]
    records = sorted((json.loads((p / "rrdistill_training.json").read_text()) for p in trained), key=str)
    assert sorted(r["kind"] for r in records) == ["bi-encoder", "bi-encoder-student"]
    assert all((p / "modules.json").is_file() for p in trained)  # sentence-transformers folders
    for option, value in (("--loss", "listmle"), ("--head-learning-rate", "1e-3")):
        result = runner.invoke(app, [*base, option, value, "-o", str(tmp_path / "x")])
        assert result.exit_code == 2 and option in result.output and "bi-encoder" in result.output
