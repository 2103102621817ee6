"""The runtime's performance targets, checked on the measured numbers and reported met or not.

Against the peers a user would pick instead, each on the graph it ships (same model, same passages):

- int8 bundle ≥ 1.5× FlashRank-int8 and ≥ 1.5× sentence-transformers' ONNX-int8 (their int8 is
  Optimum's dynamic preset on the unfused export: the graph the runtime's own int8 must beat);
- fp32 bundle ≥ 1.3× FlashRank-fp32 and ≥ 1.3× sentence-transformers' ONNX backend;
- ≥ 60 % of this machine's GEMM peak (executed FLOP/s, end to end, of the same precision);
- int8 loses ≤ 0.5 nDCG@10 points against the fp32 bundle, on ≥ 96 queries (fewer: not judged);
- peak RSS of the int8 runtime process ≤ 300 MB;
- and against sentence-transformers on torch (the source model as trained): int8 ≥ 2.5×, fp32 ≥ 1.3×.

Speed targets are checked for both workloads (one query × its passages, and many queries per call).
A missed target carries a one-line diagnosis: where the time went (tokenization / model / the
rest), padding efficiency, and how fast the model itself ran, so the report says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

SPEEDUP_INT8_PEERS = 1.5
SPEEDUP_FP32_PEERS = 1.3
SPEEDUP_INT8_TORCH = 2.5
SPEEDUP_FP32_TORCH = 1.3
MAX_NDCG_LOSS_POINTS = 0.5
MIN_QUALITY_QUERIES = 96
MIN_PEAK_FRACTION = 0.60
MAX_PEAK_RSS_MB = 300.0
WORKLOADS = ("single", "batch")


@dataclass(frozen=True)
class TargetResult:
    target: str
    system: str
    reference: str | None
    workload: str | None
    measured: float | None
    threshold: float
    comparison: str
    """``>=`` or ``<=``: how `measured` must relate to `threshold`."""
    met: bool | None
    """None: could not be measured (a system missing or failed)."""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def diagnosis(system: dict[str, Any], workload: str) -> str:
    """Where `system`'s time went in `workload`, in one line."""
    data = system["workloads"][workload]
    parts = data["breakdown"]
    text = (
        f"{system['name']}: model {parts['model_share']:.0%}, tokenize {parts['tokenize_share']:.0%}, "
        f"other {parts['other_share']:.0%} of {data['latency']['total']:.2f} s"
    )
    efficiency = data["tokens"]["padding_efficiency"]
    if efficiency is not None:
        text += f"; padding efficiency {efficiency:.0%}"
    model_fraction = data["flops"]["model_only_fraction_of_peak"]
    if model_fraction is not None:
        text += f"; model alone at {model_fraction:.0%} of GEMM peak"
    return text


def _check(measured: float | None, threshold: float, comparison: str) -> bool | None:
    if measured is None:
        return None
    return measured >= threshold if comparison == ">=" else measured <= threshold


def _find(systems: Sequence[dict[str, Any]], kind: str, precision: str) -> dict[str, Any] | None:
    return next((s for s in systems if s.get("kind") == kind and s.get("precision") == precision), None)


def _ran(system: dict[str, Any] | None) -> dict[str, Any] | None:
    """The system if it was measured, else None."""
    return system if system is not None and system.get("status") == "ok" else None


def _why_not(**systems: dict[str, Any] | None) -> str:
    return "not measured: " + ", ".join(
        f"{role} {'missing' if s is None else s.get('status')}" for role, s in systems.items() if not _ran(s)
    )


def _speed_rows(
    target: str, system: dict[str, Any] | None, reference: dict[str, Any] | None, threshold: float, name: str
) -> list[TargetResult]:
    mine, theirs = _ran(system), _ran(reference)
    rows = []
    for workload in WORKLOADS:
        measured, met, note = None, None, _why_not(system=system, reference=reference)
        if mine and theirs:
            measured = (
                mine["workloads"][workload]["latency"]["docs_per_second"]
                / theirs["workloads"][workload]["latency"]["docs_per_second"]
            )
            met = _check(measured, threshold, ">=")
            note = "" if met else diagnosis(mine, workload) + " | " + diagnosis(theirs, workload)
        rows.append(
            TargetResult(
                target,
                (system or {}).get("name") or name,
                (reference or {}).get("name"),
                workload,
                measured,
                threshold,
                ">=",
                met,
                note,
            )
        )
    return rows


