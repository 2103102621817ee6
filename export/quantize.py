"""int8: dynamic quantization with Optimum's ORTQuantizer, tuned for the instruction set of this CPU,
and weight-only int8 (onnxruntime's MatMulNBits) for decoders.

Dynamic quantization stores weights as int8 and quantizes activations per batch at run time
(``DynamicQuantizeLinear`` + ``MatMulInteger``): no calibration data, and the scales follow each
input. Optimum's presets choose the operand types the CPU multiplies fastest without overflow:

- ``avx512_vnni``: u8 activations × s8 weights in one VPDPBUSD instruction (Cascade Lake and later);
- ``avx512`` / ``avx2`` without VNNI: u8×s8 products can saturate 16-bit intermediates, so
  ``avx512`` uses reduced-range weights and ``avx2`` u8 weights (as onnxruntime recommends);
- ``arm64``: u8×s8 with the dot-product instructions of ARMv8.2+.

A cross-encoder's cheapest int8 graph is quantized *after* onnxruntime's transformer fusions
(:func:`quantize_fused_int8`): the fused ``Attention`` becomes one ``QAttention`` (Q, K and V in one
int8 GEMM, no activation × activation MatMul quantized at all), and ``SkipLayerNormalization`` /
``BiasGelu`` stay fused around the int8 MatMuls. Weights are s8 there; on x86 without VNNI the u8 × s8
products of ``VPMADDUBSW`` could saturate 16 bits, so the weights keep 7 bits (``reduce_range``),
which makes the sum of two products fit (2 · 255 · 63 < 2¹⁵). Measured on MiniLM-L6 (96 tokens, 2
threads, AVX2): 1.2-1.3× the docs/s of Optimum's avx2 preset on the plain graph, with Kendall τ
against fp32 no worse (``benchmarks/int8_graphs.py``).

Decoders are another matter: a language model's activations carry outlier channels that one
per-tensor activation scale cannot hold (dynamically quantized, SmolLM2-135M's first greedy token
already differs from fp32's, next-token logits off by up to 12). :func:`quantize_weight_only_int8`
stores the weights as int8 in blocks of 32 along the reduction axis, each with its own scale, and
quantizes activations per block inside the kernel (``accuracy_level`` 4): the logits stay within a
fraction of a unit and decoding, which reads every weight once per token, moves a quarter of the bytes.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rrdistill.export import ExportError
from rrdistill.export.onnx import OnnxModel
from rrdistill.extras import require

ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def detect_isa(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The best of :data:`ISAS` this CPU runs (x86 without any feature information: ``avx2``)."""
    machine = (machine or platform.machine()).lower()
    if machine in {"arm64", "aarch64"}:
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if {"avx512_vnni", "avx512f", "avx512bw"} <= flags:
        return "avx512_vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    return "avx2"


@dataclass(frozen=True)
class Int8Settings:
    """What the bundle records about its quantization."""

    isa: str | None
    """The instruction set dynamic quantization was tuned for (None: weight-only runs on any)."""
    per_channel: bool
    mode: str = "dynamic"
    """``dynamic`` (int8 MatMulInteger, activations quantized per tensor) or ``weight-only`` (MatMulNBits)."""
    graph: str = "plain"
    """dynamic: ``plain`` (the export as is, Optimum's preset) or ``fused`` (after transformer fusions)."""
    weights: str = ""
    activations: str = ""
    reduce_range: bool = False
    operators: tuple[str, ...] = ()
    excluded_nodes: tuple[str, ...] = ()
    """Nodes kept in fp32 (a causal LM's output projection)."""
    block_size: int | None = None
    """weight-only: weights per scale, along the reduction axis."""
    accuracy_level: int | None = None
    """weight-only: MatMulNBits' compute type (4: int8 activations per block; None: fp32)."""

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "operators": list(self.operators),
            "excluded_nodes": list(self.excluded_nodes),
        }


def check_isa(isa: str) -> None:
    """Refuse an instruction set int8 cannot be tuned for, naming the ones it can."""
    if isa not in ISAS:
        raise ExportError(f"unknown instruction set {isa!r}: use one of {', '.join(ISAS)}")


def quantization_config(isa: str, per_channel: bool) -> Any:
    """Optimum's dynamic-quantization preset for `isa`."""
    check_isa(isa)
    configuration = require("optimum.onnxruntime.configuration", "export", "int8 quantization")
    presets = configuration.AutoQuantizationConfig
    if isa == "avx512_vnni":
        return presets.avx512_vnni(is_static=False, per_channel=per_channel)
    if isa == "avx512":
        return presets.avx512(is_static=False, per_channel=per_channel, reduce_range=True)
    if isa == "avx2":
        return presets.avx2(is_static=False, per_channel=per_channel)
    return presets.arm64(is_static=False, per_channel=per_channel)


