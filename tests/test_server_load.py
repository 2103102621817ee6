"""`rrdistill serve` as a real process under bounded concurrent load: no errors, flat memory, clean exit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def load_benchmark(repo: Path):
    spec = importlib.util.spec_from_file_location("server_load", repo / "benchmarks" / "server_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["server_load"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "requests_per_client", [pytest.param(3, id="quick"), pytest.param(40, id="long", marks=pytest.mark.slow)]
)
def test_64_concurrent_clients(repo: Path, tiny_bundle: Path, requests_per_client: int) -> None:
    bench = load_benchmark(repo)
    server = bench.ServerProcess(tiny_bundle, threads=1)
    try:
        server.wait_ready()
        bench.run_load(server.url, server.process.pid, clients=8, requests_per_client=2)  # warm-up
        report = bench.run_load(
            server.url, server.process.pid, clients=64, requests_per_client=requests_per_client
        )
    finally:
        exit_code, log = server.stop()
    assert report.requests == 64 * requests_per_client
    assert report.errors == 0
    assert report.p50_ms <= report.p99_ms
    assert report.rss_mb_end < report.rss_mb_start + 50, report  # no growth with the number of requests
    assert "Application shutdown complete" in log  # SIGTERM: graceful shutdown, not a kill
    assert exit_code in (0, -15)
