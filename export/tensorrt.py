"""TensorRT engines built from the exported ONNX with the ``tensorrt`` Python API (TensorRT 10 / 11).

- Dynamic shapes: one optimization profile over batch size and sequence length, min/opt/max
  (the runtime pads each length bucket to its own longest pair, so every shape in the range occurs).
- Precision lives in the ONNX: TensorRT 11 builds strongly typed networks only (the FP16/INT8
  builder flags are gone), and TensorRT 10 is asked for strong typing too, so the engine computes
  in exactly the types of the graph it was built from — fp32, or the fp16 graph that Optimum's
  fp16 conversion writes. int8 would need explicit Q/DQ nodes from static calibration; the dynamic
  int8 graphs of ``quantize.py`` (``MatMulInteger``) are an onnxruntime CPU format, refused here.
- Only graphs with standard ONNX ops parse (no ``O2``+ fusions, which are onnxruntime contrib ops).

:class:`TensorRTSession` runs an engine behind the small part of ``onnxruntime.InferenceSession``
that the runtime's :class:`~rrdistill.runtime.Reranker` uses, so parity of an engine is measured
with exactly the tokenization, truncation and batching that serve it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rrdistill.export import ExportError


class TensorRTUnavailable(ExportError):
    """``--trt`` was asked for on a machine that cannot build engines."""


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` saying what is missing (GPU, package)."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the 'tensorrt' Python package (pip install 'rrdistill[gpu]')")
    if not _cuda_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if missing:
        raise TensorRTUnavailable(
            "--trt builds a TensorRT engine on this machine's GPU and needs "
            + " and ".join(missing)
            + "; export without --trt for onnxruntime (CPU/CUDA), or run the export on a GPU machine"
        )
    import tensorrt

    return tensorrt


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class ShapeProfile:
    """The (batch, sequence) shapes the engine accepts and the one it is tuned for."""

    max_length: int
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    min_length: int = 1
    opt_length: int = 256

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        opt_length = min(self.opt_length, self.max_length)
        return (
            (self.min_batch, self.min_length),
            (self.opt_batch, opt_length),
            (self.max_batch, self.max_length),
        )

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def _network_flags(trt: ModuleType) -> int:
    """Strongly typed network: always on (flag deprecated) in TensorRT 11, requested in TensorRT 10."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    major = int(trt.__version__.split(".")[0])
    return 0 if flag is None or major >= 11 else 1 << int(flag)


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    inputs: list[str],
    profile: ShapeProfile,
    *,
    workspace_bytes: int = 4 << 30,
) -> dict[str, Any]:
    """Parse `onnx_path`, build a serialized engine with one dynamic-shape profile, write `plan_path`."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    shape_profile = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    for name in inputs:
        shape_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(shape_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__, "profile": profile.to_json(), "strongly_typed": True}


@dataclass(frozen=True)
class _Input:
    name: str


class TensorRTSession:
    """An engine behind ``get_inputs()`` / ``run()`` / ``get_providers()`` of an onnxruntime session.

    Buffers are torch CUDA tensors (torch comes with the ``[export]`` extra). One execution
    context: calls must not overlap (export-time validation scores sequentially).
    """

    def __init__(self, plan_path: Path):
        trt = require_tensorrt()
        import torch

        self._torch = torch
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise ExportError(f"{plan_path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]

    def get_inputs(self) -> list[_Input]:
        return [_Input(name) for name in self._inputs]

    def get_providers(self) -> list[str]:
        return [f"TensorRT {self._trt.__version__} engine"]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        device_inputs = {}
        for name in self._inputs:
            dtype = torch.from_numpy(
                np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))
            ).dtype
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", dtype=dtype)
            device_inputs[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self._outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            np_dtype = self._trt.nptype(self.engine.get_tensor_dtype(name))
            tensor = torch.empty(
                shape, dtype=torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype, device="cuda"
            )
            outputs[name] = tensor
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        wanted = output_names or self._outputs
        return [outputs[name].float().cpu().numpy() for name in wanted]
