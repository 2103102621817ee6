"""The runtime's performance targets, checked on the measured numbers and reported met or not.

- int8 bundle ≥ 2.5× the docs/s of sentence-transformers on torch, losing ≤ 0.5 nDCG@10 points;
- fp32 bundle ≥ 1.3× sentence-transformers on torch;
- ≥ 1.5× FlashRank running the same ONNX graph (the speedup is the runtime's alone);
- ≥ 60 % of this machine's GEMM peak (executed FLOP/s, end to end, of the same precision).

Speed targets are checked for both workloads. A missed target carries a one-line diagnosis:
where the time went (tokenization / model / the rest), padding efficiency, and how fast the
model itself ran, so the report says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

SPEEDUP_INT8 = 2.5
SPEEDUP_FP32 = 1.3
SPEEDUP_FLASHRANK = 1.5
MAX_NDCG_LOSS_POINTS = 0.5
MIN_PEAK_FRACTION = 0.60
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


def _quality_row(
    int8: dict[str, Any] | None, st_torch: dict[str, Any] | None, reference: str | None
) -> TargetResult:
    mine, theirs = _ran(int8), _ran(st_torch)
    measured, note = None, _why_not(system=int8, reference=st_torch)
    if mine and theirs and reference == "st-torch":
        delta = mine["vs_reference"]["ndcg@10_delta"]
        measured = -delta["mean"] * 100
        note = (
            f"nDCG@10 {mine['quality']['ndcg@10']:.4f} vs {theirs['quality']['ndcg@10']:.4f}; "
            f"95% CI of the change {delta['low'] * 100:+.2f} .. {delta['high'] * 100:+.2f} points "
            f"over {delta['queries']} queries"
        )
    return TargetResult(
        "int8 loses <= 0.5 nDCG@10 points vs sentence-transformers torch",
        (int8 or {}).get("name") or "rrdistill-int8",
        "st-torch",
        None,
        measured,
        MAX_NDCG_LOSS_POINTS,
        "<=",
        _check(measured, MAX_NDCG_LOSS_POINTS, "<="),
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


def evaluate_targets(systems: Sequence[dict[str, Any]], reference: str | None) -> list[dict[str, Any]]:
    """Every target as a row: measured value, threshold, met (None: not measurable) and a note."""
    st_torch = next((s for s in systems if s.get("name") == "st-torch"), None)
    int8 = _find(systems, "rrdistill", "int8")
    fp32 = _find(systems, "rrdistill", "fp32")
    rows = [
        *_speed_rows(
            "int8 >= 2.5x sentence-transformers torch", int8, st_torch, SPEEDUP_INT8, "rrdistill-int8"
        ),
        _quality_row(int8, st_torch, reference),
        *_speed_rows(
            "fp32 >= 1.3x sentence-transformers torch", fp32, st_torch, SPEEDUP_FP32, "rrdistill-fp32"
        ),
    ]
    for precision, system in (("fp32", fp32), ("int8", int8)):
        rows += _speed_rows(
            f"{precision} >= 1.5x FlashRank (same ONNX graph)",
            system,
            _find(systems, "flashrank", precision),
            SPEEDUP_FLASHRANK,
            f"rrdistill-{precision}",
        )
    for precision, system in (("fp32", fp32), ("int8", int8)):
        rows += _peak_rows(precision, system)
    return [row.to_json() for row in rows]
