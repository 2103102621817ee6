"""Where a system's time goes: thin timing wrappers around its tokenizer and its model call.

The wrappers delegate everything to the wrapped object and only add a ``perf_counter`` pair
(well under a microsecond) around the calls that matter, so the system runs its own code path
unchanged. The model wrappers also record the padded ``(batch, width)`` of every model call,
from which the executed FLOPs follow (:mod:`rrdistill.bench.flops`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stopwatch:
    """Seconds per named section and the padded shapes the model ran, since the last :meth:`reset`."""

    seconds: dict[str, float] = field(default_factory=dict)
    shapes: list[tuple[int, int]] = field(default_factory=list)

    def add(self, section: str, seconds: float) -> None:
        self.seconds[section] = self.seconds.get(section, 0.0) + seconds

    def reset(self) -> None:
        self.seconds = {}
        self.shapes = []

    def timed(self, section: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(section, time.perf_counter() - started)

        return wrapper


class TimedSession:
    """An ``onnxruntime.InferenceSession`` whose ``run`` is timed as ``model`` and whose input shape is recorded."""

    def __init__(self, session: Any, stopwatch: Stopwatch, shape_input: str = "input_ids") -> None:
        self._session = session
        self._stopwatch = stopwatch
        self._shape_input = shape_input

    def run(self, output_names: Any, input_feed: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._session.run(output_names, input_feed, *args, **kwargs)
        finally:
            self._stopwatch.add("model", time.perf_counter() - started)
            shape = getattr(input_feed.get(self._shape_input), "shape", None)
            if shape is not None and len(shape) == 2:
                self._stopwatch.shapes.append((int(shape[0]), int(shape[1])))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class TimedTokenizer:
    """A ``tokenizers.Tokenizer`` whose ``encode``/``encode_batch`` are timed as ``tokenize``."""

    def __init__(self, tokenizer: Any, stopwatch: Stopwatch) -> None:
        self._tokenizer = tokenizer
        self.encode = stopwatch.timed("tokenize", tokenizer.encode)
        self.encode_batch = stopwatch.timed("tokenize", tokenizer.encode_batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def time_torch_module(module: Any, stopwatch: Stopwatch, section: str = "model") -> None:
    """Time every forward of a ``torch.nn.Module`` (hooks) and record its ``input_ids`` shape.

    sentence-transformers calls its first module with a features dict; both its torch and ONNX
    backends go through that module, so one hook pair covers both.
    """
    started: list[float] = []

    def before(_module: Any, args: tuple[Any, ...]) -> None:
        started.append(time.perf_counter())
        features = args[0] if args else None
        # a dict or a transformers BatchEncoding (a mapping that is not a dict)
        ids = features.get("input_ids") if hasattr(features, "get") else None
        if ids is not None and getattr(ids, "ndim", 0) == 2:
            stopwatch.shapes.append((int(ids.shape[0]), int(ids.shape[1])))

    def after(_module: Any, _args: tuple[Any, ...], _output: Any) -> None:
        stopwatch.add(section, time.perf_counter() - started.pop())

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def operator_seconds(trace: list[dict[str, Any]], skip_runs: int = 0) -> dict[str, Any]:
    """Kernel time per operator type from an onnxruntime profile (``enable_profiling`` JSON trace),
    leaving out the first `skip_runs` ``model_run`` calls (warm-up)."""
    runs = sorted(
        (e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    start = runs[skip_runs]["ts"] if skip_runs < len(runs) else float("inf")
    counted = runs[skip_runs:]
    per_op: dict[str, float] = {}
    for event in trace:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event["ts"] < start:
            continue
        op = (event.get("args") or {}).get("op_name", "?")
        per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1e6
    return {
        "model_runs": len(counted),
        "model_run_seconds": sum(e["dur"] for e in counted) / 1e6,
        "kernel_seconds": sum(per_op.values()),
        "operators": dict(sorted(per_op.items(), key=lambda item: -item[1])),
    }
