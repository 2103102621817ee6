"""The rrdistill command line on real data: retrieve → eval, errors, missing extras."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.extras import MissingExtraError, require
from rrdistill.io import read_qrels, read_requests, read_trec_run
from rrdistill.metrics import evaluate

runner = CliRunner()


@pytest.fixture(scope="module")
def noveleval_beir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NovelEval's TSV files laid out as a BEIR folder (its passages have no titles)."""
    root = tmp_path_factory.mktemp("noveleval-beir")
    source = data_dir / "noveleval"
    with (root / "corpus.jsonl").open("w") as out:
        for line in (source / "corpus.tsv").read_text().splitlines():
            docid, text = line.split("\t", 1)
            out.write(json.dumps({"_id": docid, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for line in (source / "queries.tsv").read_text().splitlines():
            qid, text = line.split("\t", 1)
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text((source / "qrels.txt").read_text())
    return root


def test_help_lists_only_working_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = set(typer.main.get_command(app).commands)
    # grows with each stage; never a placeholder command
    assert commands == {
        "retrieve",
        "eval",
        "synthesize",
        "train-teacher",
        "tiny-model",
        "rerank",
        "serve",
        "export",
        "pipeline",
        "models",
        "label",
        "distill",
        "bench",
    }
    for name in commands:
        assert name in result.output
        assert runner.invoke(app, [name, "--help"]).exit_code == 0


def test_retrieve_then_eval(noveleval_beir: Path, tmp_path: Path) -> None:
    out, trec, report = tmp_path / "bm25.jsonl", tmp_path / "bm25.trec", tmp_path / "eval.json"
    result = runner.invoke(
        app, ["retrieve", str(noveleval_beir), "-o", str(out), "--trec", str(trec), "-k", "10"]
    )
    assert result.exit_code == 0, result.output
    requests = list(read_requests(out))
    assert len(requests) == 21
    assert all(1 <= len(r.candidates) <= 10 for r in requests)
    scores = [c.score for c in requests[0].candidates]
    assert scores == sorted(scores, reverse=True)
    assert set(read_trec_run(trec)) == {r.qid for r in requests}

    result = runner.invoke(
        app,
        [
            "eval",
            str(out),
            str(noveleval_beir),
            "--json",
            str(report),
            "-m",
            "ndcg@10",
            "-m",
            "recall@100",
            "-m",
            "mrr@10",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    assert set(payload) >= {"ndcg@10", "recall@100", "mrr@10", "per_query"}
    expected = evaluate(read_trec_run(trec), read_qrels(noveleval_beir / "qrels" / "test.tsv"))
    assert payload["ndcg@10"] == pytest.approx(expected.means["ndcg@10"], abs=1e-12)
    assert payload["per_query"]["0"]["mrr@10"] == pytest.approx(expected.per_query["0"]["mrr@10"])
    assert 0.3 < payload["ndcg@10"] < 0.9  # BM25 over the 420 NovelEval passages, not a constant


def test_eval_reports_malformed_lines_with_file_and_line(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("0 Q0 0-3 1 2.0 x\n0 Q0 0-4 2 oops x\n")
    qrels = str(data_dir / "noveleval" / "qrels.txt")
    result = runner.invoke(app, ["eval", str(run), qrels])
    assert result.exit_code == 2
    assert f"{run}:2: score 'oops' is not a number" in result.output
    result = runner.invoke(app, ["eval", str(run), qrels, "--skip-bad"])
    assert result.exit_code == 0
    assert "1 malformed line(s) skipped" in result.output


def test_missing_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, noveleval_beir: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)  # makes `import bm25s` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'rrdistill\[retrieve\]'"):
        require("bm25s", "retrieve", "BM25 retrieval")
    result = runner.invoke(app, ["retrieve", str(noveleval_beir), "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2
    assert "pip install 'rrdistill[retrieve]'" in result.output
    assert not (tmp_path / "x.jsonl").exists()
