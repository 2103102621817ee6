"""The TensorRT runner: serves a cross-encoder bundle whose ``model.engine`` is ``tensorrt``.

``rrdistill export --trt`` builds ``model.plan`` with the ``tensorrt`` Python API from the bundle's
own ONNX, under one optimisation profile, and measures parity on *that* plan. This module runs
the plan behind the three methods of ``onnxruntime.InferenceSession`` that
:class:`~rrdistill.runtime.Reranker` uses (``get_inputs``, ``run``, ``get_providers``), so
tokenization, truncation, length bucketing and scoring are the runtime's, unchanged.

Why our own runner rather than onnxruntime's TensorRT execution provider with its engine cache:

- the served engine is the one whose parity was measured: the EP would compile its *own* engine
  from ``model.onnx`` on first load (minutes, per GPU and per shape profile, re-specified as
  provider options) and cache it in its own format, so a bundle would ship either nothing
  precompiled or an engine built and validated by a different code path;
- the project's TensorRT is 11 (strongly typed, precision baked into the ONNX); onnxruntime-gpu
  is built against a TensorRT 10 and lags major releases, and ``onnxruntime-gpu`` replaces the
  base install's ``onnxruntime`` (same import name), a conflict the lean runtime should not force;
- the cost is small: the ``tensorrt`` runtime API plus the CUDA runtime binding (``cuda-bindings``)
  for buffers and a stream — no torch, which the lean runtime never imports.

The EP stays the right tool when the serving GPU is unknown at export time: export without
``--trt`` and load that ONNX bundle with ``providers=["TensorrtExecutionProvider", ...]``.

Engines are specific to the TensorRT version and GPU architecture that built them. Export
records both in the manifest's provenance and the engine's contract (I/O names, dtypes, profile)
in ``manifest.extra["tensorrt"]``; this module checks them on load and says what differs.
Everything heavy is imported lazily, and failures come at load, never at the first request.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rrdistill.extras import MissingExtraError, require
from rrdistill.runtime.bundle import BundleError, Manifest

log = logging.getLogger(__name__)

PROVIDER = "TensorRTEngine"
"""What :meth:`TensorRTSession.get_providers` reports (and export records as validated)."""
CONTRACT_KEY = "tensorrt"
"""``manifest.extra[CONTRACT_KEY]``: the engine contract written by export, checked here."""
PROFILE_KEYS = ("min_batch", "opt_batch", "max_batch", "min_length", "opt_length", "max_length")


class NoCudaDevice(BundleError):
    """TensorRT is installed but no CUDA GPU can be used."""


# -- CUDA runtime ---------------------------------------------------------------------------


def import_cudart() -> ModuleType:
    """The CUDA runtime binding of cuda-python: ``cuda.bindings.runtime`` (12.6+), else ``cuda.cudart``."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingExtraError(
        "serving a TensorRT bundle needs the CUDA runtime binding of cuda-python "
        "(module 'cuda.bindings.runtime'), which is not installed. Install the extra: "
        "pip install 'rrdistill[gpu]' (or pip install cuda-bindings matching your CUDA major version)"
    )


class Cuda:
    """Thin checked wrapper over the CUDA runtime binding: every call returns ``(error, *values)``."""

    def __init__(self, cudart: ModuleType):
        self.rt = cudart

    def _check(self, result: Any, what: str) -> Any:
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {what} failed: {self.error_text(error)}")
        return values[0] if len(values) == 1 else tuple(values)

    def error_text(self, error: Any) -> str:
        try:
            text = self.rt.cudaGetErrorString(error)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the message is best effort; the code is always there
            text = ""
        return f"{getattr(error, 'name', error)}{f' ({text})' if text else ''}"

    def device_count(self) -> tuple[int, str]:
        """GPUs visible to this process, and why none when zero (no driver, no device, …)."""
        result = self.rt.cudaGetDeviceCount()
        error, count = result[0], result[1]
        if error != self.rt.cudaError_t.cudaSuccess:
            return 0, self.error_text(error)
        return int(count or 0), "" if count else "cudaGetDeviceCount() found 0 devices"

    def set_device(self, device: int) -> None:
        self._check(self.rt.cudaSetDevice(device), f"cudaSetDevice({device})")

    def device_info(self, device: int) -> dict[str, str]:
        """Name and compute capability: what an engine is specific to (recorded at export)."""
        prop = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = prop.name.split(b"\0")[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}"}

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def free(self, pointer: int) -> None:
        self._check(self.rt.cudaFree(pointer), "cudaFree")

    def stream(self) -> Any:
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream), "copy to GPU"
        )

    def to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream), "copy to host"
        )

    def synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def cuda_device(device: int = 0) -> dict[str, str]:
    """Name and compute capability of `device` (export records them next to the engine)."""
    return Cuda(import_cudart()).device_info(device)


