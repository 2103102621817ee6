"""Prometheus metrics of the rerank server, served at ``GET /metrics`` (text exposition format).

- ``rrdistill_http_requests_total{route, status}``: every HTTP answer, errors (401, 413, 422, 504)
  included: :class:`MetricsMiddleware` wraps the whole app, limits and authentication too;
- ``rrdistill_http_request_duration_seconds{route}``: latency histogram, body received to response sent;
- ``rrdistill_model_batch_pairs``: (query, passage) pairs per model call (the micro-batcher's batches);
- ``rrdistill_queue_depth``: requests accepted and not yet answered (queued or being scored);
- ``rrdistill_truncated_passages_total``: passages cut at the model's window since load, read from
  the reranker's own counters at scrape time (a cascade's parts summed).

Each app gets its own :class:`~prometheus_client.CollectorRegistry`: several apps in one process
(tests, embedding) never share or clash over series. Paths that are not routes are labelled
``other``, so scanners cannot grow the label space.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from rrdistill.runtime.reranker import Reranker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def _sum_key(stats: dict[str, Any], key: str) -> int:
    """`key` summed over a stats dict and the dicts nested in it (a cascade's fast + reasoner)."""
    return int(stats.get(key, 0)) + sum(_sum_key(v, key) for v in stats.values() if isinstance(v, dict))


class _RerankerStats(Collector):
    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "rrdistill_truncated_passages",
            "Passages cut at the model's max_length since load",
            value=_sum_key(self.reranker.stats.to_dict(), "truncated_passages"),
        )


class ServerMetrics:
    """The per-app registry and its metrics; ``render`` answers a scrape."""

    def __init__(self, reranker: Reranker, pending: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rrdistill_http_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rrdistill_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_pairs = Histogram(
            "rrdistill_model_batch_pairs",
            "(query, passage) pairs per model call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        queue = Gauge(
            "rrdistill_queue_depth", "Requests accepted and not yet answered", registry=self.registry
        )
        queue.set_function(lambda: float(pending()))
        self.registry.register(_RerankerStats(reranker))

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request by route and status code."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], metrics: ServerMetrics, routes: Iterable[str]
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = 500  # unless the app answers: an exception that escapes it is a server error
        start = time.perf_counter()

        async def observed_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
