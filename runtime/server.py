"""An HTTP server for any bundle, in the rerank API shapes of Cohere (v1, v2), Jina and TEI.

Routes (request and response shapes in :mod:`~rrdistill.runtime.server_shapes`):

- ``POST /v1/rerank``, ``POST /v2/rerank``: Cohere's Rerank API v1 / v2;
- ``POST /jina/v1/rerank``: Jina's rerank API (its own route: ``return_documents`` defaults to
  true there, and its answer has ``model`` / ``usage`` where Cohere's has ``id`` / ``meta``);
- ``POST /rerank``: Cohere-like with ``documents``, TEI's shape with ``texts`` (``raw_scores``,
  ``truncate``, ``truncation_direction``, ``return_text``);
- ``GET /health`` (never behind the API key: load balancers probe it) and ``GET /metrics``
  (Prometheus, :mod:`~rrdistill.runtime.server_metrics`; behind the key when there is one, since
  it tells traffic — Prometheus sends it with ``authorization: {credentials: …}``).

Any bundle serves: a cross-encoder, a bi-encoder, a listwise LM or a cascade (the :class:`Reranker` interface).
``reasoning`` (``true`` / ``false`` / ``"auto"``, default: the reranker's own) picks the listwise
mode; a model that cannot reason answers 422. The explanation has room in Cohere's ``meta`` only.

Scores. Cohere and Jina promise ``relevance_score`` in [0, 1], and TEI's ``raw_scores: false`` (its
default) a sigmoid: a cross-encoder is asked for ``activation="sigmoid"``; a model whose scores are
ranks (listwise, a cascade; they have no sigmoid) answers ``(n − rank) / n``, its order in (0, 1];
a bi-encoder's cosine ``c`` answers ``(1 + c) / 2`` (its dot products without normalisation: ranks).
``ServerConfig.activation``, when set, is the operator's choice and wins over those defaults (not
over an explicit ``raw_scores``); ``/rerank`` with ``documents`` always uses it (None: the model's).

Requests that arrive together are merged into one model call by a micro-batcher — only requests
with the same reasoning mode and score activation share a call, and each request keeps its own
query and documents — and the model runs in a worker thread, so the event loop keeps accepting
requests while a batch is scored. Bodies over the size limit get 413, invalid ones 422 naming the
field; a request the model has not answered within ``request_timeout_s`` gets 504 (its work, if
already started, finishes unread); with ``api_key`` set, requests without ``Authorization: Bearer
<key>`` get 401. Shutdown finishes the requests in flight. Needs the ``[serve]`` extra.
"""

# No `from __future__ import annotations`: FastAPI must see the real request model classes.

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from rrdistill.extras import require
from rrdistill.runtime.reranker import Mode, RankedList, Reranker, check_activation

ASGIApp = Callable[..., Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    max_documents: int = 1000
    max_batch_pairs: int = 256
    """The micro-batcher stops collecting requests once a batch holds this many pairs."""
    max_wait_ms: float = 2.0
    """How long the batcher waits for more requests before scoring what it has."""
    batch_size: int | None = None
    activation: str | None = None
    """Score activation for every response: None = the model's default, ``identity``, ``sigmoid``."""
    request_timeout_s: float | None = 60.0
    """Seconds a request waits for the model (queue included) before 504; None: no limit."""
    api_key: str | None = dataclasses.field(default=None, repr=False)
    """When set, every route but ``/health`` needs ``Authorization: Bearer <api_key>``."""


async def send_json(
    send: Callable, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a JSON body from ASGI middleware (outside FastAPI)."""
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Callable) -> None:
        await send_json(send, 413, f'{{"detail": "request body exceeds {self.max_bytes} bytes"}}'.encode())


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <key>``; `open_paths` need no key.

    The key is compared with :func:`hmac.compare_digest` (constant time), so response timing does
    not tell how much of a guess was right.
    """

    def __init__(self, app: ASGIApp, key: str, open_paths: frozenset[str] = frozenset({"/health"})) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, token = dict(scope.get("headers", [])).get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            await self.app(scope, receive, send)
            return
        body = b'{"detail": "missing or wrong API key: send the header Authorization: Bearer <key>"}'
        await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])


@dataclasses.dataclass(eq=False)
class Job:
    """A queued request and the future its caller awaits."""

    query: str
    documents: list[Any]
    reasoning: Mode | None
    """None: the reranker's default."""
    activation: str | None
    """None: the model's default."""
    future: "asyncio.Future[RankedList]"

    @property
    def key(self) -> tuple[object, object]:
        """Jobs share a model call only with jobs of the same key (one mode, one activation)."""
        return (self.reasoning, self.activation)


