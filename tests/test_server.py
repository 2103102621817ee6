"""The /rerank server over real HTTP on loopback: both API shapes, limits, concurrency, shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
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
