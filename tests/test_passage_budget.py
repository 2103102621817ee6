"""Passage budgets chosen with the server's context: a URL teacher's prompts fit what it serves."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rrdistill.chat import server_context_length
from rrdistill.distill.backends import SamplingParams
from rrdistill.distill.teacher.rerank import passage_cut, rerank_with_teacher
from rrdistill.io import write_requests
from rrdistill.prompts import PROMPT_OVERHEAD_TOKENS, TOKENS_PER_WORD, passage_budget
from rrdistill.types import Candidate, Passage, Query, Request
from rrdistill.window import WindowConfig

PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


class Server:
    """GET answers `listing` at its path (404 elsewhere); POST ranks the window back to front."""

    def __init__(self, listing: dict[str, dict]) -> None:
        self.prompts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path in listing:
                    self._send(200, listing[self.path])
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                outer.prompts.append(prompt)
                n = len(PASSAGE.findall(prompt))
                answer = "<answer>" + " > ".join(f"[{i}]" for i in range(n, 0, -1)) + "</answer>"
                self._send(200, {"choices": [{"message": {"content": answer}, "finish_reason": "stop"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = Server(request.param)
    yield running
    running.close()


LLAMA_CPP = {"/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 2}}
VLLM = {"/v1/models": {"object": "list", "data": [{"id": "teacher", "max_model_len": 4096}]}}


@pytest.mark.parametrize("server", [LLAMA_CPP, VLLM], indirect=True, ids=["llama.cpp", "vllm"])
def test_the_servers_context_is_read_from_llama_cpp_and_vllm(server: Server) -> None:
    assert server_context_length(server.url) == 4096
    assert server_context_length(server.url + "/v1") == 4096


@pytest.mark.parametrize("server", [{}], indirect=True)
def test_a_server_that_does_not_say_leaves_the_default(server: Server) -> None:
    assert server_context_length(server.url) is None
    assert passage_cut(server.url, {}, WindowConfig(10, 5), 256, by_words=True) == (
        512,
        "ReasonRank's default",
    )


def test_the_budget_fills_the_context_and_refuses_what_cannot_fit() -> None:
    words = passage_budget(4096, 10, 256, by_words=True)
    assert words == int((4096 - 256 - PROMPT_OVERHEAD_TOKENS) / 10 / TOKENS_PER_WORD)
    assert passage_budget(4096, 10, 256, by_words=False) == (4096 - 256 - PROMPT_OVERHEAD_TOKENS) // 10
    assert passage_budget(131072, 20, 4096, by_words=False) == 512  # ReasonRank's ceiling
    with pytest.raises(ValueError, match="do not fit a 4096-token context"):
        passage_budget(4096, 20, 4096, by_words=True)


@pytest.mark.parametrize("server", [LLAMA_CPP], indirect=True)
def test_a_url_teachers_prompts_are_cut_to_fit_its_context(server: Server, tmp_path: Path) -> None:
    """The case that failed in practice: whole abstracts in a 4096-token context."""
    long_text = " ".join(f"word{i}" for i in range(400))
    requests = [
        Request(Query(f"q{k}", "a query"), [Candidate(Passage(f"d{k}-{i}", long_text)) for i in range(10)])
        for k in range(2)
    ]
    path = tmp_path / "requests.jsonl"
    write_requests(path, requests)
    summary = rerank_with_teacher(
        path,
        tmp_path / "out.jsonl",
        server.url,
        model="teacher",
        window=WindowConfig(10, 5, top_k=10),
        sampling=SamplingParams(max_new_tokens=256),
        reasoning=False,
    )
    budget = passage_budget(4096, 10, 256, by_words=True)
    assert summary.job.reranked == 2 and summary.passage_cut.startswith(f"{budget} (fits the server's 4096")
    for prompt in server.prompts:
        passages = [text for _, text in PASSAGE.findall(prompt)]
        assert len(passages) == 10 and all(len(p.split()) == budget for p in passages)
        assert len(prompt.split()) * TOKENS_PER_WORD < 4096 - 256  # the whole prompt fits, by the same rule
    # an explicit cut wins over the server's
    assert passage_cut(server.url, {}, WindowConfig(10, 5), 256, by_words=True, given=30) == (30, "as given")
