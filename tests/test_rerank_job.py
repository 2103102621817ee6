"""The resumable rerank loop: a crash at any chunk, then a rerun, equals an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrdistill.io import read_trec_run, write_requests
from rrdistill.rerank import rerank_file
from rrdistill.types import Candidate, Passage, Query, Request


def requests(n: int = 10, k: int = 5) -> list[Request]:
    return [
        Request(
            Query(f"q{i}", f"query {i}"),
            [Candidate(Passage(f"d{i}-{j}", f"text {j}"), float(k - j)) for j in range(k)],
        )
        for i in range(n)
    ]


def reverse(batch: list[Request]) -> list[Request]:
    return [
        r.reordered(list(range(len(r.candidates)))[::-1], [float(j) for j in range(len(r.candidates))])
        for r in batch
    ]


class Crash(RuntimeError):
    pass


def crashing_after(chunks: int):
    calls = {"n": 0}

    def rerank(batch: list[Request]) -> list[Request]:
        if calls["n"] == chunks:
            raise Crash
        calls["n"] += 1
        return reverse(batch)

    return rerank


def test_resume_after_crash_equals_uninterrupted(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    write_requests(source, requests())
    clean = rerank_file(
        source, tmp_path / "clean.jsonl", reverse, chunk_size=3, trec_path=tmp_path / "clean.trec"
    )
    assert (clean.total, clean.resumed, clean.reranked) == (10, 0, 10)
    for crash_at in range(4):
        out = tmp_path / f"crash{crash_at}.jsonl"
        with pytest.raises(Crash):
            rerank_file(source, out, crashing_after(crash_at), chunk_size=3)
        with out.open("a") as handle:
            handle.write('{"query": {"qid": "q9"')  # a torn line from the killed process
        resumed = rerank_file(
            source, out, reverse, chunk_size=3, trec_path=tmp_path / f"crash{crash_at}.trec"
        )
        assert resumed.resumed == 3 * crash_at
        assert resumed.reranked == 10 - 3 * crash_at
        assert out.read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
        assert read_trec_run(tmp_path / f"crash{crash_at}.trec") == read_trec_run(tmp_path / "clean.trec")


def test_rerunning_a_finished_job_does_nothing(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    write_requests(source, requests(4))
    rerank_file(source, tmp_path / "out.jsonl", reverse)
    again = rerank_file(source, tmp_path / "out.jsonl", crashing_after(0))
    assert (again.resumed, again.reranked) == (4, 0)


def test_output_of_another_job_is_refused(tmp_path: Path) -> None:
    write_requests(tmp_path / "a.jsonl", requests(3))
    write_requests(tmp_path / "b.jsonl", [Request(Query("other", "x"), [])])
    rerank_file(tmp_path / "b.jsonl", tmp_path / "out.jsonl", reverse)
    with pytest.raises(ValueError, match="belongs to another job"):
        rerank_file(tmp_path / "a.jsonl", tmp_path / "out.jsonl", reverse)


def test_a_reranker_that_loses_candidates_is_an_error(tmp_path: Path) -> None:
    write_requests(tmp_path / "a.jsonl", requests(2))

    def lossy(batch: list[Request]) -> list[Request]:
        return [Request(r.query, r.candidates[:-1]) for r in batch]

    with pytest.raises(ValueError, match="changed the candidate set"):
        rerank_file(tmp_path / "a.jsonl", tmp_path / "out.jsonl", lossy)


def test_duplicate_queries_in_the_input_are_an_error(tmp_path: Path) -> None:
    write_requests(tmp_path / "a.jsonl", requests(2) + requests(1))
    with pytest.raises(ValueError, match="'q0' appears more than once"):
        rerank_file(tmp_path / "a.jsonl", tmp_path / "out.jsonl", reverse)
