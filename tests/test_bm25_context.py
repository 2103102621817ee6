"""benchmarks/bm25_context.py: BM25 over each passage's first N tokens, against whole passages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from rrdistill.io import read_beir, write_requests
from rrdistill.retrieve import BM25Retriever


@pytest.mark.slow  # indexes and tokenizes the whole SciFact corpus once per budget
def test_a_budget_past_every_passage_is_whole_bm25_and_a_short_one_is_not(
    repo: Path, data_dir: Path, tmp_path: Path
) -> None:
    data = read_beir(data_dir / "scifact", "test")
    queries = [data.queries[q] for q in list(data.qrels)[:12]]
    requests = tmp_path / "requests.jsonl"
    write_requests(requests, BM25Retriever(list(data.corpus.values())).search(queries, k=20))
    report = tmp_path / "report.json"
    assert (
        load_benchmark(repo, "bm25_context").main(
            [str(requests), str(data_dir / "scifact"), "--budgets", "16", "100000", "--json", str(report)]
        )
        == 0
    )
    short, everything = json.loads(report.read_text())["budgets"]
    assert everything["passages_cut"] == 0 and everything["vs_whole"]["mean"] == 0.0  # the same ranking
    assert short["passages_cut"] > 0.99  # 16 tokens cut nearly every SciFact abstract …
    assert short["vs_whole"]["mean"] < 0  # … and BM25 reading 16 tokens ranks worse than on whole ones
    assert short["vs_whole"]["low"] <= short["vs_whole"]["mean"] <= short["vs_whole"]["high"]