# -- TensorRT helpers shared with export ----------------------------------------------------


def dtype_name(trt: ModuleType, dtype: Any) -> str:
    """A TensorRT ``DataType`` as a numpy dtype name (``int64``, ``float16``; ``bf16`` etc. by name)."""
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:
        return str(getattr(dtype, "name", dtype)).split(".")[-1].lower()


def profile_from_shapes(
    shapes: Sequence[Sequence[int]],
) -> dict[str, int]:
    """``(min, opt, max)`` (batch, length) shapes of one input as the manifest's profile dict."""
    (b0, l0), (b1, l1), (b2, l2) = ((int(s[0]), int(s[1])) for s in shapes)
    return dict(zip(PROFILE_KEYS, (b0, b1, b2, l0, l1, l2), strict=True))


# -- the runner -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    name: str


def _logger_class(trt: ModuleType) -> type:
    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        """Keeps TensorRT's errors so a failed deserialization can say why."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            levels = trt.ILogger.Severity
            if severity in (levels.INTERNAL_ERROR, levels.ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif severity == levels.WARNING:
                log.warning("TensorRT: %s", msg)

    return _Logger


class TensorRTSession:
    """A deserialized engine behind ``get_inputs()`` / ``run()`` / ``get_providers()``.

    Device buffers for the profile's largest shapes are allocated once, so a call only sets
    shapes, copies inputs in and logits out. Batches larger than the profile's ``max_batch``
    are split. One execution context: calls are serialized by a lock (the runtime's reranker
    is shared between threads; one GPU runs one batch at a time anyway).
    """

    def __init__(self, trt: ModuleType, cuda: Cuda, plan: bytes, manifest: Manifest, device: int = 0):
        self._trt, self._cuda, self.device = trt, cuda, device
        self._lock = threading.Lock()
        self._buffers: dict[str, int] = {}
        self._stream: Any = None
        cuda.set_device(device)
        self.device_info = cuda.device_info(device)
        self._logger = _logger_class(trt)()
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError(_incompatible_engine(trt, manifest, self.device_info, self._logger.errors))
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: dtype_name(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = _check_contract(self, manifest)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.stream()
        self._allocate()

    # -- onnxruntime-session surface ----------------------------------------------------------

    def get_inputs(self) -> list[_Input]:
        return [_Input(name) for name in self._inputs]

    def get_outputs(self) -> list[_Input]:
        return [_Input(name) for name in self._outputs]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds` (all of shape ``(batch, length)``), split into the profile's max batch."""
        wanted = list(output_names or self._outputs)
        unknown = [n for n in wanted if n not in self._outputs]
        missing = [n for n in self._inputs if n not in feeds]
        if unknown or missing:
            raise ValueError(
                f"TensorRT engine: unknown outputs {unknown} / missing inputs {missing} "
                f"(engine inputs {self._inputs}, outputs {self._outputs})"
            )
        arrays = {n: np.asarray(feeds[n]) for n in self._inputs}
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"TensorRT engine: inputs must share one (batch, length) shape, got {shapes}")
        batch, length = next(iter(shapes))
        if batch == 0:
            return [np.empty((0, 1), dtype=np.float32) for _ in wanted]
        low, high = self.profile["min_length"], self.profile["max_length"]
        if not low <= length <= high:
            raise ValueError(
                f"sequence length {length} is outside the engine's profile [{low}, {high}] "
                "(set at export: re-export with --trt and a larger --max-length)"
            )
        step = self.profile["max_batch"]
        parts = []
        for start in range(0, batch, step):
            chunk = {n: a[start : start + step] for n, a in arrays.items()}
            parts.append(self._run_chunk(chunk, wanted))
        return [np.concatenate([p[i] for p in parts]) for i in range(len(wanted))]

    def close(self) -> None:
        """Free the GPU buffers and the stream (also on garbage collection)."""
        buffers, self._buffers = self._buffers, {}
        for pointer in buffers.values():
            self._cuda.free(pointer)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._cuda.destroy_stream(stream)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: CUDA may already be gone
            self.close()

    # -- internals ------------------------------------------------------------------------------

    def _allocate(self) -> None:
        """One buffer per I/O tensor, sized for the profile's largest (batch, length)."""
        largest = (self.profile["max_batch"], self.profile["max_length"])
        for name in self._inputs:
            if not self.context.set_input_shape(name, largest):
                raise RuntimeError(f"TensorRT refused the profile's max shape {largest} for {name}")
        for name in self._inputs + self._outputs:
            if name in self._inputs:
                shape = largest
            else:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not infer the shape of output {name}: {shape}")
            nbytes = int(np.prod(shape)) * np.dtype(self._dtypes[name]).itemsize
            self._buffers[name] = self._cuda.malloc(nbytes)
            if not self.context.set_tensor_address(name, self._buffers[name]):
                raise RuntimeError(f"TensorRT refused the buffer address of {name}")

    def _run_chunk(self, chunk: Mapping[str, np.ndarray], wanted: list[str]) -> list[np.ndarray]:
        with self._lock:
            self._cuda.set_device(self.device)  # the device is per host thread in CUDA
            hosts = []
            for name in self._inputs:
                host = np.ascontiguousarray(chunk[name], dtype=self._dtypes[name])
                if not self.context.set_input_shape(name, host.shape):
                    raise RuntimeError(f"TensorRT refused input shape {host.shape} for {name}")
                self._cuda.to_device(self._buffers[name], host, self._stream)
                hosts.append(host)  # alive until the stream is synchronized
            outputs = []
            for name in wanted:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs.append(np.empty(shape, dtype=self._dtypes[name]))
            if not self.context.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
            for name, host in zip(wanted, outputs, strict=True):
                self._cuda.to_host(host, self._buffers[name], self._stream)
            self._cuda.synchronize(self._stream)
        return [o.astype(np.float32, copy=False) if o.dtype.kind == "f" else o for o in outputs]


