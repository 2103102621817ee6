"""The one OpenAI-compatible chat client (:mod:`rrdistill.chat`) and the runtime's listwise model
behind a URL (``ListwiseReranker.from_url``), against a real HTTP server on loopback that answers
by script: URL normalisation, retries and Retry-After, JSON and event streams, reasoning_content,
per-request failures in a batch, API keys, the concurrency bound, the passage budget, and the
lean import."""

from __future__ import annotations

import email.utils
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rrdistill.chat import (
    RETRYABLE_STATUS,
    ChatClient,
    RetryPolicy,
    SamplingParams,
    chat_completions_url,
    is_url,
    parse_retry_after,
)
from rrdistill.runtime.reasoning import ListwiseReranker

FAST = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05)
PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


# ----------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible server: real sockets, real HTTP
# ----------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict
    attempt: int
    """How many times this prompt has been seen, this request included."""

    @property
    def prompt(self) -> str:
        return self.body["messages"][-1]["content"]


@dataclass
class Reply:
    status: int = 200
    body: object = None
    """A dict → JSON; a str → sent as is (with the given content type)."""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0


def completion(content: str | None, **message: object) -> dict:
    return {
        "choices": [
            {"message": {"role": "assistant", "content": content, **message}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7},
    }


def event_stream(chunks: list[dict]) -> Reply:
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return Reply(body=text, headers={"Content-Type": "text/event-stream"})


def reversed_answer(prompt: str) -> str:
    """A listwise answer that ranks the window's passages last to first."""
    n = len(PASSAGE.findall(prompt))
    return "<answer>" + " > ".join(f"[{i}]" for i in range(n, 0, -1)) + "</answer>"


class ChatServer:
    """Answers every POST by ``script(seen)``; records path, headers and body of each request."""

    def __init__(self, script: Callable[[Seen], Reply]) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    prompt = body["messages"][-1]["content"]
                    server.attempts[prompt] += 1
                    seen = Seen(self.path, dict(self.headers.items()), body, server.attempts[prompt])
                    server.seen.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.script(seen)
                    if reply.delay:
                        time.sleep(reply.delay)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Seen], Reply]], ChatServer]]:
    servers: list[ChatServer] = []

    def start(script: Callable[[Seen], Reply]) -> ChatServer:
        servers.append(ChatServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You rank passages."}, {"role": "user", "content": text}]


def echo(seen: Seen) -> Reply:
    return Reply(body=completion(f"echo {seen.prompt}"))


class SleepRecorder:
    """Stands in for the backoff sleep: records the waits, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# ----------------------------------------------------------------------------------------------
# URLs
# ----------------------------------------------------------------------------------------------


def test_is_url_is_the_one_test_for_a_server_address() -> None:
    for url in ("http://h:8000", "https://api.example.com/v1", "HTTP://H", " http://h/ "):
        assert is_url(url), url
    for not_url in ("runs/teacher", "http_cache/model", "https:/x", "ftp://h", "", "h:8000", Path("x")):
        assert not is_url(not_url), not_url


def test_chat_completions_url_never_doubles_v1() -> None:
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert chat_completions_url(base) == "http://h:8000/v1/chat/completions"
    full = "https://h/openai/v1/chat/completions"
    assert chat_completions_url(full) == full
    with pytest.raises(ValueError, match="not an http"):
        chat_completions_url("runs/teacher")


def test_a_v1_base_url_hits_v1_chat_completions_once(serve) -> None:
    server = serve(echo)
    (result,) = ChatClient(server.url + "/v1", "m").complete_many([user("hi")])
    assert result.ok and result.text == "echo hi"
    assert server.paths == ["/v1/chat/completions"]


def test_runtime_from_a_v1_base_url(serve) -> None:
    server = serve(lambda seen: Reply(body=completion(reversed_answer(seen.prompt))))
    ranked = ListwiseReranker.from_url(server.url + "/v1/", "m").rerank("q", ["a", "b", "c"])
    assert [r.index for r in ranked] == [2, 1, 0]
    assert server.paths == ["/v1/chat/completions"]  # once, and not /v1/v1/…


# ----------------------------------------------------------------------------------------------
# Retries
# ----------------------------------------------------------------------------------------------


def rate_limited_once(retry_after: str) -> Callable[[Seen], Reply]:
    def script(seen: Seen) -> Reply:
        if seen.attempt == 1:
            return Reply(429, {"error": "slow down"}, {"Retry-After": retry_after})
        return Reply(body=completion(reversed_answer(seen.prompt) or "ok"))

    return script


def test_retry_after_seconds_sets_the_least_wait(serve) -> None:
    server = serve(rate_limited_once("2"))
    sleep = SleepRecorder()
    client = ChatClient(server.url, "m", retry=RetryPolicy(backoff_initial=0.01), sleep=sleep)
    (result,) = client.complete_many([user("x")])
    assert result.ok and result.attempts == 2
    assert len(sleep.waits) == 1 and sleep.waits[0] >= 2


def test_retry_after_http_date(serve) -> None:
    when = email.utils.formatdate(time.time() + 6, usegmt=True)
    server = serve(rate_limited_once(when))
    sleep = SleepRecorder()
    client = ChatClient(server.url, "m", retry=RetryPolicy(backoff_initial=0.01), sleep=sleep)
    (result,) = client.complete_many([user("x")])
    assert result.ok
    assert 4 <= sleep.waits[0] <= 6  # the date has whole seconds
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(" 3 ") == 3.0


def test_retry_after_is_capped(serve) -> None:
    server = serve(rate_limited_once("86400"))
    sleep = SleepRecorder()
    client = ChatClient(server.url, "m", retry=RetryPolicy(retry_after_max=7), sleep=sleep)
    assert client.complete_many([user("x")])[0].ok
    assert sleep.waits == [7]


def test_runtime_honours_retry_after(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(rate_limited_once("2"))
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # whatever the runtime sleeps with
    ranked = ListwiseReranker.from_url(server.url, "m").rerank("q", ["a", "b"])
    assert [r.index for r in ranked] == [1, 0]
    assert len(waits) == 1 and waits[0] >= 2


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(serve, status: int) -> None:
    server = serve(lambda seen: Reply(status, {"error": "later"}) if seen.attempt == 1 else echo(seen))
    (result,) = ChatClient(server.url, "m", retry=FAST).complete_many([user("x")])
    assert result.ok and result.attempts == 2 and server.attempts["x"] == 2
    assert status in RETRYABLE_STATUS


def test_runtime_retries_a_409(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    def script(seen: Seen) -> Reply:
        if seen.attempt == 1:
            return Reply(409, {"error": "conflict"})
        return Reply(body=completion(reversed_answer(seen.prompt)))

    server = serve(script)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    ranked = ListwiseReranker.from_url(server.url, "m").rerank("q", ["a", "b"])
    assert [r.index for r in ranked] == [1, 0]
    assert len(server.seen) == 2


def test_a_400_is_not_retried(serve) -> None:
    server = serve(lambda seen: Reply(400, {"error": "context length exceeded"}))
    (result,) = ChatClient(server.url, "m", retry=FAST).complete_many([user("long")])
    assert not result.ok and result.attempts == 1
    assert "HTTP 400" in (result.error or "") and "context length" in (result.error or "")
    assert len(server.seen) == 1
    for status in (400, 401, 403, 404, 422):
        assert status not in RETRYABLE_STATUS


def test_connection_errors_are_retried_then_reported() -> None:
    server = ChatServer(echo)
    url = server.url
    server.close()  # nobody listens there now
    sleep = SleepRecorder()
    (result,) = ChatClient(url, "m", retry=FAST, sleep=sleep).complete_many([user("x")])
    assert not result.ok and result.attempts == 4 and len(sleep.waits) == 3
    assert "gave up after 4 attempts" in (result.error or "")
    assert "connection error" in (result.error or "")


def test_timeouts_are_retried(serve) -> None:
    server = serve(lambda seen: Reply(body=completion("late"), delay=1.0 if seen.attempt == 1 else 0))
    client = ChatClient(server.url, "m", timeout=0.3, retry=FAST)
    (result,) = client.complete_many([user("x")])
    assert result.ok and result.text == "late" and result.attempts == 2


def test_a_batch_with_one_failing_request_returns_the_others(serve) -> None:
    def script(seen: Seen) -> Reply:
        if seen.prompt == "down":
            return Reply(503, "unavailable", {"Content-Type": "text/plain"})
        if seen.prompt == "bad":
            return Reply(400, {"error": "no"})
        return echo(seen)

    server = serve(script)
    client = ChatClient(server.url, "m", retry=FAST, sleep=SleepRecorder())
    prompts = ["a", "down", "b", "bad", "c"]
    results = client.complete_many([user(p) for p in prompts])
    assert [r.text for r in results] == ["echo a", None, "echo b", None, "echo c"]
    down, bad = results[1], results[3]
    assert down.attempts == 4 and "HTTP 503" in (down.error or "")
    assert bad.attempts == 1 and "HTTP 400" in (bad.error or "")
    assert server.attempts["down"] == 4 and server.attempts["bad"] == 1
    # a request that cannot even be serialised fails alone, too
    odd = [{"role": "user", "content": object()}]
    assert [r.ok for r in client.complete_many([odd, user("d")])] == [False, True]  # type: ignore[list-item]


def test_runtime_keeps_the_other_queries_when_one_window_fails(serve) -> None:
    def script(seen: Seen) -> Reply:
        if "poison" in seen.prompt:
            return Reply(400, {"error": "prompt rejected"})
        return Reply(body=completion(reversed_answer(seen.prompt)))

    server = serve(script)
    reranker = ListwiseReranker.from_url(server.url, "m")
    good, poisoned = reranker.rerank_many([("fine", ["a", "b", "c"]), ("poison", ["a", "b", "c"])])
    assert [r.index for r in good] == [2, 1, 0]
    assert [r.index for r in poisoned] == [0, 1, 2]  # the failed window keeps its input order
    assert sum("poison" in s.prompt for s in server.seen) == 1  # a 400 is not retried
    assert reranker.engine.failed == 1 and "HTTP 400" in reranker.engine.errors[0]
    with pytest.raises(RuntimeError, match="every window failed"):
        reranker.rerank("poison", ["a", "b"])


# ----------------------------------------------------------------------------------------------
# Responses: JSON, event streams, reasoning_content, usage
# ----------------------------------------------------------------------------------------------


def test_reasoning_content_comes_back_as_a_think_block(serve) -> None:
    def script(seen: Seen) -> Reply:
        key = "reasoning" if seen.prompt == "y" else "reasoning_content"  # newer vLLM: `reasoning`
        return Reply(body=completion("<answer>[2] > [1]</answer>", **{key: "because"}))

    server = serve(script)
    (result,) = ChatClient(server.url, "m").complete_many([user("x")])
    assert result.text == "<think>because</think><answer>[2] > [1]</answer>"
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (11, 7, "stop")
    (other,) = ChatClient(server.url, "m").complete_many([user("y")])
    assert other.text == "<think>because</think><answer>[2] > [1]</answer>"


def test_runtime_explains_from_reasoning_content(serve) -> None:
    server = serve(
        lambda seen: Reply(
            body=completion(reversed_answer(seen.prompt), reasoning_content="the later passages are better")
        )
    )
    ranked = ListwiseReranker.from_url(server.url, "m").rerank("q", ["a", "b", "c"], reasoning=True)
    assert [r.index for r in ranked] == [2, 1, 0]
    assert ranked.explanation == "the later passages are better"
    assert ranked.windows[0].generated_tokens == 7


def test_event_streams_are_read(serve) -> None:
    chunks = [
        {"choices": [{"delta": {"reasoning_content": "think "}}]},
        {"choices": [{"delta": {"reasoning_content": "hard"}}]},
        {"choices": [{"delta": {"content": "<answer>[1]"}}]},
        {"choices": [{"delta": {"content": "</answer>"}}]},
        {"choices": [{"delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
    ]
    server = serve(lambda seen: event_stream(chunks))
    (result,) = ChatClient(server.url, "m").complete_many([user("x")])
    assert result.text == "<think>think hard</think><answer>[1]</answer>"
    assert (result.completion_tokens, result.prompt_tokens, result.finish_reason) == (9, 3, "length")


def test_runtime_reads_event_streams(serve) -> None:
    def script(seen: Seen) -> Reply:
        answer = reversed_answer(seen.prompt)
        return event_stream(
            [{"choices": [{"delta": {"reasoning_content": "streamed reasons"}}]}]
            + [{"choices": [{"delta": {"content": answer[i : i + 5]}}]} for i in range(0, len(answer), 5)]
        )

    server = serve(script)
    ranked = ListwiseReranker.from_url(server.url, "m").rerank("q", ["a", "b"], reasoning=True)
    assert [r.index for r in ranked] == [1, 0]
    assert ranked.explanation == "streamed reasons"


def test_an_error_inside_a_200_is_retried(serve) -> None:
    server = serve(lambda seen: Reply(body={"error": "overloaded"}) if seen.attempt == 1 else echo(seen))
    (result,) = ChatClient(server.url, "m", retry=FAST).complete_many([user("x")])
    assert result.ok and result.attempts == 2


# ----------------------------------------------------------------------------------------------
# Request: payload, API key, concurrency
# ----------------------------------------------------------------------------------------------


def test_payload_and_api_key(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(echo)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    client = ChatClient(server.url, "served", extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    client.complete_many([user("a")], SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3))
    explicit = ChatClient(server.url, "served", api_key="explicit")
    explicit.complete_many([user("b")])
    monkeypatch.delenv("OPENAI_API_KEY")
    ChatClient(server.url, "served").complete_many([user("c")])
    first, second, third = server.seen
    assert first.body == {
        "model": "served",
        "messages": user("a"),
        "max_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "stream": False,
        "seed": 3,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    assert first.headers["Authorization"] == "Bearer from-env"
    assert second.headers["Authorization"] == "Bearer explicit"
    assert "Authorization" not in third.headers
    assert "explicit" not in repr(explicit)  # the key stays out of logs


def test_concurrency_is_bounded_and_results_aligned(serve) -> None:
    server = serve(lambda seen: Reply(body=completion(f"echo {seen.prompt}"), delay=0.05))
    client = ChatClient(server.url, "m", concurrency=3)
    results = client.complete_many([user(f"q{i}") for i in range(12)])
    assert [r.text for r in results] == [f"echo q{i}" for i in range(12)]
    assert 1 < server.max_in_flight <= 3
    # the bound holds across callers sharing the client, too
    server.max_in_flight = 0
    threads = [
        threading.Thread(target=client.complete_many, args=([user(f"t{j}{i}") for i in range(4)],))
        for j in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.max_in_flight <= 3


# ----------------------------------------------------------------------------------------------
# The runtime's passage budget
# ----------------------------------------------------------------------------------------------


def passages_seen(server: ChatServer) -> list[str]:
    return [text for _, text in PASSAGE.findall(server.seen[-1].prompt)]


def test_runtime_passage_budget_by_words_by_default(serve) -> None:
    server = serve(lambda seen: Reply(body=completion(reversed_answer(seen.prompt))))
    long = " ".join(f"w{i}" for i in range(400))
    ListwiseReranker.from_url(server.url, "m").rerank("q", [long, "short"])
    assert passages_seen(server) == [long, "short"]  # 400 words fit the default budget of 512
    ListwiseReranker.from_url(server.url, "m", max_passage_tokens=5).rerank("q", [long, "short"])
    assert passages_seen(server) == ["w0 w1 w2 w3 w4", "short"]


def test_runtime_passage_budget_by_the_served_models_tokens(serve, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokenizer = Tokenizer(models.BPE({c: i for i, c in enumerate(letters)}, []))  # one token a letter
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    server = serve(lambda seen: Reply(body=completion(reversed_answer(seen.prompt))))
    for given in (tokenizer, tmp_path / "tokenizer.json"):
        reranker = ListwiseReranker.from_url(server.url, "m", max_passage_tokens=5, tokenizer=given)
        reranker.rerank("q", ["abcdefgh ijk", "xy"])
        assert passages_seen(server) == ["abcde", "xy"]
        assert reranker.engine.truncator.truncated == 1


def test_from_url_refuses_a_path() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ListwiseReranker.from_url("runs/teacher", "m")


# ----------------------------------------------------------------------------------------------
# The lean import
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["rrdistill.chat", "rrdistill.runtime", "rrdistill.runtime.reasoning"])
def test_the_client_imports_nothing_heavy(module: str) -> None:
    heavy = ["torch", "transformers", "httpx", "rrdistill.distill", "rrdistill.export"]
    code = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
