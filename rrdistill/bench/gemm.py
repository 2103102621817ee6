"""The machine's own GEMM peak, measured in the same run with the same thread count.

"Fraction of peak" is only meaningful against what *this* machine's best kernels reach, so we
measure it rather than quote a datasheet:

- fp32: numpy's BLAS (``A @ B``) and onnxruntime's ``MatMul`` (MLAS, the kernels the runtime's fp32
  model uses);
- int8: onnxruntime's ``MatMulInteger`` with u8 activations × s8 weights (the operand types of the
  dynamically quantized bundles; VNNI's ``VPDPBUSD`` where the CPU has it); counted as 2·M·K·N ops;

each on large square matrices and on the model's own feed-forward GEMM shape (M = pairs per call ×
max_length, K = hidden, N = intermediate). The peak of a precision is the best rate any engine
reached on any of these shapes; each rate is the best of ``repeats`` timed runs after a warm-up
run (a peak, not a typical, rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rrdistill.extras import require


@dataclass(frozen=True)
class GemmConfig:
    sizes: Sequence[int] = (1024, 2048)
    """Sides of the square matrices measured."""
    repeats: int = 5
    shapes: Sequence[Sequence[int]] = field(default_factory=tuple)
    """Additional (M, K, N) shapes, e.g. the model's own, measured with every engine."""
    seed: int = 0


@dataclass(frozen=True)
class GemmPeak:
    engine: str
    """``numpy`` or ``onnxruntime``."""
    dtype: str
    """``fp32`` or ``int8``."""
    m: int
    k: int
    n: int
    best_seconds: float
    median_seconds: float
    square: bool

    @property
    def ops(self) -> int:
        return 2 * self.m * self.k * self.n

    @property
    def gflops(self) -> float:
        """Operations per second of the best run, in 10⁹/s (int8: integer multiply-adds count 2)."""
        return self.ops / self.best_seconds / 1e9

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "gflops": self.gflops}


@dataclass(frozen=True)
class GemmCase:
    """One product, ready to time: ``run()`` computes it; ``reference()`` is numpy's exact answer
    (float64 / int64), so a test can check the timed graph multiplies what we think it does."""

    run: Callable[[], Any]
    reference: Callable[[], np.ndarray]


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, float]:
    run()  # warm-up: first-touch allocations, weight prepacking
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), float(np.median(times))


def _session(graph: Any, threads: int) -> Any:
    onnx = require("onnx", "export", "measuring the onnxruntime GEMM peak")
    ort = require("onnxruntime", "bench", "measuring the onnxruntime GEMM peak")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def ort_fp32_gemm(m: int, k: int, n: int, threads: int, rng: np.random.Generator) -> GemmCase:
    """onnxruntime ``MatMul``: fp32 activations (an input) × fp32 weights (an initializer)."""
    onnx = require("onnx", "export", "measuring the onnxruntime GEMM peak")
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])],
        "gemm_fp32",
        [helper.make_tensor_value_info("A", tensor.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", tensor.FLOAT, [m, n])],
        [numpy_helper.from_array(b, "B")],
    )
    session = _session(graph, threads)
    return GemmCase(
        run=lambda: session.run(None, {"A": a})[0],
        reference=lambda: a.astype(np.float64) @ b.astype(np.float64),
    )


def ort_int8_gemm(m: int, k: int, n: int, threads: int, rng: np.random.Generator) -> GemmCase:
    """onnxruntime ``MatMulInteger``: u8 activations (zero point 128) × s8 weights → int32."""
    onnx = require("onnx", "export", "measuring the onnxruntime GEMM peak")
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    # 7-bit weights (the quantizer's reduce_range): on AVX2 without VNNI the u8×s8 kernel adds pairs
    # of products in saturating int16, so full-range weights would not give the exact product there.
    b = rng.integers(-64, 64, size=(k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])],
        "gemm_u8s8",
        [helper.make_tensor_value_info("A", tensor.UINT8, [m, k])],
        [helper.make_tensor_value_info("Y", tensor.INT32, [m, n])],
        [
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "b_zero"),
        ],
    )
    session = _session(graph, threads)
    return GemmCase(
        run=lambda: session.run(None, {"A": a})[0],
        reference=lambda: (a.astype(np.int64) - 128) @ b.astype(np.int64),
    )


def numpy_fp32_gemm(m: int, k: int, n: int, threads: int, rng: np.random.Generator) -> GemmCase:
    """numpy's BLAS; its threads come from the environment (OMP/OPENBLAS_NUM_THREADS, set by the parent)."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return GemmCase(run=lambda: a @ b, reference=lambda: a.astype(np.float64) @ b.astype(np.float64))


ENGINES: dict[tuple[str, str], Callable[[int, int, int, int, np.random.Generator], GemmCase]] = {
    ("numpy", "fp32"): numpy_fp32_gemm,
    ("onnxruntime", "fp32"): ort_fp32_gemm,
    ("onnxruntime", "int8"): ort_int8_gemm,
}


def measure_peaks(config: GemmConfig, threads: int) -> list[GemmPeak]:
    """Every engine on each square shape, then on each extra shape."""
    rng = np.random.default_rng(config.seed)
    shapes = [(size, size, size, True) for size in config.sizes]
    shapes += [(int(m), int(k), int(n), False) for m, k, n in config.shapes]
    peaks = []
    for m, k, n, square in shapes:
        for (engine, dtype), build in ENGINES.items():
            best, median = _best(build(m, k, n, threads, rng).run, config.repeats)
            peaks.append(GemmPeak(engine, dtype, m, k, n, best, median, square))
    return peaks


def peak_gflops(peaks: Sequence[dict[str, Any]], dtype: str) -> float | None:
    """The machine's peak for `dtype`: the best rate of any engine on any measured shape."""
    rates = [p["gflops"] for p in peaks if p["dtype"] == dtype]
    return max(rates) if rates else None
