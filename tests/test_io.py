"""Readers and writers: formats, file:line errors, tolerant reads, crash-safe output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrdistill.io import (
    JsonlAppender,
    LineError,
    ReadReport,
    atomic_directory,
    atomic_writer,
    read_beir,
    read_qrels,
    read_rankgpt,
    read_requests,
    read_run,
    read_trec_run,
    request_to_json,
    write_requests,
    write_trec_run,
)
from rrdistill.types import Candidate, Passage, Query, Ranking, Request


def make_request(qid: str = "q1", n: int = 3) -> Request:
    candidates = [
        Candidate(Passage(f"d{i}", f"text {i}", "Title" if i % 2 else ""), 10.0 - i) for i in range(n)
    ]
    return Request(Query(qid, "what is it?"), candidates, {"provenance": {"stage": "bm25"}})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_request_round_trip_keeps_extra_fields(tmp_path: Path) -> None:
    requests = [make_request("q1"), make_request("q2", 5)]
    path = tmp_path / "r.jsonl"
    assert write_requests(path, requests) == 2
    back = list(read_requests(path))
    assert [request_to_json(r) for r in back] == [request_to_json(r) for r in requests]
    assert back[0].extra == {"provenance": {"stage": "bm25"}}


def test_reads_rankllm_document_variants(tmp_path: Path) -> None:
    line = {
        "query": {"qid": 7, "text": "q"},
        "candidates": [
            {"docid": 1, "score": 3, "doc": {"contents": "from pyserini"}},
            {"docid": "b", "doc": {"segment": "msmarco v2", "title": "T"}},
            {"docid": "c", "score": None, "doc": "a plain string"},
        ],
    }
    (request,) = read_requests(write_lines(tmp_path / "r.jsonl", [json.dumps(line)]))
    assert request.qid == "7"
    assert [c.passage.text for c in request.candidates] == ["from pyserini", "msmarco v2", "a plain string"]
    assert request.candidates[1].passage.title == "T"
    assert [c.score for c in request.candidates] == [3.0, None, None]


BAD_REQUEST_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"candidates": []}', "'query'"),
    ('{"query": {"qid": "q", "text": 3}, "candidates": []}', "query.text"),
    ('{"query": {"qid": "", "text": "t"}, "candidates": []}', "query.qid is empty"),
    ('{"query": {"qid": "q", "text": "t"}, "candidates": {}}', "'candidates' must be a list"),
    (
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": "a", "doc": {"text": "x"}}, {"docid": "a", "doc": {"text": "y"}}]}',
        "candidates[1].docid 'a' appears twice",
    ),
    (
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": "a", "score": NaN, "doc": {"text": "x"}}]}',
        "candidates[0].score is nan",
    ),
    (
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": "a", "score": "high", "doc": {"text": "x"}}]}',
        "candidates[0].score must be a number",
    ),
    (
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": "a", "doc": {"title": "x"}}]}',
        "candidates[0].doc has none of the text keys",
    ),
    (
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": null, "doc": {"text": "x"}}]}',
        "candidates[0].docid must be a string or integer",
    ),
]


@pytest.mark.parametrize(("line", "reason"), BAD_REQUEST_LINES)
def test_malformed_request_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    good = json.dumps(request_to_json(make_request()))
    path = write_lines(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(LineError) as info:
        list(read_requests(path))
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)
    assert info.value.line == 3


def test_tolerant_read_skips_and_counts(tmp_path: Path) -> None:
    good = json.dumps(request_to_json(make_request()))
    path = write_lines(tmp_path / "mixed.jsonl", [good, "{oops", good.replace('"q1"', '"q2"'), "[]"])
    report = ReadReport()
    requests = list(read_requests(path, skip_bad=True, report=report))
    assert [r.qid for r in requests] == ["q1", "q2"]
    assert report.read == 2
    assert [e.line for e in report.skipped] == [2, 4]
    assert "2 read, 2 malformed" in report.summary()


def test_invalid_utf8_is_reported_not_crashing(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"query": {"qid": "q", "text": "caf\xe9"}, "candidates": []}\n')
    with pytest.raises(LineError, match="not valid UTF-8"):
        list(read_requests(path))


def test_trec_run_and_qrels_formats(tmp_path: Path) -> None:
    run = read_trec_run(
        write_lines(tmp_path / "run", ["q1 Q0 a 1 2.5 t", "q1 Q0 b 2 1.0 t", "q2 Q0 a 1 -3 t"])
    )
    assert run == {"q1": {"a": 2.5, "b": 1.0}, "q2": {"a": -3.0}}
    trec = read_qrels(write_lines(tmp_path / "qrels.txt", ["q1 0 a 2", "q1 0 b 0"]))
    beir = read_qrels(
        write_lines(tmp_path / "qrels.tsv", ["query-id\tcorpus-id\tscore", "q1\ta\t2", "q1\tb\t0"])
    )
    assert trec == beir == {"q1": {"a": 2, "b": 0}}


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["q1 Q0 a 1 2.5"], "expected 6 fields"),
        (["q1 Q0 a 1 high t"], "is not a number"),
        (["q1 Q0 a 1 nan t"], "not finite"),
        (["q1 Q0 a 1 1 t", "q1 Q0 a 2 0.5 t"], "appears twice"),
    ],
)
def test_malformed_trec_runs(tmp_path: Path, lines: list[str], reason: str) -> None:
    path = write_lines(tmp_path / "run", lines)
    with pytest.raises(LineError, match=reason) as info:
        read_trec_run(path)
    assert str(info.value).startswith(f"{path}:{len(lines)}: ")


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["q1 0 a"], None),
        (["q1 0 a x"], "not an integer"),
        (["q1 0 a 1", "q1 0 a 2"], "judged twice"),
        (["a b c d e"], "fields"),
    ],
)
def test_malformed_qrels(tmp_path: Path, lines: list[str], reason: str | None) -> None:
    path = write_lines(tmp_path / "qrels", lines)
    if reason is None:  # three fields is BEIR-shaped: 'q1', '0', 'a' -> rel 'a' is not an integer
        reason = "not an integer"
    with pytest.raises(LineError, match=reason):
        read_qrels(path)
    report = ReadReport()
    read_qrels(path, skip_bad=True, report=report)
    assert len(report.skipped) == 1


def test_trec_run_written_from_rankings_keeps_their_order(tmp_path: Path) -> None:
    tied = Ranking("q1", ["a", "b", "c"], [1.0, 1.0, 1.0])  # trec_eval would reorder ties by docid
    scored = Ranking("q2", ["x", "y"], [5.0, 2.5])
    listwise = Ranking("q3", ["m", "n", "o"], [0.1, 0.9, 0.5])  # scores from an earlier stage
    path = tmp_path / "run.trec"
    write_trec_run(path, [tied, scored, listwise])
    from rrdistill.metrics import ranked_docids

    run = read_trec_run(path)
    assert ranked_docids(run["q1"]) == ["a", "b", "c"]
    assert run["q2"] == {"x": 5.0, "y": 2.5}
    assert ranked_docids(run["q3"]) == ["m", "n", "o"]


def test_read_run_accepts_jsonl_and_trec_alike(tmp_path: Path) -> None:
    requests = [make_request("q1", 4)]
    write_requests(tmp_path / "r.jsonl", requests)
    write_trec_run(tmp_path / "r.trec", [Ranking.from_request(r) for r in requests])
    assert read_run(tmp_path / "r.jsonl") == read_run(tmp_path / "r.trec")


def test_beir_folder(data_dir: Path) -> None:
    data = read_beir(data_dir / "scifact", "test")
    assert len(data.corpus) == 5183
    assert len(data.queries) == 1109
    assert len(data.qrels) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339
    assert [q.qid for q in data.split_queries()] == list(data.qrels)
    with pytest.raises(FileNotFoundError, match="available: test, train"):
        read_beir(data_dir / "scifact", "dev")


def test_rankgpt_json_noveleval(data_dir: Path) -> None:
    requests = read_rankgpt(data_dir / "noveleval" / "data.json")
    qrels = read_qrels(data_dir / "noveleval" / "qrels.txt")
    assert len(requests) == 21
    assert all(len(r.candidates) == 20 for r in requests)
    assert {r.qid for r in requests} == set(qrels)
    assert all(set(r.docids) == set(qrels[r.qid]) for r in requests)


def test_appender_recovers_from_a_torn_line_and_knows_what_is_done(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as out:
        out.append({"qid": "a", "v": 1})
        out.append({"qid": "b", "v": 2})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"qid": "c", "v"')  # a crash in the middle of a write
    resumed = JsonlAppender(path)
    assert resumed.done == {"a", "b"}
    assert resumed.torn_bytes > 0
    with pytest.raises(ValueError, match="already written"):
        resumed.append({"qid": "a"})
    resumed.append({"qid": "c", "v": 3})
    resumed.close()
    assert [json.loads(line)["qid"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_appender_refuses_a_corrupt_middle(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "out.jsonl", ['{"qid": "a"}', "garbage", '{"qid": "b"}'])
    with pytest.raises(LineError, match=r"out.jsonl:2: invalid JSON"):
        JsonlAppender(path)


def test_atomic_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("new")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "model.onnx").write_bytes(b"half")
        assert not target.exists()
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []

    with atomic_directory(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.txt").write_text("a")
    assert (target / "sub" / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_atomic_directory_refuses_or_replaces_an_existing_one(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"), atomic_directory(target):
        pass
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["old.txt"]  # a failed overwrite keeps the old one
    with atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty) as staging:  # an empty folder (e.g. made by mkdir -p) is no conflict
        (staging / "x").write_text("x")
    assert (empty / "x").exists()


def test_atomic_directory_cleans_staging_left_by_a_killed_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".bundle.staging-{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    with atomic_directory(tmp_path / "bundle") as staging:
        (staging / "ok").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
