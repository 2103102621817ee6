"""An HTTP server with a ``POST /rerank`` endpoint shaped like the TEI and Cohere rerank APIs.

- Cohere shape: ``{"query", "documents": [str | {"text": …}], "top_n", "return_documents",
  "reasoning"?}`` → ``{"id", "results": [{"index", "relevance_score", "document"?}], "meta"}``;
- TEI shape: ``{"query", "texts": [str], "return_text", "reasoning"?}`` → ``[{"index", "score", "text"?}]``.

Any bundle serves: a cross-encoder, a listwise LM or a cascade (the :class:`Reranker` interface).
``reasoning`` (``true`` / ``false`` / ``"auto"``, default: the reranker's own default) picks the
listwise mode; a model that cannot reason answers 422. The explanation comes back in the Cohere
shape only, as ``meta.explanation`` (with ``meta.escalated`` for ``"auto"``): TEI's response is a
bare list with no room for it. ``ServerConfig.activation`` maps scores (``"sigmoid"``: Cohere's
[0, 1] ``relevance_score``; see :class:`~rrdistill.runtime.reranker.CrossEncoderReranker`).

Requests that arrive together are merged into one model call by a micro-batcher — only requests
with the same ``reasoning`` mode share a call — and the model runs in a worker thread, so the
event loop keeps accepting requests while a batch is scored. Bodies over the size limit get 413,
invalid ones 422 naming the field; shutdown finishes the requests in flight. Needs the ``[serve]``
extra (FastAPI + uvicorn).
"""

# No `from __future__ import annotations`: FastAPI must see the real request model classes.

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from rrdistill.extras import require
from rrdistill.runtime.reranker import Mode, RankedList, Reranker, check_activation


@dataclass(frozen=True)
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


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, declared (Content-Length) or streamed."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
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
        body = f'{{"detail": "request body exceeds {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


Job = tuple[str, list[Any], "Mode | None", "asyncio.Future[RankedList]"]
"""A queued request: query, documents, reasoning mode (None: the reranker's default), its answer."""


