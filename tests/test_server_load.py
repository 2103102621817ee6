"""`rrdistill serve` as a real process under bounded concurrent load: no errors, flat memory, clean exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark


@pytest.mark.parametrize(
    "requests_per_client", [pytest.param(3, id="quick"), pytest.param(40, id="long", marks=pytest.mark.slow)]
)
def test_64_concurrent_clients(repo: Path, tiny_bundle: Path, requests_per_client: int) -> None:
    bench = load_benchmark(repo, "server_load")
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
