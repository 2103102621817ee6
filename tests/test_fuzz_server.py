"""Generated HTTP bodies against the live /rerank server: every body gets a 2xx or a 4xx that names
what is wrong, never a 5xx or a dropped connection, and the server keeps answering afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_server import RunningServer

from rrdistill.runtime import Reranker
from rrdistill.runtime.server import ServerConfig

text = st.text(max_size=40)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
documents = st.lists(text | st.fixed_dictionaries({"text": text}) | scalars, max_size=6)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"query": text | scalars, "documents": documents},
        optional={
            "top_n": st.integers(-3, 10) | scalars,
            "return_documents": scalars,
            "reasoning": st.sampled_from([True, False, "auto"]) | scalars,
        },
    ),
    st.fixed_dictionaries(
        {"query": text | scalars, "texts": st.lists(text | scalars, max_size=6)},
        optional={"return_text": scalars},
    ),
    st.dictionaries(text, json_values, max_size=5),
    json_values,
)


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[RunningServer]:
    config = ServerConfig(max_documents=5, max_body_bytes=4096)
    with RunningServer(Reranker.load(tiny_bundle, threads=1), config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_generated_json_bodies_get_2xx_or_a_4xx_that_names_the_problem(
    client: httpx.Client, body: object
) -> None:
    response = client.post("/rerank", content=json.dumps(body))
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.status_code in (413, 422)
        assert response.json()["detail"]  # says what is wrong


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.text(min_size=1, max_size=60),
    docs=st.lists(st.text(max_size=200), min_size=1, max_size=5),
    top_n=st.none() | st.integers(1, 8),
)
def test_valid_bodies_rank_every_document_once(
    client: httpx.Client, query: str, docs: list[str], top_n: int | None
) -> None:
    body = {"query": query, "documents": docs, "top_n": top_n, "return_documents": True}
    response = client.post("/rerank", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    indexes = [r["index"] for r in results]
    assert len(set(indexes)) == len(indexes) == min(len(docs), top_n or len(docs))
    assert all(r["document"]["text"] == docs[r["index"]] for r in results)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_raw_bytes_are_refused_cleanly(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/rerank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text


def test_the_server_still_answers_after_the_fuzzing(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": "cats", "documents": ["Cats purr.", "Dogs bark."]})
    assert response.status_code == 200 and len(response.json()["results"]) == 2
