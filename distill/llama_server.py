"""A local OpenAI-compatible LLM server for a GGUF model: llama.cpp through ``xllamacpp``.

On a machine without a GPU (or a model hub), this is how a real instruction-tuned model labels,
synthesizes and ranks: llama.cpp runs the quantized GGUF on the CPU and speaks the same
``/v1/chat/completions`` protocol as ``vllm serve``, so every caller uses the one
OpenAI-compatible backend and moving to a GPU server is a change of URL.

The server lives in this process (llama.cpp's HTTP server on its own threads), listens on
loopback only, and is stopped when the :class:`LlamaServer` context exits. Context is per slot:
``context`` tokens for each of ``parallel`` concurrent requests.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rrdistill.distill.lora_gguf import llama_adapter
from rrdistill.extras import require
from rrdistill.models import ModelRef, resolve_model


@dataclass(frozen=True)
class LlamaServerConfig:
    model: str
    """A registry name (fetched if needed), a GGUF file, or a folder holding one."""
    alias: str | None = None
    """The model name clients send (default: the registry name or file stem)."""
    context: int = 4096
    """Tokens of context for each concurrent request (prompt + completion)."""
    parallel: int = 1
    """Requests decoded concurrently (llama.cpp slots); each gets `context` tokens."""
    threads: int | None = None
    """CPU threads for decoding and prompt processing (default: all cores)."""
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    startup_timeout: float = 300.0
    api_key: str | None = None
    lora: tuple[str, ...] = ()
    """LoRA adapters fine-tuned from this GGUF, applied at scale 1 to every request, in order
    (an SFT adapter, then the GRPO adapter trained on top of it): PEFT adapter folders
    (converted, :func:`rrdistill.distill.lora_gguf.llama_adapter`) or llama.cpp GGUF adapters."""
    log_level: int = 2
    """llama.cpp's log threshold: 1 errors, 2 warnings (default: its per-request INFO lines would
    bury a pipeline's progress), 3 info, 4 debug."""

    def __post_init__(self) -> None:
        if self.context < 256:
            raise ValueError("context must be ≥ 256 tokens")
        if self.parallel < 1:
            raise ValueError("parallel must be ≥ 1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """``with LlamaServer(LlamaServerConfig("smollm2-135m-instruct")) as server: server.url``."""

    def __init__(self, config: LlamaServerConfig) -> None:
        self.config = config
        self.ref: ModelRef = resolve_model(config.model)
        if self.ref.format != "gguf":
            raise ValueError(
                f"{config.model}: llama.cpp serves GGUF files; this is a {self.ref.format} checkpoint"
            )
        self.model_name = config.alias or self.ref.name
        self.port = config.port or free_port(config.host)
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def start(self) -> LlamaServer:
        if self._server is not None:
            return self
        xllamacpp = require("xllamacpp", "llm", "serving a GGUF model with llama.cpp")
        params = xllamacpp.CommonParams()
        params.model.path = str(self.ref.path)
        params.model_alias = {self.model_name}  # a set of names: a plain string would become its letters
        params.n_ctx = self.config.context * self.config.parallel
        params.n_parallel = self.config.parallel
        threads = self.config.threads or os.cpu_count() or 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.hostnames = [self.config.host]
        params.port = self.port
        params.n_predict = -1
        adapters = []
        for path in self.config.lora:
            adapter = xllamacpp.CommonAdapterLoraInfo()
            adapter.path, adapter.scale = str(llama_adapter(path, self.ref.path)), 1.0
            adapters.append(adapter)
        params.lora_adapters = adapters
        params.verbosity = self.config.log_level
        if self.config.api_key:
            params.api_keys = [self.config.api_key]
        self._server = xllamacpp.Server(params)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    status = json.loads(response.read() or b"{}").get("status", "ok")
                    if response.status == 200 and status == "ok":
                        return
                    last = f"status {status}"
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
                last = str(exc)
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"llama.cpp server for {self.ref.path.name} not ready after {self.config.startup_timeout:.0f} s ({last})"
        )

    def stop(self) -> None:
        """Stop serving: llama.cpp's server shuts down when its handle is released."""
        if self._server is not None:
            self._server = None
            gc.collect()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        """For provenance: which model file, how it was served."""
        return {
            "server": "llama.cpp (xllamacpp)",
            "model": self.model_name,
            "gguf": self.ref.path.name,
            "context_per_request": self.config.context,
            "parallel": self.config.parallel,
            **({"lora": [str(p) for p in self.config.lora]} if self.config.lora else {}),
            **self.ref.provenance,
        }


def serve_forever(config: LlamaServerConfig) -> None:  # pragma: no cover - interactive
    """Serve until interrupted (``rrdistill models serve``)."""
    with LlamaServer(config) as server:
        print(f"serving {server.model_name} at {server.url}/v1 (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