def _quality_row(int8: dict[str, Any] | None, fp32: dict[str, Any] | None) -> TargetResult:
    """int8 against the fp32 bundle on the same queries (paired bootstrap); judged on ≥ 96 queries."""
    from rrdistill.bench.stats import paired_delta

    mine, theirs = _ran(int8), _ran(fp32)
    measured, met, note = None, None, _why_not(system=int8, reference=fp32)
    if mine and theirs:
        qids = sorted(theirs["quality"]["per_query"])
        delta = paired_delta(
            [mine["quality"]["per_query"][q] for q in qids], [theirs["quality"]["per_query"][q] for q in qids]
        )
        measured = -delta.mean * 100
        met = _check(measured, MAX_NDCG_LOSS_POINTS, "<=") if len(qids) >= MIN_QUALITY_QUERIES else None
        note = (
            f"nDCG@10 {mine['quality']['ndcg@10']:.4f} vs {theirs['quality']['ndcg@10']:.4f}; "
            f"95% CI of the change {delta.low * 100:+.2f} .. {delta.high * 100:+.2f} points "
            f"over {len(qids)} queries"
        )
        if met is None:
            note += f" (not judged: the target needs >= {MIN_QUALITY_QUERIES} queries, run with --queries 96)"
    return TargetResult(
        "int8 loses <= 0.5 nDCG@10 points vs fp32",
        (int8 or {}).get("name") or "rrdistill-int8",
        (fp32 or {}).get("name") or "rrdistill-fp32",
        None,
        measured,
        MAX_NDCG_LOSS_POINTS,
        "<=",
        met,
        note,
    )


def _memory_row(system: dict[str, Any] | None) -> TargetResult:
    mine = _ran(system)
    measured = mine.get("peak_rss_mb") if mine else None
    note = (
        _why_not(system=system) if not mine else "peak resident memory of the worker that loaded and ran it"
    )
    return TargetResult(
        "int8 process peak RSS <= 300 MB",
        (system or {}).get("name") or "rrdistill-int8",
        None,
        None,
        measured,
        MAX_PEAK_RSS_MB,
        "<=",
        _check(measured, MAX_PEAK_RSS_MB, "<="),
        note,
    )


def _peak_rows(precision: str, system: dict[str, Any] | None) -> list[TargetResult]:
    mine = _ran(system)
    rows = []
    for workload in WORKLOADS:
        measured, met, note = None, None, _why_not(system=system)
        if mine:
            flops = mine["workloads"][workload]["flops"]
            measured = flops["fraction_of_peak"]
            met = _check(measured, MIN_PEAK_FRACTION, ">=")
            unit = "GOP/s" if precision == "int8" else "GFLOP/s"
            note = (
                f"{flops['executed_gflops_per_second']:.1f} of {flops['peak_gflops_per_second']:.1f} {unit}"
                if measured is not None
                else "no GEMM peak measured"
            )
            if met is False:
                note += " | " + diagnosis(mine, workload)
        rows.append(
            TargetResult(
                f"{precision} >= 60% of GEMM peak",
                (system or {}).get("name") or f"rrdistill-{precision}",
                None,
                workload,
                measured,
                MIN_PEAK_FRACTION,
                ">=",
                met,
                note,
            )
        )
    return rows


def _named(systems: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((s for s in systems if s.get("name") == name), None)


def evaluate_targets(systems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target as a row: measured value, threshold, met (None: not measurable) and a note.

    The runtime's systems are ``rrdistill-fp32`` / ``rrdistill-int8``; the peers are found by name
    (``flashrank-int8``, ``st-onnx-int8``, …)."""
    int8 = _named(systems, "rrdistill-int8") or _find(systems, "rrdistill", "int8")
    fp32 = _named(systems, "rrdistill-fp32") or _find(systems, "rrdistill", "fp32")
    rows: list[TargetResult] = []
    for peer, label in (
        ("flashrank-int8", "FlashRank-int8"),
        ("st-onnx-int8", "sentence-transformers ONNX-int8"),
    ):
        rows += _speed_rows(
            f"int8 >= 1.5x {label}", int8, _named(systems, peer), SPEEDUP_INT8_PEERS, "rrdistill-int8"
        )
    for peer, label in (("flashrank-fp32", "FlashRank-fp32"), ("st-onnx", "sentence-transformers ONNX")):
        rows += _speed_rows(
            f"fp32 >= 1.3x {label}", fp32, _named(systems, peer), SPEEDUP_FP32_PEERS, "rrdistill-fp32"
        )
    rows += _peak_rows("int8", int8)
    rows.append(_quality_row(int8, fp32))
    rows.append(_memory_row(int8))
    st_torch = _named(systems, "st-torch")
    rows += _speed_rows(
        "int8 >= 2.5x sentence-transformers torch", int8, st_torch, SPEEDUP_INT8_TORCH, "rrdistill-int8"
    )
    rows += _speed_rows(
        "fp32 >= 1.3x sentence-transformers torch", fp32, st_torch, SPEEDUP_FP32_TORCH, "rrdistill-fp32"
    )
    rows += _peak_rows("fp32", fp32)
    return [row.to_json() for row in rows]
