"""benchmarks/bundle_speed.py: bundles timed side by side on the same requests, ensembles summed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from rrdistill.io import write_requests
from rrdistill.types import Candidate, Passage, Query, Request

REPO = Path(__file__).resolve().parents[1]


def test_systems_are_timed_on_the_same_queries_and_an_ensemble_runs_every_bundle(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    speed = load_benchmark(REPO, "bundle_speed")
    requests = [
        Request(
            Query(f"q{i}", f"query {i}"),
            [Candidate(Passage(f"d{j}", f"passage {i} {j}"), 1.0) for j in range(5)],
        )
        for i in range(4)
    ]
    write_requests(tmp_path / "requests.jsonl", requests)
    out = tmp_path / "speed.json"
    args = [str(tmp_path / "requests.jsonl"), f"one={tiny_bundle}", f"both={tiny_bundle}+{tiny_bundle}"]
    assert speed.main([*args, "--queries", "3", "--rounds", "2", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    one, both = report["rows"]
    assert report["queries"] == 3 and one["calls"] == both["calls"] == 6
    assert both["kinds"] == ["cross-encoder", "cross-encoder"] and len(one["bundles"]) == 1
    assert one["speedup_vs_first"] == 1.0
    assert both["speedup_vs_first"] == pytest.approx(one["median_ms_per_query"] / both["median_ms_per_query"])
    with pytest.raises(SystemExit):
        speed.main([str(tmp_path / "requests.jsonl"), "no-bundle"])
