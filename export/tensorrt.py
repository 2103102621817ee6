"""TensorRT engines built from the exported ONNX with the ``tensorrt`` Python API (TensorRT 10 / 11).

- Dynamic shapes: one optimization profile over batch size and sequence length, min/opt/max
  (the runtime pads each length bucket to its own longest pair, so every shape in the range occurs).
- Precision lives in the ONNX: TensorRT 11 builds strongly typed networks only (the FP16/INT8
  builder flags are gone), and TensorRT 10 is asked for strong typing too, so the engine computes
  in exactly the types of the graph it was built from — fp32, or the fp16 graph that Optimum's
  fp16 conversion writes. int8 would need explicit Q/DQ nodes from static calibration; the dynamic
  int8 graphs of ``quantize.py`` (``MatMulInteger``) are an onnxruntime CPU format, refused here.
- Only graphs with standard ONNX ops parse (no ``O2``+ fusions, which are onnxruntime contrib ops).

What :func:`build_engine` returns is the engine's contract — I/O names and dtypes as the
network declares them, the profile, the TensorRT version and the GPU — which export writes into the
manifest and :mod:`rrdistill.runtime.tensorrt` checks on load. Parity is measured through that
runtime runner (``Reranker.load``), so the engine is validated exactly as it will serve.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rrdistill.export import ExportError


class TensorRTUnavailable(ExportError):
    """``--trt`` was asked for on a machine that cannot build engines."""


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` saying what is missing.

    Building needs a CUDA GPU and ``tensorrt``; the parity check then serves the engine through the
    runtime's TensorRT runner, which also needs the CUDA runtime binding (``cuda-bindings``), so
    all three are checked before any work starts.
    """
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the 'tensorrt' Python package (pip install 'rrdistill[gpu]')")
    if not _cudart_available():
        missing.append("the CUDA runtime binding 'cuda-bindings' (pip install 'rrdistill[gpu]')")
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


def _cudart_available() -> bool:
    from rrdistill.extras import MissingExtraError
    from rrdistill.runtime.tensorrt import import_cudart

    try:
        import_cudart()
    except MissingExtraError:
        return False
    return True


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
    output: str,
    profile: ShapeProfile,
    *,
    workspace_bytes: int = 4 << 30,
    device: int = 0,
) -> dict[str, Any]:
    """Parse `onnx_path`, build a serialized engine with one dynamic-shape profile, write `plan_path`.

    Returns the engine contract for ``manifest.extra["tensorrt"]`` (see :func:`engine_contract`).
    """
    from rrdistill.runtime.tensorrt import cuda_device, dtype_name

    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    network_inputs = {
        t.name: dtype_name(trt, t.dtype) for t in (network.get_input(i) for i in range(network.num_inputs))
    }
    network_outputs = {
        t.name: dtype_name(trt, t.dtype) for t in (network.get_output(i) for i in range(network.num_outputs))
    }
    if set(network_inputs) != set(inputs) or output not in network_outputs:
        raise ExportError(
            f"{onnx_path.name}: TensorRT sees inputs {sorted(network_inputs)} and outputs "
            f"{sorted(network_outputs)}, the bundle names {sorted(inputs)} and {output!r}"
        )
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
    return engine_contract(trt.__version__, profile, network_inputs, network_outputs, cuda_device(device))


def engine_contract(
    version: str,
    profile: ShapeProfile,
    inputs: dict[str, str],
    outputs: dict[str, str],
    device: dict[str, str],
) -> dict[str, Any]:
    """What the runtime's TensorRT runner checks on load (``manifest.extra["tensorrt"]``).

    ``profile`` uses the runner's keys (min/opt/max of batch and length); ``version`` and
    ``device`` (GPU name, compute capability) are also copied into the manifest's provenance,
    because an engine loads only with that TensorRT version on that GPU architecture.
    """
    low, opt, high = profile.shapes()
    return {
        "version": version,
        "strongly_typed": True,
        "inputs": dict(inputs),
        "outputs": dict(outputs),
        "profile": {
            "min_batch": low[0],
            "opt_batch": opt[0],
            "max_batch": high[0],
            "min_length": low[1],
            "opt_length": opt[1],
            "max_length": high[1],
        },
        "device": dict(device),
    }