class MicroBatcher:
    """Collects concurrent rerank calls and scores them with one ``rerank_many`` in a thread.

    One call never mixes reasoning modes or activations: the batch is the first queued request
    plus those that came with the same key; the others wait, in order, for the next batch. Every
    request is its own (query, documents) entry of the call, so queries are never mixed either.
    A request whose caller gave up (timeout) before its batch formed is dropped unscored.
    """

    def __init__(self, reranker: Reranker, config: ServerConfig) -> None:
        self.reranker, self.config = reranker, config
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: list[Job] = []
        """Requests taken off the queue for a batch of another key: first in line next time."""
        self.batches = 0
        self.requests = 0
        self.pending = 0
        """Requests accepted and not yet answered."""
        self.on_batch: Callable[[int], None] | None = None
        """Called with the number of pairs of every model call (the metrics' batch-size histogram)."""
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Score everything already queued, then stop."""
        await self.queue.join()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def rerank(
        self,
        query: str,
        documents: list[Any],
        reasoning: Mode | None = None,
        activation: str | None = None,
        timeout: float | None = None,
    ) -> RankedList:
        """The ranked documents; TimeoutError after `timeout` seconds (the model may finish unread)."""
        future: asyncio.Future[RankedList] = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            await self.queue.put(Job(query, documents, reasoning, activation, future))
            return await asyncio.wait_for(future, timeout)  # a timeout cancels the future
        finally:
            self.pending -= 1

    async def _next(self, timeout: float | None) -> Job:
        if self._held:
            return self._held.pop(0)
        if timeout is None:
            return await self.queue.get()
        if timeout <= 0:
            return self.queue.get_nowait()
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def _run(self) -> None:
        while True:
            first = await self._next(None)
            if first.future.done():  # its caller timed out while it waited
                self.queue.task_done()
                continue
            batch, held, pairs = [first], [], len(first.documents)
            deadline = time.monotonic() + self.config.max_wait_ms / 1000
            while pairs < self.config.max_batch_pairs:
                try:
                    item = await self._next(deadline - time.monotonic())
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if item.future.done():
                    self.queue.task_done()
                elif item.key != first.key:
                    held.append(item)
                else:
                    batch.append(item)
                    pairs += len(item.documents)
            self._held = held + self._held
            options: dict[str, Any] = {} if first.reasoning is None else {"reasoning": first.reasoning}
            if first.activation is not None:
                options["activation"] = first.activation
            if self.on_batch is not None:
                self.on_batch(pairs)
            try:
                results = await asyncio.to_thread(
                    functools.partial(
                        self.reranker.rerank_many,
                        [(job.query, job.documents) for job in batch],
                        None,
                        self.config.batch_size,
                        **options,
                    )
                )
            except Exception as exc:  # the model failed: every caller of this batch gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self.batches += 1
                self.requests += len(batch)
                for _ in batch:
                    self.queue.task_done()


class ServerApp:
    """What :func:`create_app` returns: the FastAPI app (``.app``) behind its ASGI middleware."""

    def __init__(self, app: Any, outer: ASGIApp) -> None:
        self.app, self._outer = app, outer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self._outer(scope, receive, send)


def create_app(reranker: Reranker, config: ServerConfig | None = None) -> ServerApp:
    """The ASGI application serving `reranker` (any :class:`Reranker`)."""
    config = config or ServerConfig()
    check_activation(config.activation)
    if config.activation is not None:  # refused now, not on every request (listwise scores are ranks)
        reranker.rerank("warm up", [], activation=config.activation)
    if config.request_timeout_s is not None and config.request_timeout_s <= 0:
        raise ValueError(f"request_timeout_s must be positive or None, not {config.request_timeout_s}")
    fastapi = require("fastapi", "serve", "the rerank server")
    require("pydantic", "serve", "the rerank server")
    require("prometheus_client", "serve", "the rerank server's /metrics")
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse, Response

    from rrdistill.runtime import server_shapes as shapes
    from rrdistill.runtime.server_metrics import MetricsMiddleware, ServerMetrics

    batcher = MicroBatcher(reranker, config)
    metrics = ServerMetrics(reranker, lambda: batcher.pending)
    batcher.on_batch = metrics.batch_pairs.observe
    pair_tokens = shapes.PairTokens.of(reranker)
    manifest = reranker.manifest

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = fastapi.FastAPI(title="rrdistill reranker", version="1", lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    @app.exception_handler(fastapi.exceptions.RequestValidationError)
    async def invalid_body(_: Any, exc: Any) -> JSONResponse:
        # FastAPI's default handler echoes the offending input, and a body such as `NaN` (which
        # Python's JSON parser accepts) then cannot be encoded back: a 500. Say where and what only.
        detail = [
            {
                "loc": list(error.get("loc", ())),
                "msg": str(error.get("msg", "")),
                "type": error.get("type", ""),
            }
            for error in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    def admit(items: Sequence[Any], reasoning: Any) -> None:
        if reasoning not in (None, False) and not reranker.supports_reasoning:
            raise HTTPException(
                422,
                f"reasoning={reasoning!r}: this server's model ({reranker.name}) is a {reranker.kind} "
                "and cannot reason; send reasoning false or leave it out",
            )
        if len(items) > config.max_documents:
            raise HTTPException(
                413, f"{len(items)} documents; the limit is {config.max_documents} per request"
            )

    unit_default = True if config.activation is None else None  # [0, 1] unless the operator chose
    embedding = getattr(reranker.manifest, "embedding", None)
    cosines = reranker.kind == "bi-encoder" and embedding is not None and embedding.normalize

    async def rank(query: str, items: Sequence[Any], reasoning: Any, unit: bool | None) -> RankedList:
        """The ranked list; `unit` True: scores in [0, 1], False: raw, None: ``config.activation``."""
        admit(items, reasoning)
        activation, by_rank, by_cosine = config.activation, False, False
        if unit is not None and reranker.kind == "cross-encoder":
            activation = "sigmoid" if unit else "identity"
        elif unit is not None and cosines:  # a cosine in [-1, 1] maps onto [0, 1] linearly
            activation, by_cosine = None, unit
        elif unit is not None:  # scores are ranks: no sigmoid, positions mapped into (0, 1]
            activation, by_rank = None, unit
        try:
            ranked = await batcher.rerank(
                query, shapes.passages(items), reasoning, activation, config.request_timeout_s
            )
        except TimeoutError:
            raise HTTPException(
                504,
                f"the model did not answer within the server's request timeout of "
                f"{config.request_timeout_s:g} s; retry later or send fewer documents",
            ) from None
        if by_cosine:
            return shapes.cosine_scores(ranked)
        return shapes.rank_scores(ranked, len(items)) if by_rank else ranked

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "bundle": reranker.name,
            "kind": reranker.kind,
            "supports_reasoning": reranker.supports_reasoning,
            "precision": manifest.precision if manifest is not None else None,
            "max_length": manifest.inputs.max_length if manifest is not None else None,
            "providers": reranker.providers,
            "activation": config.activation,
            "request_timeout_s": config.request_timeout_s,
            "api_key_required": config.api_key is not None,
            "stats": {
                **reranker.stats.to_dict(),
                "http_requests": batcher.requests,
                "model_batches": batcher.batches,
            },
        }

    @app.get("/metrics")
    async def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/rerank", response_model=None)
    async def rerank(body: shapes.RerankRequest) -> Any:
        if (body.documents is None) == (body.texts is None):
            raise HTTPException(422, "give exactly one of 'documents' (Cohere) or 'texts' (TEI)")
        if body.documents is not None:
            ranked = await rank(body.query, body.documents, body.reasoning, None)
            return shapes.legacy_cohere_response(
                ranked.head(body.top_n), body.documents, body.return_documents, body.reasoning, reranker
            )
        texts = body.texts
        assert texts is not None
        if body.truncation_direction.lower() == "left":
            raise HTTPException(
                422, "truncation_direction Left is not supported: passages are cut at their end (Right)"
            )
        if body.truncate is False:
            admit(texts, body.reasoning)  # the limits before the tokenizer's work
            if pair_tokens is None:
                raise HTTPException(
                    422, f"truncate false needs a cross-encoder; this server's model is a {reranker.kind}"
                )
            _, why = await asyncio.to_thread(pair_tokens.measure, body.query, texts)
            if why is not None:
                raise HTTPException(422, f"Input validation error: {why}; send truncate true to truncate")
        unit = unit_default if body.raw_scores is None else not body.raw_scores
        ranked = await rank(body.query, texts, body.reasoning, unit)
        return shapes.tei_response(ranked.head(body.top_n), texts, body.return_text)

    @app.post("/v1/rerank")
    async def cohere_v1(body: shapes.CohereV1Request) -> dict[str, Any]:
        ranked = await rank(body.query, body.documents, body.reasoning, unit_default)
        return shapes.cohere_response(
            "1", ranked.head(body.top_n), body.documents, body.return_documents, body.reasoning
        )

    @app.post("/v2/rerank")
    async def cohere_v2(body: shapes.CohereV2Request) -> dict[str, Any]:
        ranked = await rank(body.query, body.documents, body.reasoning, unit_default)
        return shapes.cohere_response(
            "2", ranked.head(body.top_n), body.documents, body.return_documents, body.reasoning
        )

    @app.post("/jina/v1/rerank")
    async def jina(body: shapes.JinaRequest) -> dict[str, Any]:
        ranked = await rank(body.query, body.documents, body.reasoning, unit_default)
        tokens = 0  # counted for cross-encoders (a listwise prompt is not per pair)
        if pair_tokens is not None:
            tokens, _ = await asyncio.to_thread(
                pair_tokens.measure, body.query, shapes.passages(body.documents)
            )
        return shapes.jina_response(
            reranker.name, ranked.head(body.top_n), body.documents, body.return_documents, tokens
        )

    outer: ASGIApp = BodySizeLimit(app, config.max_body_bytes)
    if config.api_key is not None:
        outer = BearerAuth(outer, config.api_key)
    outer = MetricsMiddleware(outer, metrics, {route.path for route in app.routes})
    return ServerApp(app, outer)


def serve(
    reranker: Reranker, host: str = "127.0.0.1", port: int = 8080, config: ServerConfig | None = None
) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    uvicorn = require("uvicorn", "serve", "the rerank server")
    uvicorn.run(
        create_app(reranker, config), host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )
