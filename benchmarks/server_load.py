"""Bounded load test of `rrdistill serve` on loopback: many concurrent clients, a fixed number of requests.

Reports errors, latency percentiles, throughput and the server's resident memory before, during and
after the run (from /proc, so memory growth across the run is visible).

    python benchmarks/server_load.py BUNDLE [--clients 64] [--requests 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

DOCUMENTS = [
    "Cats purr when they are content, and sometimes when they are stressed.",
    "The moon's gravity causes the tides of the oceans on Earth.",
    "Vaccines train the immune system to recognise a pathogen before an infection.",
    "Dogs were domesticated from wolves more than fifteen thousand years ago.",
] * 5


@dataclass
class LoadReport:
    clients: int
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mb_start: float
    rss_mb_peak: float
    rss_mb_end: float


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(
    client: httpx.AsyncClient, url: str, n: int, latencies: list[float], errors: list[str], seed: int
) -> None:
    for i in range(n):
        body = {"query": f"question {seed}-{i}: why do cats purr?", "documents": DOCUMENTS, "top_n": 5}
        started = time.perf_counter()
        try:
            response = await client.post(f"{url}/rerank", json=body)
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        latencies.append((time.perf_counter() - started) * 1000)


def run_load(url: str, server_pid: int, clients: int = 64, requests_per_client: int = 20) -> LoadReport:
    latencies: list[float] = []
    errors: list[str] = []
    peak = start = rss_mb(server_pid)

    async def main() -> None:
        nonlocal peak
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            tasks = [
                asyncio.create_task(_client(client, url, requests_per_client, latencies, errors, c))
                for c in range(clients)
            ]
            while not all(t.done() for t in tasks):
                peak = max(peak, rss_mb(server_pid))
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)

    began = time.perf_counter()
    asyncio.run(main())
    seconds = time.perf_counter() - began
    ordered = sorted(latencies)
    return LoadReport(
        clients=clients,
        requests=len(latencies),
        errors=len(errors),
        seconds=round(seconds, 2),
        requests_per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(statistics.median(ordered), 1),
        p99_ms=round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        max_ms=round(ordered[-1], 1),
        rss_mb_start=round(start, 1),
        rss_mb_peak=round(peak, 1),
        rss_mb_end=round(rss_mb(server_pid), 1),
    )


class ServerProcess:
    """`rrdistill serve BUNDLE` in a subprocess on a free loopback port."""

    def __init__(self, bundle: Path, threads: int | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [sys.executable, "-m", "rrdistill.cli", "serve", str(bundle), "--port", str(self.port)]
        if threads:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("server did not become ready")

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then (exit code, server log). uvicorn drains in-flight requests, runs the
        application's shutdown, and re-raises the signal, so the exit code is -SIGTERM."""
        self.process.send_signal(signal.SIGTERM)
        _, log = self.process.communicate(timeout=60)
        return self.process.returncode, log.decode(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    server = ServerProcess(args.bundle, args.threads)
    try:
        server.wait_ready()
        run_load(server.url, server.process.pid, clients=8, requests_per_client=2)  # warm-up
        report = run_load(server.url, server.process.pid, args.clients, args.requests)
    finally:
        code, log = server.stop()
    payload = {
        **asdict(report),
        "server_exit_code": code,
        "graceful": "Application shutdown complete" in log,
        "bundle": str(args.bundle),
        "pid": os.getpid(),
    }
    print(json.dumps(payload, indent=2))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
