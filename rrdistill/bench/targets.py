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


def _first(systems: Sequence[dict[str, Any]], kind: str, precision: str) -> dict[str, Any] | None:
    return next((s for s in systems if s.get("kind") == kind and s.get("precision") == precision), None)


def _ok(system: dict[str, Any] | None) -> bool:
    return system is not None and system.get("status") == "ok"


def _speed(
    target: str,
    system: dict[str, Any] | None,
    reference: dict[str, Any] | None,
    threshold: float,
    name: str,
) -> list[TargetResult]:
    rows = []
    for workload in WORKLOADS:
        measured = None
        note = ""
        if _ok(system) and _ok(reference):
            assert system is not None and reference is not None
            mine = system["workloads"][workload]["latency"]["docs_per_second"]
            theirs = reference["workloads"][workload]["latency"]["docs_per_second"]
            measured = mine / theirs
        else:
            note = "not measured: " + ", ".join(
                f"{label} {'missing' if s is None else s.get('status')}"
                for label, s in (("system", system), ("reference", reference))
                if not _ok(s)
            )
        met = _check(measured, threshold, ">=")
        if met is False:
            assert system is not None and reference is not None
            note = diagnosis(system, workload) + " | " + diagnosis(reference, workload)
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


def evaluate_targets(systems: Sequence[dict[str, Any]], reference: str | None) -> list[dict[str, Any]]:
    st_torch = next((s for s in systems if s.get("name") == "st-torch"), None)
    rows: list[TargetResult] = []
    int8 = _first(systems, "rrdistill", "int8")
    fp32 = _first(systems, "rrdistill", "fp32")
    rows += _speed("int8 >= 2.5x sentence-transformers torch", int8, st_torch, SPEEDUP_INT8, "rrdistill-int8")
    measured, note = None, "not measured"
    if _ok(int8) and _ok(st_torch) and reference == "st-torch":
        assert int8 is not None
        delta = int8["vs_reference"]["ndcg@10_delta"]
        measured = -delta["mean"] * 100
        note = (
            f"nDCG@10 {int8['quality']['ndcg@10']:.4f} vs {st_torch['quality']['ndcg@10']:.4f}; "  # type: ignore[index]
            f"95% CI of the change {delta['low'] * 100:+.2f} .. {delta['high'] * 100:+.2f} points "
            f"over {delta['queries']} queries"
        )
    rows.append(
        TargetResult(
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
    )
    rows += _speed("fp32 >= 1.3x sentence-transformers torch", fp32, st_torch, SPEEDUP_FP32, "rrdistill-fp32")
    for precision, system in (("fp32", fp32), ("int8", int8)):
        flashrank = _first(systems, "flashrank", precision)
        rows += _speed(
            f"{precision} >= 1.5x FlashRank (same ONNX graph)",
            system,
            flashrank,
            SPEEDUP_FLASHRANK,
            f"rrdistill-{precision}",
        )
    for precision, system in (("fp32", fp32), ("int8", int8)):
        for workload in WORKLOADS:
            measured, note = None, "not measured"
            if _ok(system):
                assert system is not None
                flops = system["workloads"][workload]["flops"]
                measured = flops["fraction_of_peak"]
                note = (
                    f"{flops['executed_gflops_per_second']:.1f} of {flops['peak_gflops_per_second']:.1f} "
                    f"G{'OP' if precision == 'int8' else 'FLOP'}/s"
                    if measured is not None
                    else "no GEMM peak measured"
                )
            met = _check(measured, MIN_PEAK_FRACTION, ">=")
            if met is False:
                assert system is not None
                note += " | " + diagnosis(system, workload)
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
    return [row.to_json() for row in rows]
