"""The rerank server over real HTTP on loopback: API shapes, limits, concurrency, shutdown, TEI's
fields, Prometheus metrics, the request timeout, the API key (Cohere/Jina shapes: test_server_apis)."""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import expit
from test_reasoning import script_generation

from rrdistill.runtime import RankedList, Reranker, RerankResult
from rrdistill.runtime.reranker import Counters
from rrdistill.runtime.server import ServerConfig, create_app

DOCS = ["Cats purr when content.", "Dogs bark at strangers.", "The moon causes tides."]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, reranker: Reranker, config: ServerConfig) -> None:
        self.port = free_port()
        self.app = create_app(reranker, config)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def reranker(tiny_bundle: Path) -> Reranker:
    return Reranker.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def server(reranker: Reranker) -> Iterator[RunningServer]:
    with RunningServer(reranker, ServerConfig(max_body_bytes=64 * 1024, max_documents=50)) as running:
        yield running


def test_cohere_shape(server: RunningServer, reranker: Reranker) -> None:
    body = {
        "query": "why do cats purr?",
        "documents": [DOCS[0], {"text": DOCS[1]}, DOCS[2]],
        "top_n": 2,
        "return_documents": True,
    }
    response = httpx.post(f"{server.url}/rerank", json=body)
    assert response.status_code == 200
    payload = response.json()
    expected = reranker.rerank("why do cats purr?", DOCS, top_k=2)
    assert [r["index"] for r in payload["results"]] == [r.index for r in expected]
    assert [r["relevance_score"] for r in payload["results"]] == pytest.approx(
        [r.score for r in expected], abs=1e-6
    )
    assert payload["results"][0]["document"]["text"] == DOCS[expected[0].index]


def test_tei_shape(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/rerank", json={"query": "tides", "texts": DOCS, "return_text": True})
    assert response.status_code == 200
    payload = response.json()
    assert sorted(r["index"] for r in payload) == [0, 1, 2]
    assert all(r["text"] == DOCS[r["index"]] for r in payload)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"documents": DOCS}, 422, "query"),
        ({"query": "q"}, 422, "exactly one of"),
        ({"query": "q", "documents": DOCS, "texts": DOCS}, 422, "exactly one of"),
        ({"query": "q", "documents": [1, 2]}, 422, "documents"),
        ({"query": "q", "documents": DOCS, "top_n": 0}, 422, "top_n"),
        ({"query": "q", "documents": ["d"] * 51}, 413, "limit is 50"),
        ({"query": "q", "documents": ["x" * 70_000]}, 413, "exceeds 65536 bytes"),
    ],
)
def test_bad_requests_get_4xx_naming_the_problem(
    server: RunningServer, body: dict, status: int, message: str
) -> None:
    response = httpx.post(f"{server.url}/rerank", json=body)
    assert response.status_code == status
    assert message in response.text


def test_malformed_json_and_health(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/rerank", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["kind"] == "cross-encoder"


def test_concurrent_requests_are_batched_and_all_answered(server: RunningServer, reranker: Reranker) -> None:
    queries = [f"query number {i} about cats" for i in range(48)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(client.post(f"{server.url}/rerank", json={"query": q, "texts": DOCS}) for q in queries)
            )

    before = httpx.get(f"{server.url}/health").json()["stats"]
    responses = asyncio.run(fire())
    after = httpx.get(f"{server.url}/health").json()["stats"]
    assert all(r.status_code == 200 for r in responses)
    for query, response in zip(queries, responses, strict=True):
        expected = reranker.rerank(query, DOCS)
        assert [r["index"] for r in response.json()] == [r.index for r in expected]
    requests = after["http_requests"] - before["http_requests"]
    batches = after["model_batches"] - before["model_batches"]
    assert requests == 48
    assert batches < requests  # concurrent requests shared model calls


def test_shutdown_finishes_requests_in_flight(reranker: Reranker) -> None:
    running = RunningServer(reranker, ServerConfig(max_wait_ms=2000))
    with running:
        results: list[int] = []

        def call() -> None:
            results.append(
                httpx.post(
                    f"{running.url}/rerank", json={"query": "q", "texts": DOCS}, timeout=30
                ).status_code
            )

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        batcher = running.app.app.state.batcher
        deadline = time.monotonic() + 30
        while batcher.pending < 4:  # all four are in the server, waiting in the batcher's 2 s window
            assert time.monotonic() < deadline
            time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200, 200, 200, 200]