def output_projection_nodes(path: Path, output: str = "logits") -> tuple[str, ...]:
    """Names of the MatMul/Gemm nodes that produce `output` (through at most a few reshapes/adds)."""
    onnx = require("onnx", "export", "int8 quantization")
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {name: node for node in graph.node for name in node.output}
    found, frontier = [], [output]
    for _ in range(4):  # logits = MatMul(hidden, W) possibly followed by Add / Reshape / Cast
        nodes = [producer[name] for name in frontier if name in producer]
        found += [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")]
        if found:
            break
        frontier = [i for n in nodes for i in n.input]
    return tuple(found)


def quantize_dynamic_int8(
    model: OnnxModel,
    out_dir: Path,
    *,
    isa: str | None = None,
    per_channel: bool = True,
    exclude_nodes: tuple[str, ...] = (),
) -> tuple[OnnxModel, Int8Settings]:
    """Quantize `model` to int8 into `out_dir` with the preset of `isa` (default: this CPU's).

    `exclude_nodes` stay fp32: a language model's output projection is one MatMul whose int8
    error moves every next-token logit at once (with tied embeddings its weight range is the
    whole vocabulary's), for a few percent of the decoder's compute.
    """
    onnxruntime = require("optimum.onnxruntime", "export", "int8 quantization")
    isa = isa or detect_isa()
    config = quantization_config(isa, per_channel)
    config.nodes_to_exclude = list(exclude_nodes)
    quantizer = onnxruntime.ORTQuantizer(model.path, config=None)
    quantizer.quantize(quantization_config=config, save_dir=out_dir, file_suffix="quantized")
    settings = Int8Settings(
        isa=isa,
        per_channel=per_channel,
        weights=config.weights_dtype.name,
        activations=config.activations_dtype.name,
        reduce_range=bool(config.reduce_range),
        operators=tuple(str(getattr(op, "value", op)) for op in config.operators_to_quantize),
        excluded_nodes=tuple(exclude_nodes),
    )
    return OnnxModel.read(out_dir / f"{model.path.stem}_quantized.onnx", model.output), settings


INT8_GRAPHS = ("fused", "plain")
FUSED_OPERATORS = ("MatMul", "Attention", "Gather", "EmbedLayerNormalization")
"""What :func:`quantize_fused_int8` quantizes (Gather: the embedding tables, stored as int8)."""


def fused_weight_settings(isa: str) -> tuple[Any, bool]:
    """(weight type, reduce_range) of the fused graph's int8 for `isa`: s8 weights everywhere, 7-bit
    where u8 × s8 products could saturate (x86 without VNNI)."""
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    check_isa(isa)
    return quantization.QuantType.QInt8, isa in ("avx2", "avx512")


def quantize_fused_int8(
    model: OnnxModel,
    out_dir: Path,
    *,
    isa: str | None = None,
    per_channel: bool = True,
    weights: tuple[Any, bool] | None = None,
) -> tuple[OnnxModel, Int8Settings]:
    """Dynamic int8 of a graph already fused by onnxruntime's transformer optimizer (Optimum O2/O3).

    Optimum's ``ORTQuantizer`` cannot take such a graph (shape inference stops at the contrib ops),
    so this calls onnxruntime's ``quantize_dynamic`` itself, telling it that untyped tensors are
    fp32, and quantizing only MatMuls with a constant weight (attention's own products live inside
    ``QAttention``). `weights` overrides (weight type, reduce_range) of :func:`fused_weight_settings`
    (``benchmarks/int8_graphs.py`` separates the levers with it).
    """
    onnx = require("onnx", "export", "int8 quantization")
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    isa = isa or detect_isa()
    weight_type, reduce_range = weights or fused_weight_settings(isa)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.path.stem}_quantized.onnx"
    quantization.quantize_dynamic(
        model.path,
        path,
        op_types_to_quantize=list(FUSED_OPERATORS),
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=weight_type,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    settings = Int8Settings(
        isa=isa,
        per_channel=per_channel,
        graph="fused",
        weights=weight_type.name,
        activations=quantization.QuantType.QUInt8.name,
        reduce_range=reduce_range,
        operators=FUSED_OPERATORS,
    )
    return OnnxModel.read(path, model.output), settings


WEIGHT_ONLY_BLOCK = 32
"""Weights per scale for weight-only int8: small enough to follow each channel's outliers."""


def quantize_weight_only_int8(
    model: OnnxModel,
    out_dir: Path,
    *,
    block_size: int = WEIGHT_ONLY_BLOCK,
    accuracy_level: int | None = 4,
    exclude_nodes: tuple[str, ...] = (),
) -> tuple[OnnxModel, Int8Settings]:
    """Weight-only int8 of every MatMul with a constant weight (onnxruntime's ``MatMulNBits``, 8 bits).

    Symmetric blocks of `block_size` weights share a scale; `accuracy_level` 4 lets the kernel
    quantize activations per block as well (int8 dot products), None keeps them fp32 (accurate, but
    the kernel then dequantizes every block on every call: several times slower on a CPU).
    """
    onnx = require("onnx", "export", "int8 quantization")
    nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", "export", "weight-only int8")
    quantizer = nbits.MatMulNBitsQuantizer(
        onnx.load(str(model.path)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        nodes_to_exclude=list(exclude_nodes),
    )
    quantizer.process()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.path.stem}_quantized.onnx"
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
    settings = Int8Settings(
        isa=None,
        per_channel=False,
        mode="weight-only",
        weights="int8 (symmetric)",
        activations="fp32" if accuracy_level is None else f"int8 per block (accuracy_level {accuracy_level})",
        operators=("MatMul",),
        excluded_nodes=tuple(exclude_nodes),
        block_size=block_size,
        accuracy_level=accuracy_level,
    )
    return OnnxModel.read(path, model.output), settings
