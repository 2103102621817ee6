"""Generation backends: the in-process transformers backend (batched, left-padded), the
OpenAI-compatible HTTP backend (an adapter over :mod:`rrdistill.chat`, tested in depth in
test_chat.py) against real servers on loopback — a small scripted HTTP server that fails on
purpose (retries, failure accounting, concurrency bound) and `transformers serve` running the
tiny model."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rrdistill import chat as core_chat
from rrdistill.distill.backends import (
    GenerationBackend,
    OpenAIBackend,
    RetryPolicy,
    SamplingParams,
    TransformersBackend,
    chat_completions_url,
    is_url,
    open_backend,
)
from rrdistill.distill.window_ranker import GenerativeRanker
from rrdistill.io import read_rankgpt
from rrdistill.window import WindowConfig, sliding_window

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You rank passages."}, {"role": "user", "content": text}]


# ----------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible server: real sockets, real HTTP, failures on purpose
# ----------------------------------------------------------------------------------------------


class ScriptedServer:
    """Answers /v1/chat/completions according to the user message (e.g. 'fail:2:429 then ok')."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.paths.append(self.path)
                    server.calls[prompt] += 1
                    attempt = server.calls[prompt]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(0.05)
                    status, payload, headers = server.respond(prompt, attempt, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def completion(text: str, **message: str) -> dict:
        return {
            "choices": [
                {"message": {"role": "assistant", "content": text, **message}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
        }

    def respond(self, prompt: str, attempt: int, body: dict) -> tuple[int, object, dict[str, str]]:
        json_type = {"Content-Type": "application/json"}
        if prompt.startswith("flaky"):  # 429, 429, 500, then success
            if attempt <= 2:
                return 429, {"error": "slow down"}, {**json_type, "Retry-After": "0"}
            if attempt == 3:
                return 500, {"error": "boom"}, json_type
            return 200, self.completion(f"ok after {attempt} max_tokens={body['max_tokens']}"), json_type
        if prompt == "rate limited until a date" and attempt == 1:
            when = email.utils.formatdate(time.time() + 6, usegmt=True)
            return 429, {"error": "slow down"}, {**json_type, "Retry-After": when}
        if prompt == "down":
            return 503, "unavailable", {"Content-Type": "text/plain"}
        if prompt == "bad request":
            return 400, {"error": "context length exceeded"}, json_type
        if prompt == "reasoning parser":
            return 200, self.completion("<answer>[2] > [1]</answer>", reasoning_content="because"), json_type
        if prompt == "stream":
            chunks = [
                {"choices": [{"delta": {"content": c}}]} for c in ("<think>x</think>", "<answer>[1]</answer>")
            ]
            chunks.append(
                {"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 7}}
            )
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return 200, text, {"Content-Type": "text/event-stream"}
        return 200, self.completion(f"echo {prompt}"), json_type

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def test_retries_429_and_5xx_with_backoff_then_succeeds(scripted: ScriptedServer) -> None:
    backend = OpenAIBackend(scripted.url, "m", retry=FAST_RETRY)
    (result,) = backend.generate([chat("flaky one")], SamplingParams(max_new_tokens=5))
    assert result.ok, result.error
    assert result.text == "ok after 4 max_tokens=5"
    assert result.attempts == 4
    assert result.completion_tokens == 4
    assert scripted.calls["flaky one"] == 4


def test_a_request_that_keeps_failing_is_returned_failed_not_dropped(scripted: ScriptedServer) -> None:
    backend = OpenAIBackend(scripted.url, "m", retry=FAST_RETRY)
    prompts = [chat("down"), chat("fine"), chat("bad request"), chat("flaky two")]
    results = backend.generate(prompts, SamplingParams(max_new_tokens=5))
    assert len(results) == len(prompts)
    down, fine, bad, flaky = results
    assert not down.ok and down.attempts == 4 and "HTTP 503" in (down.error or "")
    assert scripted.calls["down"] == 4
    assert fine.ok and fine.text == "echo fine"
    assert not bad.ok and bad.attempts == 1 and "HTTP 400" in (bad.error or "")  # not retryable
    assert scripted.calls["bad request"] == 1
    assert flaky.ok


def test_connection_errors_are_retried_and_reported() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}", "m", retry=FAST_RETRY, timeout=2)
    (result,) = backend.generate([chat("x")], SamplingParams(max_new_tokens=5))
    assert not result.ok
    assert result.attempts == 4
    assert "connection error" in (result.error or "")


def test_concurrency_is_bounded(scripted: ScriptedServer) -> None:
    backend = OpenAIBackend(scripted.url, "m", concurrency=3)
    results = backend.generate([chat(f"q{i}") for i in range(12)], SamplingParams(max_new_tokens=5))
    assert [r.text for r in results] == [f"echo q{i}" for i in range(12)]  # aligned with the input
    assert 1 < scripted.max_in_flight <= 3


def test_reasoning_content_and_event_streams_are_read(scripted: ScriptedServer) -> None:
    backend = OpenAIBackend(scripted.url + "/v1", "m")
    split, streamed = backend.generate([chat("reasoning parser"), chat("stream")], SamplingParams())
    assert split.text == "<think>because</think><answer>[2] > [1]</answer>"
    assert streamed.text == "<think>x</think><answer>[1]</answer>"
    assert streamed.completion_tokens == 7
    assert scripted.paths == ["/v1/chat/completions"] * 2  # the /v1 base is not doubled


def test_the_backend_is_the_core_client(scripted: ScriptedServer) -> None:
    """One client for distill and runtime: the backend adapts rrdistill.chat, it has no HTTP of its own."""
    backend = OpenAIBackend(scripted.url, "m", api_key="k", concurrency=2)
    assert isinstance(backend.client, core_chat.ChatClient)
    assert (backend.client.concurrency, backend.client.api_key, backend.url) == (
        2,
        "k",
        scripted.url + "/v1/chat/completions",
    )
    assert is_url is core_chat.is_url and SamplingParams is core_chat.SamplingParams
    waits: list[float] = []
    backend.client.sleep = waits.append
    (result,) = backend.generate([chat("rate limited until a date")], SamplingParams())
    assert result.ok and result.attempts == 2
    assert 4 <= waits[0] <= 6  # Retry-After as an HTTP-date is obeyed too


def test_agenerate_inside_a_running_event_loop(scripted: ScriptedServer) -> None:
    backend = OpenAIBackend(scripted.url, "m")

    async def main() -> list[str | None]:
        direct = await backend.agenerate([chat("a")], SamplingParams())
        nested = backend.generate([chat("b")], SamplingParams())  # sync call from inside a loop
        return [direct[0].text, nested[0].text]

    assert asyncio.run(main()) == ["echo a", "echo b"]


def test_retry_policy_and_urls() -> None:
    policy = RetryPolicy(backoff_initial=1, backoff_max=8, jitter=0.5)
    for attempt, full in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        for _ in range(20):
            assert full / 2 <= policy.delay(attempt) <= full
    assert policy.delay(1, retry_after=5) >= 5
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    with pytest.raises(ValueError, match="--model"):
        open_backend("http://h:8000")
    with pytest.raises(FileNotFoundError):
        open_backend("no/such/dir")


# ----------------------------------------------------------------------------------------------
# In-process transformers backend
# ----------------------------------------------------------------------------------------------


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir: Path) -> None:
    batched = TransformersBackend(tiny_model_dir, batch_size=4)
    single = TransformersBackend(batched.model, batched.tokenizer, batch_size=1)
    assert isinstance(batched, GenerationBackend)
    prompts = [chat("short"), chat("a much longer prompt " * 12), chat("medium length prompt " * 4)]
    params = SamplingParams(max_new_tokens=12)
    together = batched.generate(prompts, params)
    alone = single.generate(prompts, params)
    assert [r.text for r in together] == [r.text for r in alone]
    for result in together:
        assert result.ok and result.completion_tokens is not None and 1 <= result.completion_tokens <= 12
        assert result.finish_reason in ("stop", "length")
    sampled = batched.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=3))
    again = batched.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=3))
    assert [r.text for r in sampled] == [r.text for r in again]  # seeded sampling is reproducible


# ----------------------------------------------------------------------------------------------
# A real OpenAI-compatible server: `transformers serve` with the tiny model
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def transformers_server(tiny_model_dir: Path) -> Iterator[str]:
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [
            str(cli),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"transformers serve exited: {process.stderr.read()[-2000:] if process.stderr else ''}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not come up in 120 s")
            time.sleep(0.5)
        # the server loads a model on first use; concurrent first requests would race to load it
        (warm,) = OpenAIBackend(url, str(tiny_model_dir)).generate(
            [chat("warm up")], SamplingParams(max_new_tokens=1)
        )
        assert warm.ok, warm.error
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_transformers_serve_matches_the_in_process_model(
    transformers_server: str, tiny_model_dir: Path
) -> None:
    server = OpenAIBackend(transformers_server, str(tiny_model_dir), concurrency=2)
    local = TransformersBackend(tiny_model_dir, batch_size=1)
    prompts = [chat("rank these: [1] alpha [2] beta"), chat("another query entirely")]
    params = SamplingParams(max_new_tokens=16)
    remote = server.generate(prompts, params)
    assert all(r.ok for r in remote), [r.error for r in remote]
    assert [r.text for r in remote] == [r.text for r in local.generate(prompts, params)]


def test_sliding_window_through_transformers_serve(transformers_server: str, tiny_model_dir: Path) -> None:
    requests = read_rankgpt(Path(__file__).parent.parent / "data" / "noveleval" / "data.json")[:2]
    server = OpenAIBackend(transformers_server, str(tiny_model_dir), concurrency=4)
    ranker = GenerativeRanker(server, SamplingParams(max_new_tokens=24), max_passage_tokens=8)
    results = sliding_window(requests, ranker, WindowConfig(window_size=10, step=5, top_k=20))
    assert ranker.stats.windows == 2 * 3  # windows (10,20), (5,15), (0,10) per query
    assert ranker.stats.failed == 0
    for request, ranked in zip(requests, results, strict=True):
        assert sorted(ranked.request.docids) == sorted(request.docids)
        assert all(w.text is not None for w in ranked.windows)
    # an untrained model's answers are repaired, and every repair is counted
    assert ranker.stats.repaired == sum(w.repairs.any for r in results for w in r.windows)


def test_rerank_cli_with_a_server_teacher(
    transformers_server: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.io import read_requests, write_requests

    requests = tmp_path / "requests.jsonl"
    write_requests(
        requests, read_rankgpt(Path(__file__).parent.parent / "data" / "noveleval" / "data.json")[:1]
    )
    output, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    args = ["rerank", str(requests), "--teacher", transformers_server, "--model", str(tiny_model_dir)]
    args += ["--tokenizer", str(tiny_model_dir), "--max-passage-tokens", "8", "--max-new-tokens", "12"]
    args += ["-o", str(output), "--json", str(report)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(report.read_text())
    assert stats["windows"] == 1 and stats["failed"] == 0 and stats["model"] == str(tiny_model_dir)
    # the server reports no token usage; the tokenizer counts the generated text instead
    assert stats["windows_with_token_counts"] == 1
    (result_request,) = read_requests(output)
    window = result_request.extra["teacher"]["windows"][0]
    assert "text" in window and (window["start"], window["end"]) == (0, 20)
