"""`rrdistill rerank --bundle`: results, TREC run, eval, and kill -9 at random points then resume."""

from __future__ import annotations

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
from rrdistill.io import read_rankgpt, read_requests, read_trec_run, write_requests
from rrdistill.types import Query, Request

runner = CliRunner()


@pytest.fixture(scope="module")
def requests_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NovelEval's 21 lists, repeated under new qids to make a job long enough to interrupt."""
    base = read_rankgpt(data_dir / "noveleval" / "data.json")
    requests = [Request(Query(f"{r.qid}-{k}", r.query.text), r.candidates) for k in range(5) for r in base]
    path = tmp_path_factory.mktemp("rerank") / "requests.jsonl"
    write_requests(path, requests)
    return path


def test_rerank_writes_results_and_a_trec_run(
    tiny_bundle: Path, requests_file: Path, tmp_path: Path, data_dir: Path
) -> None:
    out, trec = tmp_path / "results.jsonl", tmp_path / "run.trec"
    result = runner.invoke(
        app, ["rerank", str(requests_file), "--bundle", str(tiny_bundle), "-o", str(out), "--trec", str(trec)]
    )
    assert result.exit_code == 0, result.output
    assert "passages truncated" in result.output
    results = list(read_requests(out))
    inputs = list(read_requests(requests_file))
    assert [r.qid for r in results] == [r.qid for r in inputs]
    for got, given in zip(results, inputs, strict=True):
        assert sorted(got.docids) == sorted(given.docids)
        scores = [c.score for c in got.candidates]
        assert scores == sorted(scores, reverse=True)
    assert set(read_trec_run(trec)) == {r.qid for r in inputs}


def test_missing_bundle_option_and_corrupt_bundle(requests_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["rerank", str(requests_file), "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "--bundle" in result.output
    (tmp_path / "fake").mkdir()
    result = runner.invoke(
        app,
        ["rerank", str(requests_file), "--bundle", str(tmp_path / "fake"), "-o", str(tmp_path / "x.jsonl")],
    )
    assert result.exit_code == 2 and "no rrdistill.json" in result.output


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_killed_at_random_points_then_resumed_equals_uninterrupted(
    tiny_bundle: Path, requests_file: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "rrdistill.cli",
        "rerank",
        str(requests_file),
        "--bundle",
        str(tiny_bundle),
        "--chunk-size",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
    ]
    clean = tmp_path / "clean.jsonl"
    subprocess.run(
        [*command, "-o", str(clean), "--trec", str(tmp_path / "clean.trec")], check=True, capture_output=True
    )
    total = _line_count(clean)
    rng = random.Random(11)
    kills = 0
    for attempt in range(3):
        out = tmp_path / f"killed{attempt}.jsonl"
        for _ in range(3):  # kill 3 times at random points, resuming each time
            target = rng.randint(1, total - 1)
            process = subprocess.Popen(
                [*command, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 60
            while process.poll() is None and _line_count(out) < target and time.monotonic() < deadline:
                time.sleep(0.001)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
            process.wait()
        subprocess.run(
            [*command, "-o", str(out), "--trec", str(tmp_path / f"killed{attempt}.trec")],
            check=True,
            capture_output=True,
        )
        assert out.read_bytes() == clean.read_bytes()
        assert read_trec_run(tmp_path / f"killed{attempt}.trec") == read_trec_run(tmp_path / "clean.trec")
    assert kills >= 5  # most attempts really interrupted a running job