class MicroBatcher:
    """Collects concurrent rerank calls and scores them with one ``rerank_many`` in a thread.

    One call never mixes reasoning modes: the batch is the first queued request plus those that
    came with the same mode; the others wait, in order, for the next batch.
    """

    def __init__(self, reranker: Reranker, config: ServerConfig) -> None:
        self.reranker, self.config = reranker, config
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: list[Job] = []
        """Requests taken off the queue for a batch of another mode: first in line next time."""
        self.batches = 0
        self.requests = 0
        self.pending = 0
        """Requests accepted and not yet answered."""
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

    async def rerank(self, query: str, documents: list[Any], reasoning: Mode | None = None) -> RankedList:
        future: asyncio.Future[RankedList] = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            await self.queue.put((query, documents, reasoning, future))
            return await future
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
            mode = first[2]
            batch = [first]
            pairs = len(first[1])
            held: list[Job] = []
            deadline = time.monotonic() + self.config.max_wait_ms / 1000
            while pairs < self.config.max_batch_pairs:
                try:
                    item = await self._next(deadline - time.monotonic())
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if item[2] != mode:
                    held.append(item)
                    continue
                batch.append(item)
                pairs += len(item[1])
            self._held = held + self._held
            options: dict[str, Any] = {} if mode is None else {"reasoning": mode}
            if self.config.activation is not None:
                options["activation"] = self.config.activation
            try:
                results = await asyncio.to_thread(
                    functools.partial(
                        self.reranker.rerank_many,
                        [(q, docs) for q, docs, _, _ in batch],
                        None,
                        self.config.batch_size,
                        **options,
                    )
                )
            except Exception as exc:  # the model failed: every caller of this batch gets the error
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (*_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            finally:
                self.batches += 1
                self.requests += len(batch)
                for _ in batch:
                    self.queue.task_done()


def create_app(reranker: Reranker, config: ServerConfig | None = None) -> Any:
    """The ASGI application (FastAPI) serving `reranker` (any :class:`Reranker`)."""
    config = config or ServerConfig()
    check_activation(config.activation)
    if config.activation is not None:  # refused now, not on every request (listwise scores are ranks)
        reranker.rerank("warm up", [], activation=config.activation)
    fastapi = require("fastapi", "serve", "the rerank server")
    pydantic = require("pydantic", "serve", "the rerank server")
    from fastapi.responses import JSONResponse

    class Document(pydantic.BaseModel):
        text: str
        title: str | None = None
        id: str | None = None

    class RerankRequest(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="ignore")
        query: str = pydantic.Field(min_length=1)
        documents: list[str | Document] | None = None
        texts: list[str] | None = None
        top_n: int | None = pydantic.Field(default=None, ge=1)
        return_documents: bool = False
        return_text: bool = False
        model: str | None = None
        reasoning: pydantic.StrictBool | Literal["auto"] | None = None

    batcher = MicroBatcher(reranker, config)
    manifest = reranker.manifest

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = fastapi.FastAPI(title="rrdistill reranker", version="1", lifespan=lifespan)
    app.state.batcher = batcher

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
            "stats": {
                **reranker.stats.to_dict(),
                "http_requests": batcher.requests,
                "model_batches": batcher.batches,
            },
        }

    @app.post("/rerank", response_model=None)
    async def rerank(body: RerankRequest) -> Any:
        if (body.documents is None) == (body.texts is None):
            return JSONResponse(
                {"detail": "give exactly one of 'documents' (Cohere) or 'texts' (TEI)"}, status_code=422
            )
        if body.reasoning not in (None, False) and not reranker.supports_reasoning:
            return JSONResponse(
                {
                    "detail": f"reasoning={body.reasoning!r}: this server's model ({reranker.name}) is a "
                    f"{reranker.kind} and cannot reason; send reasoning false or leave it out"
                },
                status_code=422,
            )
        items = body.documents if body.documents is not None else body.texts
        assert items is not None
        if len(items) > config.max_documents:
            return JSONResponse(
                {"detail": f"{len(items)} documents; the limit is {config.max_documents} per request"},
                status_code=413,
            )
        passages = [d if isinstance(d, str) else d.model_dump(exclude_none=True) for d in items]
        ranked = (await batcher.rerank(body.query, passages, body.reasoning)).head(body.top_n)
        if body.texts is not None:  # TEI: a bare list, so no explanation (documented above)
            return [
                {
                    "index": r.index,
                    "score": r.score,
                    **({"text": body.texts[r.index]} if body.return_text else {}),
                }
                for r in ranked
            ]
        documents = body.documents
        assert documents is not None
        meta: dict[str, Any] = {
            "bundle": reranker.name,
            "kind": reranker.kind,
            "precision": manifest.precision if manifest is not None else None,
        }
        if body.reasoning not in (None, False) or ranked.explanation is not None:
            meta["explanation"] = ranked.explanation
        if ranked.confidence is not None:  # a cascade decided whether to reason
            meta["escalated"], meta["confidence"] = ranked.escalated, ranked.confidence
        return {
            "id": str(uuid.uuid4()),
            "results": [
                {
                    "index": r.index,
                    "relevance_score": r.score,
                    **({"document": {"text": _text(documents[r.index])}} if body.return_documents else {}),
                }
                for r in ranked
            ],
            "meta": meta,
        }

    return BodySizeLimit(app, config.max_body_bytes)


def _text(document: Any) -> str:
    return document if isinstance(document, str) else document.text


def serve(
    reranker: Reranker, host: str = "127.0.0.1", port: int = 8080, config: ServerConfig | None = None
) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    uvicorn = require("uvicorn", "serve", "the rerank server")
    uvicorn.run(
        create_app(reranker, config), host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )
