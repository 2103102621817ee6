"""The Cohere (v1, v2), Jina and TEI routes against their providers' documented examples.

Each provider's example request is sent as written, and the answer must have exactly the keys and
JSON types of the provider's example response (the values are this model's, not theirs), and the
scores this model gives (sigmoid of the logits in [0, 1], or positions for a rank-scored model).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.special import expit
from test_server import DOCS, RunningServer

from rrdistill.runtime import RankedList, Reranker, RerankResult
from rrdistill.runtime.reranker import Counters
from rrdistill.runtime.server import ServerConfig

# Cohere Rerank v1 (https://docs.cohere.com/v1/reference/rerank): the reference's example, from
# cohere-ai/cohere-developer-experience snippets/snippets/{requests,responses}/rerank-post.yaml.
CAPITALS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. "
    "Its capital is Saipan.",
    "Capitalization or capitalisation in English grammar is the use of a capital letter at the start "
    "of a word. English usage varies from capitalization in other languages.",
    "Washington, D.C. (also known as simply Washington or D.C., and officially as the District of "
    "Columbia) is the capital of the United States. It is a federal district.",
    "Capital punishment has existed in the United States since beforethe United States was a "
    "country. As of 2017, capital punishment is legal in 30 of the 50 states.",
]
COHERE_QUERY = "What is the capital of the United States?"
COHERE_V1_REQUEST = {
    "documents": [{"text": text} for text in CAPITALS],
    "query": COHERE_QUERY,
    "top_n": 3,
    "model": "rerank-v4.0-pro",
}
COHERE_V1_RESPONSE = {
    "id": "8bc745a3-7871-4597-822e-18c95d5df48c",
    "results": [
        {"index": 3, "relevance_score": 0.999071},
        {"index": 4, "relevance_score": 0.7867867},
        {"index": 0, "relevance_score": 0.32713068},
    ],
    "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
}
# Cohere Rerank v2 (https://docs.cohere.com/reference/rerank): .../rerank-v2-post.yaml.
COHERE_V2_REQUEST = {"documents": CAPITALS, "query": COHERE_QUERY, "top_n": 3, "model": "rerank-v4.0-pro"}
COHERE_V2_RESPONSE = {
    "results": [
        {"index": 3, "relevance_score": 0.999071},
        {"index": 4, "relevance_score": 0.7867867},
        {"index": 0, "relevance_score": 0.32713068},
    ],
    "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
    "meta": {"api_version": {"version": "2", "is_experimental": False}, "billed_units": {"search_units": 1}},
}
# Jina (https://jina.ai/reranker, POST https://api.jina.ai/v1/rerank): the example request of its
# model card (jinaai/jina-reranker-v2-base-multilingual); the answer as the API returns it:
# {model, usage: {total_tokens}, results: [{index, document: {text}, relevance_score}]}.
SKINCARE = [
    "Organic skincare for sensitive skin with aloe vera and chamomile...",
    "New makeup trends focus on bold colors and innovative techniques...",
    "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille...",
]
JINA_REQUEST = {
    "model": "jina-reranker-v2-base-multilingual",
    "query": "Organic skincare products for sensitive skin",
    "top_n": 3,
    "documents": SKINCARE,
}
JINA_RESPONSE = {
    "model": "jina-reranker-v2-base-multilingual",
    "usage": {"total_tokens": 815},
    "results": [
        {"index": 0, "document": {"text": SKINCARE[0]}, "relevance_score": 0.8783142566680908},
        {"index": 2, "document": {"text": SKINCARE[2]}, "relevance_score": 0.7624675869941711},
        {"index": 1, "document": {"text": SKINCARE[1]}, "relevance_score": 0.1867867},
    ],
}
# TEI (huggingface/text-embeddings-inference router/src/http/types.rs): the OpenAPI examples of
# RerankRequest and Rank, with return_text on so that the answer has the example's `text`.
TEI_REQUEST = {
    "query": "What is Deep Learning?",
    "texts": ["Deep Learning is ..."],
    "truncate": False,
    "truncation_direction": "right",
    "raw_scores": False,
    "return_text": True,
}
TEI_RESPONSE = [{"index": 0, "text": "Deep Learning is ...", "score": 1.0}]


def shape(value: Any) -> Any:
    """The keys and JSON types of `value` (lists: the one shape all their items share)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    assert isinstance(value, list)
    shapes = [shape(item) for item in value]
    assert all(s == shapes[0] for s in shapes), shapes
    return shapes[:1]


@pytest.fixture(scope="module")
def reranker(tiny_bundle: Path) -> Reranker:
    return Reranker.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def server(reranker: Reranker) -> Iterator[RunningServer]:
    with RunningServer(reranker, ServerConfig(max_documents=50)) as running:
        yield running


def expected_sigmoid(reranker: Reranker, query: str, docs: list[str], top_n: int | None = None) -> RankedList:
    return reranker.rerank(query, docs, top_k=top_n, activation="sigmoid")


def test_cohere_v1_answers_the_documented_example_in_the_documented_shape(
    server: RunningServer, reranker: Reranker
) -> None:
    response = httpx.post(f"{server.url}/v1/rerank", json=COHERE_V1_REQUEST)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert shape(payload) == shape(COHERE_V1_RESPONSE)
    assert payload["meta"] == COHERE_V1_RESPONSE["meta"]
    expected = expected_sigmoid(reranker, COHERE_QUERY, CAPITALS, top_n=3)
    assert [r["index"] for r in payload["results"]] == [r.index for r in expected]
    assert [r["relevance_score"] for r in payload["results"]] == pytest.approx(
        [r.score for r in expected], rel=1e-12
    )
    raw = reranker.rerank(COHERE_QUERY, CAPITALS, top_k=3, activation="identity")
    assert [r.score for r in expected] == pytest.approx(expit(np.array([r.score for r in raw])), rel=1e-12)
    assert all(0.0 <= r["relevance_score"] <= 1.0 for r in payload["results"])


def test_cohere_v1_returns_documents_as_text_objects_when_asked(server: RunningServer) -> None:
    body = {"query": "why do cats purr?", "documents": [DOCS[0], {"text": DOCS[1], "title": "t"}, DOCS[2]]}
    response = httpx.post(
        f"{server.url}/v1/rerank", json=body | {"return_documents": True, "max_chunks_per_doc": 3}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    for result in results:
        assert set(result) == {"index", "relevance_score", "document"}
        assert result["document"] == {"text": DOCS[result["index"]]}
    plain = httpx.post(f"{server.url}/v1/rerank", json=body).json()["results"]
    assert all(set(r) == {"index", "relevance_score"} for r in plain)  # return_documents: false by default


def test_cohere_v2_answers_the_documented_example_in_the_documented_shape(
    server: RunningServer, reranker: Reranker
) -> None:
    response = httpx.post(f"{server.url}/v2/rerank", json=COHERE_V2_REQUEST | {"max_tokens_per_doc": 512})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert shape(payload) == shape(COHERE_V2_RESPONSE)
    assert payload["meta"] == COHERE_V2_RESPONSE["meta"]
    expected = expected_sigmoid(reranker, COHERE_QUERY, CAPITALS, top_n=3)
    assert [(r["index"], r["relevance_score"]) for r in payload["results"]] == [
        (r.index, pytest.approx(r.score, rel=1e-12)) for r in expected
    ]
    assert payload["id"] != httpx.post(f"{server.url}/v2/rerank", json=COHERE_V2_REQUEST).json()["id"]


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("/v2/rerank", {"query": "q", "documents": DOCS}, 422, "model"),  # required in v2
        ("/v1/rerank", {"query": "q"}, 422, "documents"),
        ("/v1/rerank", {"query": "q", "documents": DOCS, "top_n": 0}, 422, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": DOCS, "reasoning": True}, 422, "cannot reason"),
        ("/jina/v1/rerank", {"query": "", "documents": DOCS}, 422, "query"),
        ("/v2/rerank", {"model": "m", "query": "q", "documents": ["d"] * 51}, 413, "limit is 50"),
    ],
)
def test_bad_bodies_on_the_new_routes_get_4xx_naming_the_problem(
    server: RunningServer, route: str, body: dict, status: int, message: str
) -> None:
    response = httpx.post(f"{server.url}{route}", json=body)
    assert response.status_code == status
    assert message in response.text


def test_jina_answers_the_documented_example_with_documents_and_token_usage(
    server: RunningServer, reranker: Reranker
) -> None:
    response = httpx.post(f"{server.url}/jina/v1/rerank", json=JINA_REQUEST)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert shape(payload) == shape(JINA_RESPONSE)  # documents come back by default in Jina's API
    expected = expected_sigmoid(reranker, JINA_REQUEST["query"], SKINCARE)
    assert [r["index"] for r in payload["results"]] == [r.index for r in expected]
    assert [r["relevance_score"] for r in payload["results"]] == pytest.approx([r.score for r in expected])
    assert all(r["document"]["text"] == SKINCARE[r["index"]] for r in payload["results"])
    assert payload["model"] == reranker.name
    pairs = reranker.tokenizer.encode_batch([(JINA_REQUEST["query"], text) for text in SKINCARE])
    assert payload["usage"]["total_tokens"] == sum(len(e.ids) for e in pairs) > 0
    bare = httpx.post(
        f"{server.url}/jina/v1/rerank", json=JINA_REQUEST | {"return_documents": False, "top_n": 2}
    )
    assert [set(r) for r in bare.json()["results"]] == [{"index", "relevance_score"}] * 2


def test_tei_answers_the_documented_example_in_the_documented_shape(
    server: RunningServer, reranker: Reranker
) -> None:
    response = httpx.post(f"{server.url}/rerank", json=TEI_REQUEST)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert shape(payload) == shape(TEI_RESPONSE)
    [expected] = expected_sigmoid(reranker, TEI_REQUEST["query"], TEI_REQUEST["texts"])
    assert payload[0]["score"] == pytest.approx(expected.score, rel=1e-12)


class RankScored(Reranker):
    """A listwise-like model: scores are ranks (n − rank), sigmoid refused; records its calls."""

    kind = "listwise-lm"
    supports_reasoning = True

    def __init__(self) -> None:
        self.stats, self.manifest, self.bundle = Counters(), None, None
        self.calls: list[dict[str, Any]] = []

    @property
    def providers(self) -> list[str]:
        return []

    def rerank_many(self, requests, top_k=None, batch_size=None, *, reasoning=False, activation=None):
        if activation == "sigmoid":
            raise ValueError("scores are ranks and have no sigmoid")
        self.calls.append({"reasoning": reasoning, "activation": activation})
        out = []
        for _, docs in requests:
            n = len(docs)
            order = list(reversed(range(n)))
            explanation = "because" if reasoning else None
            out.append(
                RankedList([RerankResult(i, str(i), float(n - r)) for r, i in enumerate(order)], explanation)
            )
        return out


def test_a_rank_scored_model_answers_cohere_and_jina_with_positions_in_0_1() -> None:
    model = RankScored()
    with RunningServer(model, ServerConfig()) as running:
        v1 = httpx.post(f"{running.url}/v1/rerank", json={"query": "q", "documents": [*DOCS, "d4"]})
        v2 = httpx.post(
            f"{running.url}/v2/rerank", json={"model": "m", "query": "q", "documents": DOCS, "top_n": 2}
        )
        jina = httpx.post(f"{running.url}/jina/v1/rerank", json={"query": "q", "documents": DOCS})
        thought = httpx.post(
            f"{running.url}/v1/rerank", json={"query": "q", "documents": DOCS, "reasoning": True}
        )
        tei_raw = httpx.post(f"{running.url}/rerank", json={"query": "q", "texts": DOCS, "raw_scores": True})
    assert [r["relevance_score"] for r in v1.json()["results"]] == [1.0, 0.75, 0.5, 0.25]
    assert [r["index"] for r in v1.json()["results"]] == [3, 2, 1, 0]
    assert [r["relevance_score"] for r in v2.json()["results"]] == pytest.approx([1.0, 2 / 3])
    assert [r["relevance_score"] for r in jina.json()["results"]] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert jina.json()["usage"] == {"total_tokens": 0}  # not counted for a listwise prompt
    assert set(v1.json()["meta"]) == {"api_version", "billed_units"}  # no extras unless asked
    assert thought.json()["meta"]["explanation"] == "because"
    assert [r["score"] for r in tei_raw.json()] == [3.0, 2.0, 1.0]  # raw: the ranks as the model gave them
    assert {call["activation"] for call in model.calls} == {None}  # never asked for a sigmoid


def test_an_operator_activation_wins_over_the_0_1_default(reranker: Reranker) -> None:
    with RunningServer(reranker, ServerConfig(activation="identity")) as running:
        v1 = httpx.post(f"{running.url}/v1/rerank", json={"query": "why do cats purr?", "documents": DOCS})
        tei = httpx.post(f"{running.url}/rerank", json={"query": "why do cats purr?", "texts": DOCS})
        tei_sigmoid = httpx.post(
            f"{running.url}/rerank", json={"query": "why do cats purr?", "texts": DOCS, "raw_scores": False}
        )
    raw = reranker.rerank("why do cats purr?", DOCS, activation="identity")
    assert [r["relevance_score"] for r in v1.json()["results"]] == pytest.approx(
        [r.score for r in raw], rel=1e-6
    )
    assert [r["score"] for r in tei.json()] == pytest.approx([r.score for r in raw], rel=1e-6)
    assert [r["score"] for r in tei_sigmoid.json()] == pytest.approx(expit([r.score for r in raw]), rel=1e-6)