def _recorded(manifest: Manifest) -> tuple[str, dict[str, Any]]:
    record = manifest.provenance.get("tensorrt") or {}
    return str(record.get("version", "unrecorded")), dict(record.get("device") or {})


def _incompatible_engine(
    trt: ModuleType, manifest: Manifest, device: Mapping[str, str], errors: list[str]
) -> str:
    version, built_on = _recorded(manifest)
    built = f"{built_on.get('name', '?')} (compute capability {built_on.get('compute_capability', '?')})"
    here = f"{device.get('name', '?')} (compute capability {device.get('compute_capability', '?')})"
    return (
        f"TensorRT {trt.__version__} could not deserialize {manifest.model.file}: it was built with "
        f"TensorRT {version} on {built}; this machine has TensorRT {trt.__version__} on {here}. "
        "Engines only load with the TensorRT version and GPU architecture that built them: rebuild "
        "here with `rrdistill export --trt`, or serve the bundle's source ONNX"
        + (f" ({manifest.model.onnx_file})" if manifest.model.onnx_file else "")
        + " by exporting without --trt."
        + (f" TensorRT said: {errors[-1]}" if errors else "")
    )


def _check_contract(session: TensorRTSession, manifest: Manifest) -> dict[str, int]:
    """The engine's I/O and profile vs the manifest; returns the profile the engine really has."""
    engine = session.engine
    where = f"{manifest.model.file}"
    if set(session._inputs) != set(manifest.model.inputs):
        raise BundleError(
            f"{where}: engine inputs {sorted(session._inputs)} differ from the manifest's "
            f"{sorted(manifest.model.inputs)}"
        )
    if manifest.model.output not in session._outputs:
        raise BundleError(f"{where}: engine outputs {session._outputs} lack {manifest.model.output!r}")
    for name in session._inputs:
        if np.dtype(session._dtypes[name]).kind not in "iu":
            raise BundleError(f"{where}: input {name} is {session._dtypes[name]}, expected integer ids")
    if session._dtypes[manifest.model.output] not in ("float32", "float16"):
        raise BundleError(
            f"{where}: output {manifest.model.output} is {session._dtypes[manifest.model.output]}"
        )
    contract = manifest.extra.get(CONTRACT_KEY) or {}
    recorded_io = {**contract.get("inputs", {}), **contract.get("outputs", {})}
    for name, dtype in recorded_io.items():
        if session._dtypes.get(name) != dtype:
            raise BundleError(
                f"{where}: tensor {name} is {session._dtypes.get(name)} in the engine, "
                f"{dtype} in the manifest (the plan was replaced after export?)"
            )
    if engine.num_optimization_profiles < 1:
        raise BundleError(f"{where}: the engine has no optimisation profile for dynamic shapes")
    profiles = {
        name: profile_from_shapes(engine.get_tensor_profile_shape(name, 0)) for name in session._inputs
    }
    profile = {
        **profiles[session._inputs[0]],
        "min_batch": max(p["min_batch"] for p in profiles.values()),
        "min_length": max(p["min_length"] for p in profiles.values()),
        "max_batch": min(p["max_batch"] for p in profiles.values()),
        "max_length": min(p["max_length"] for p in profiles.values()),
    }
    recorded = contract.get("profile")
    if recorded is not None:
        differ = {k: (recorded.get(k), profile[k]) for k in PROFILE_KEYS if recorded.get(k) != profile[k]}
        if differ:
            raise BundleError(
                f"{where}: engine profile differs from the manifest's: {differ} (manifest, engine)"
            )
    if profile["max_length"] < manifest.inputs.max_length:
        raise BundleError(
            f"{where}: the engine takes at most {profile['max_length']} tokens per pair but the "
            f"bundle's max_length is {manifest.inputs.max_length}"
        )
    if profile["min_batch"] > 1 or profile["min_length"] > 1:
        raise BundleError(f"{where}: the engine's profile must start at batch 1 and length 1, got {profile}")
    return profile