# -- any reranker: listwise bundles, reasoning, score activation --------------------------------


@pytest.fixture(scope="module")
def listwise_server(lm_bundles: dict[str, Path]) -> Iterator[RunningServer]:
    listwise = Reranker.load(lm_bundles["plain"], threads=1)
    script_generation(listwise, think="tides follow the moon, window")
    with RunningServer(listwise, ServerConfig()) as running:
        yield running


def test_a_listwise_bundle_serves_health_and_explains_in_the_cohere_shape(
    listwise_server: RunningServer, lm_bundles: dict[str, Path]
) -> None:
    health = httpx.get(f"{listwise_server.url}/health")
    assert health.status_code == 200, health.text
    info = health.json()
    assert info["kind"] == "listwise-lm" and info["supports_reasoning"] is True
    assert info["bundle"] == lm_bundles["plain"].name and info["providers"] == ["CPUExecutionProvider"]
    body = {"query": "what causes tides?", "documents": DOCS, "reasoning": True, "top_n": 2}
    response = httpx.post(f"{listwise_server.url}/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert [r["index"] for r in payload["results"]] == [2, 1]  # the scripted model reverses the window
    assert [r["relevance_score"] for r in payload["results"]] == [3.0, 2.0]  # n − rank
    assert payload["meta"]["explanation"].startswith("tides follow the moon, window ")
    assert payload["meta"]["kind"] == "listwise-lm"
    fast = httpx.post(f"{listwise_server.url}/rerank", json={"query": "q", "documents": DOCS}, timeout=60)
    assert fast.status_code == 200 and "explanation" not in fast.json()["meta"]
    tei = httpx.post(f"{listwise_server.url}/rerank", json={"query": "q", "texts": DOCS, "reasoning": True})
    assert tei.status_code == 200 and [r["index"] for r in tei.json()] == [2, 1, 0]
    stats = httpx.get(f"{listwise_server.url}/health").json()["stats"]
    assert stats["windows"] >= 2 and stats["reasoning_windows"] >= 2


@pytest.mark.parametrize("mode", [True, "auto"])
def test_a_cross_encoder_server_answers_422_to_reasoning(server: RunningServer, mode: object) -> None:
    response = httpx.post(f"{server.url}/rerank", json={"query": "q", "documents": DOCS, "reasoning": mode})
    assert response.status_code == 422
    assert "cross-encoder and cannot reason" in response.json()["detail"]
    plain = httpx.post(f"{server.url}/rerank", json={"query": "q", "documents": DOCS, "reasoning": False})
    assert plain.status_code == 200


def test_sigmoid_activation_gives_cohere_scores_in_0_1_with_the_same_order(reranker: Reranker) -> None:
    with RunningServer(reranker, ServerConfig(activation="sigmoid")) as running:
        response = httpx.post(f"{running.url}/rerank", json={"query": "why do cats purr?", "documents": DOCS})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = reranker.rerank("why do cats purr?", DOCS)
    assert [r["index"] for r in results] == [r.index for r in expected]
    assert [r["relevance_score"] for r in results] == pytest.approx(
        expit(np.array([r.score for r in expected], dtype=np.float64)), rel=1e-12
    )


def test_a_listwise_server_refuses_a_sigmoid_at_start(lm_bundles: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="ranks"):
        create_app(Reranker.load(lm_bundles["plain"], threads=1), ServerConfig(activation="sigmoid"))


class ModeRecorder(Reranker):
    """A reranker that records the reasoning mode and size of every call it gets."""

    kind = "listwise-lm"
    supports_reasoning = True

    def __init__(self) -> None:
        self.stats, self.manifest, self.bundle = Counters(), None, None
        self.calls: list[tuple[object, list[str]]] = []

    @property
    def providers(self) -> list[str]:
        return []

    def rerank_many(self, requests, top_k=None, batch_size=None, *, reasoning="not given", activation=None):
        time.sleep(0.05)  # long enough for the next requests to queue up behind this call
        self.calls.append((reasoning, [query for query, _ in requests]))
        return [
            RankedList([RerankResult(i, str(i), 0.0) for i in range(len(docs))], f"{reasoning}")
            for _, docs in requests
        ]


def test_the_batcher_never_mixes_reasoning_modes_in_one_call() -> None:
    recorder = ModeRecorder()
    modes: list[object] = [False, True, "auto", None] * 8
    with RunningServer(recorder, ServerConfig(max_wait_ms=50)) as running:

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{running.url}/rerank",
                            json={"query": f"{i}:{mode}", "documents": DOCS}
                            | ({} if mode is None else {"reasoning": mode}),
                        )
                        for i, mode in enumerate(modes)
                    )
                )

        responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    sent = {f"{i}:{mode}": mode for i, mode in enumerate(modes)}
    for reasoning, queries in recorder.calls:  # one mode per call; None: the reranker's default
        assert {sent[q] for q in queries} == {None if reasoning == "not given" else reasoning}
    assert sorted(q for _, qs in recorder.calls for q in qs) == sorted(sent)
    assert len(recorder.calls) < len(modes)  # same-mode requests still shared calls
    for i, (mode, response) in enumerate(zip(modes, responses, strict=True)):
        if mode in (True, "auto"):
            assert response.json()["meta"]["explanation"] == f"{mode}", i