def open_engine_session(bundle: Path, manifest: Manifest, device: int = 0) -> TensorRTSession:
    """Load the bundle's engine on CUDA `device`; every incompatibility fails here, with its remedy.

    - ``tensorrt`` missing: :class:`~rrdistill.extras.MissingExtraError` naming ``rrdistill[gpu]``;
    - no usable CUDA GPU: :class:`NoCudaDevice`, pointing at the source ONNX for CPU serving;
    - an engine from another TensorRT version or GPU: :class:`BundleError` naming both.
    """
    if manifest.model.engine != "tensorrt":
        raise BundleError(f"{bundle}: engine {manifest.model.engine!r} is not a TensorRT engine")
    trt = require("tensorrt", "gpu", "serving a TensorRT bundle")
    cuda = Cuda(import_cudart())
    count, why = cuda.device_count()
    if count <= device:
        fallback = (
            f"its source ONNX ({manifest.model.onnx_file}) can be served on CPU by exporting without --trt"
            if manifest.model.onnx_file
            else "export the model without --trt to serve it on CPU"
        )
        found = f"{count} GPU(s)" if count else f"no CUDA GPU was found ({why})"
        raise NoCudaDevice(
            f"{bundle}: a TensorRT bundle runs on a CUDA GPU (device {device}), and {found}; {fallback}"
        )
    plan = (Path(bundle) / manifest.model.file).read_bytes()
    return TensorRTSession(trt, cuda, plan, manifest, device)