# -- TEI's fields, metrics, request timeout, API key, query isolation, the serve command ---------


def test_tei_scores_are_sigmoids_unless_raw_scores_and_sorted_best_first(
    server: RunningServer, reranker: Reranker
) -> None:
    query = "why do cats purr?"
    raw = reranker.rerank(query, DOCS, activation="identity")
    answers = {
        flag: httpx.post(
            f"{server.url}/rerank",
            json={"query": query, "texts": DOCS} | ({} if flag is None else {"raw_scores": flag}),
        ).json()
        for flag in (None, False, True)
    }
    for payload in answers.values():
        assert [r["index"] for r in payload] == [r.index for r in raw]
        scores = [r["score"] for r in payload]
        assert scores == sorted(scores, reverse=True)
    logits = np.array([r.score for r in raw], dtype=np.float64)
    assert [r["score"] for r in answers[None]] == pytest.approx(expit(logits), rel=1e-12)  # TEI's default
    assert [r["score"] for r in answers[False]] == pytest.approx(expit(logits), rel=1e-12)
    assert [r["score"] for r in answers[True]] == pytest.approx(logits, rel=1e-6)


def test_tei_truncate_false_refuses_a_pair_longer_than_the_model_reads(
    server: RunningServer, reranker: Reranker
) -> None:
    long_text = " ".join(["the moon pulls the oceans and the tides follow"] * 40)
    texts = [DOCS[0], long_text]
    before = reranker.stats.to_dict()["truncated_passages"]
    refused = httpx.post(f"{server.url}/rerank", json={"query": "tides", "texts": texts, "truncate": False})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "texts[1]" in detail and f"at most {reranker.max_length}" in detail and "truncate true" in detail
    assert reranker.stats.to_dict()["truncated_passages"] == before  # refused before the model ran
    for body in ({"truncate": True}, {}):  # TEI's auto-truncate default
        answered = httpx.post(f"{server.url}/rerank", json={"query": "tides", "texts": texts} | body)
        assert answered.status_code == 200 and len(answered.json()) == 2
    assert reranker.stats.to_dict()["truncated_passages"] == before + 2  # cut, and counted
    short = httpx.post(f"{server.url}/rerank", json={"query": "tides", "texts": DOCS, "truncate": False})
    assert short.status_code == 200
    long_query = httpx.post(
        f"{server.url}/rerank", json={"query": long_text, "texts": DOCS[:1], "truncate": False}
    )
    assert long_query.status_code == 422 and "the query is" in long_query.json()["detail"]


@pytest.mark.parametrize(
    ("direction", "status"), [("Right", 200), ("right", 200), ("Left", 422), ("up", 422)]
)
def test_tei_truncation_direction(server: RunningServer, direction: str, status: int) -> None:
    body = {"query": "q", "texts": DOCS, "truncation_direction": direction}
    response = httpx.post(f"{server.url}/rerank", json=body)
    assert response.status_code == status
    if direction == "Left":
        assert "Left is not supported" in response.json()["detail"]


def scrape(url: str, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of GET /metrics, by (sample name, sorted labels)."""
    response = httpx.get(f"{url}/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_total(samples: dict, route: str, status: int) -> float:
    return samples.get(("rrdistill_http_requests_total", (("route", route), ("status", str(status)))), 0.0)


def test_metrics_count_requests_batches_and_truncation(reranker: Reranker) -> None:
    with RunningServer(reranker, ServerConfig()) as running:
        before = scrape(running.url)
        long_text = " ".join(["the moon pulls the oceans"] * 80)
        assert (
            httpx.post(f"{running.url}/v1/rerank", json={"query": "q", "documents": DOCS}).status_code == 200
        )
        assert (
            httpx.post(f"{running.url}/v1/rerank", json={"query": "q", "documents": [long_text]}).status_code
            == 200
        )
        assert httpx.post(f"{running.url}/v1/rerank", json={"query": "q"}).status_code == 422
        assert httpx.post(f"{running.url}/nowhere", json={}).status_code == 404
        after = scrape(running.url)
    for name in (
        "rrdistill_http_requests_total",
        "rrdistill_http_request_duration_seconds_bucket",
        "rrdistill_model_batch_pairs_bucket",
        "rrdistill_queue_depth",
        "rrdistill_truncated_passages_total",
    ):
        assert any(key[0] == name for key in after), name
    assert requests_total(after, "/v1/rerank", 200) - requests_total(before, "/v1/rerank", 200) == 2
    assert requests_total(after, "/v1/rerank", 422) - requests_total(before, "/v1/rerank", 422) == 1
    assert requests_total(after, "other", 404) == 1  # unknown paths do not grow the label space
    assert requests_total(after, "/metrics", 200) == 1  # the first scrape, counted once answered
    latency = ("rrdistill_http_request_duration_seconds_count", (("route", "/v1/rerank"),))
    assert after[latency] - before.get(latency, 0.0) == 3
    pairs = after[("rrdistill_model_batch_pairs_sum", ())] - before[("rrdistill_model_batch_pairs_sum", ())]
    assert pairs == len(DOCS) + 1
    truncated = ("rrdistill_truncated_passages_total", ())
    assert after[truncated] - before[truncated] == 1
    assert after[("rrdistill_queue_depth", ())] == 0


def test_each_app_has_its_own_metrics_registry() -> None:
    with (
        RunningServer(ModeRecorder(), ServerConfig()) as one,
        RunningServer(ModeRecorder(), ServerConfig()) as two,
    ):
        assert one.app.app.state.metrics.registry is not two.app.app.state.metrics.registry
        httpx.post(f"{one.url}/rerank", json={"query": "q", "documents": DOCS})
        assert requests_total(scrape(one.url), "/rerank", 200) == 1
        assert requests_total(scrape(two.url), "/rerank", 200) == 0


class SlowReranker(Reranker):
    """A cross-encoder-like fake whose every model call takes `delay` seconds."""

    kind = "cross-encoder"
    supports_reasoning = False

    def __init__(self, delay: float) -> None:
        self.stats, self.manifest, self.bundle = Counters(), None, None
        self.delay = delay
        self.calls: list[list[str]] = []
        self.finished = 0

    @property
    def providers(self) -> list[str]:
        return []

    def rerank_many(self, requests, top_k=None, batch_size=None, *, reasoning=False, activation=None):
        self.calls.append([query for query, _ in requests])
        time.sleep(self.delay)
        self.finished += 1
        return [
            RankedList([RerankResult(i, str(i), -float(i)) for i in range(len(docs))]) for _, docs in requests
        ]


def test_a_request_the_model_does_not_answer_in_time_gets_504() -> None:
    slow = SlowReranker(delay=2.0)
    with RunningServer(slow, ServerConfig(request_timeout_s=1.0, max_wait_ms=1)) as running:
        batcher = running.app.app.state.batcher
        answers: dict[str, tuple[int, str, float]] = {}

        def call(query: str) -> None:
            start = time.monotonic()
            response = httpx.post(
                f"{running.url}/v1/rerank", json={"query": query, "documents": DOCS}, timeout=30
            )
            answers[query] = (response.status_code, response.text, time.monotonic() - start)

        first = threading.Thread(target=call, args=("first",))
        first.start()
        deadline = time.monotonic() + 10
        while not slow.calls:  # the first request is being scored
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = threading.Thread(target=call, args=("second",))
        second.start()
        while batcher.pending < 2:  # the second waits in the queue behind the slow call
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert scrape(running.url)[("rrdistill_queue_depth", ())] == 2
        first.join(timeout=10)
        second.join(timeout=10)
        for status, text, seconds in answers.values():
            assert status == 504 and "request timeout of 1 s" in text
            assert seconds < slow.delay  # answered at the timeout, not when the model finished
        while slow.finished < 1 or batcher.queue.qsize() or batcher.pending:  # the work ends unread
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        assert slow.calls == [["first"]]  # the second gave up before its batch formed: never scored
        assert requests_total(scrape(running.url), "/v1/rerank", 504) == 2


def test_no_timeout_waits_for_the_model() -> None:
    with RunningServer(SlowReranker(delay=0.3), ServerConfig(request_timeout_s=None)) as running:
        response = httpx.post(
            f"{running.url}/v2/rerank", json={"model": "m", "query": "q", "documents": DOCS}
        )
    assert response.status_code == 200 and [r["index"] for r in response.json()["results"]] == [0, 1, 2]


def test_an_api_key_guards_every_route_but_health(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    key = "s3cret-key"
    body = {"query": "q", "documents": DOCS}
    with RunningServer(SlowReranker(delay=0.0), ServerConfig(api_key=key)) as running:
        assert httpx.get(f"{running.url}/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"}):
            for method, route in (("POST", "/v1/rerank"), ("POST", "/rerank"), ("GET", "/metrics")):
                response = httpx.request(method, f"{running.url}{route}", json=body, headers=headers)
                assert response.status_code == 401, (route, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in response.json()["detail"]
        good = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{running.url}/v1/rerank", json=body, headers=good).status_code == 200
        assert httpx.post(f"{running.url}/jina/v1/rerank", json=body, headers=good).status_code == 200
        samples = scrape(running.url, headers=good)
    assert (b"wrong", key.encode()) in compared and (key.encode(), key.encode()) in compared
    assert requests_total(samples, "/v1/rerank", 401) == 3 and requests_total(samples, "/v1/rerank", 200) == 1
    assert key not in repr(ServerConfig(api_key=key))  # never printed with the config


class QueryEcho(Reranker):
    """A listwise-like fake that ranks each query's documents by how many words they share with it."""

    kind = "listwise-lm"
    supports_reasoning = True

    def __init__(self) -> None:
        self.stats, self.manifest, self.bundle = Counters(), None, None
        self.calls: list[list[tuple[str, list[str]]]] = []

    @property
    def providers(self) -> list[str]:
        return []

    def rerank_many(self, requests, top_k=None, batch_size=None, *, reasoning=False, activation=None):
        time.sleep(0.05)
        self.calls.append([(query, list(docs)) for query, docs in requests])
        out = []
        for query, docs in requests:
            words = set(query.split())
            order = sorted(range(len(docs)), key=lambda i: (-len(words & set(docs[i].split())), i))
            out.append(
                RankedList([RerankResult(i, str(i), float(len(docs) - r)) for r, i in enumerate(order)])
            )
        return out


def test_concurrent_queries_to_a_listwise_model_share_a_call_but_never_their_documents() -> None:
    model = QueryEcho()
    bodies = [
        {"query": "cats purr", "documents": ["dogs bark", "cats purr softly", "moon tides"]},
        {"query": "moon tides", "documents": ["the moon and tides", "cats"]},
    ]
    with RunningServer(model, ServerConfig(max_wait_ms=300)) as running:

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(f"{running.url}/v1/rerank", json=b | {"return_documents": True})
                        for b in bodies
                    )
                )

        responses = asyncio.run(fire())
    assert [len(call) for call in model.calls] == [2]  # one model call for both requests...
    assert sorted(model.calls[0]) == sorted((b["query"], b["documents"]) for b in bodies)  # ...each its own
    first, second = (r.json()["results"] for r in responses)
    assert [r["document"]["text"] for r in first] == ["cats purr softly", "dogs bark", "moon tides"]
    assert [r["document"]["text"] for r in second] == ["the moon and tides", "cats"]
    assert [r["relevance_score"] for r in first] == pytest.approx([1.0, 2 / 3, 1 / 3])  # n of its own list
    assert [r["relevance_score"] for r in second] == [1.0, 0.5]


def test_serve_takes_the_api_key_from_the_environment_and_a_request_timeout(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import rrdistill.runtime.server as server_module
    from rrdistill.cli import app as cli

    configs: list[ServerConfig] = []
    monkeypatch.setattr(server_module, "serve", lambda reranker, host, port, config: configs.append(config))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["serve", str(tiny_bundle), "--request-timeout", "5"], env={"RRDISTILL_API_KEY": "from-env"}
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["serve", str(tiny_bundle), "--request-timeout", "0", "--api-key", "flag"])
    assert result.exit_code == 0, result.output
    assert [(c.api_key, c.request_timeout_s) for c in configs] == [("from-env", 5.0), ("flag", None)]
