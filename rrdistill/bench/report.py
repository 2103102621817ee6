"""The benchmark report on the console (rich tables) and as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from rrdistill.reporting import console, table, write_json

WIDE = 220
"""Columns when the output is not a terminal (a log file): the tables are wide, and rich would
otherwise fold them into 80 columns."""


def _console() -> Console:
    return console if console.is_terminal else Console(stderr=True, width=max(console.width, WIDE))


def _f(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}{suffix}"


def _ok(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [s for s in payload["systems"] if s["status"] == "ok"]


def quality_speed_columns(payload: Mapping[str, Any]) -> list[str]:
    """The header of :func:`quality_speed_rows` (one definition: the console and the pipeline report share it)."""
    return [
        "system",
        "nDCG@10",
        f"Δ vs {payload['reference']} (pts, 95% CI)",
        "1q docs/s",
        "1q min ms",
        "1q p50 ms",
        "1q p99 ms",
        "batch docs/s",
        "batch p50 s",
        "batch p99 s",
        "× ref (1q / batch)",
    ]


def quality_speed_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    rows = [
        ["bm25 (first stage)", f"{payload['bm25']['ndcg@10']:.4f}", *[""] * 9],
    ]
    for s in _ok(payload):
        single, batch = s["workloads"]["single"]["latency"], s["workloads"]["batch"]["latency"]
        comparison = s.get("vs_reference", {})
        delta = comparison.get("ndcg@10_delta")
        delta_text = (
            f"{delta['mean'] * 100:+.2f} [{delta['low'] * 100:+.2f}, {delta['high'] * 100:+.2f}]"
            if delta and s["name"] != payload["reference"]
            else ("reference" if s["name"] == payload["reference"] else "-")
        )
        speedups = (
            f"{comparison['speedup_single']:.2f} / {comparison['speedup_batch']:.2f}"
            if "speedup_single" in comparison
            else "-"
        )
        rows.append(
            [
                s["name"],
                f"{s['quality']['ndcg@10']:.4f}",
                delta_text,
                _f(single["docs_per_second"]),
                _f(single["min"], 1, 1e3),
                _f(single["p50"], 1, 1e3),
                _f(single["p99"], 1, 1e3),
                _f(batch["docs_per_second"]),
                _f(batch["p50"], 2),
                _f(batch["p99"], 2),
                speedups,
            ]
        )
    return rows


def cost_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for s in _ok(payload):
        rss = s["rss_mb"]
        rows.append(
            [
                s["name"],
                s["description"],
                _f(s["import_seconds"], 2),
                _f(s["load_seconds"], 2),
                _f(rss["after_import"], 0),
                _f(rss["after_load"], 0),
                _f(rss["peak"], 0),
            ]
        )
    return rows


def compute_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for s in _ok(payload):
        for data in s["workloads"].values():
            parts, flops, tokens = data["breakdown"], data["flops"], data["tokens"]
            rows.append(
                [
                    s["name"],
                    data["label"],
                    _f(parts["tokenize_share"], 0, 100, "%"),
                    _f(parts["model_share"], 0, 100, "%"),
                    _f(parts["other_share"], 0, 100, "%"),
                    str(parts["model_calls"]),
                    _f(tokens["padding_efficiency"], 0, 100, "%"),
                    _f(flops["useful_gflops_per_second"]),
                    _f(flops["executed_gflops_per_second"]),
                    _f(flops["fraction_of_peak"], 0, 100, "%"),
                    _f(flops["model_only_fraction_of_peak"], 0, 100, "%"),
                ]
            )
    return rows


def operator_rows(payload: Mapping[str, Any], top: int = 6) -> list[list[str]]:
    rows = []
    for s in _ok(payload):
        profile = s.get("op_profile")
        if not profile or not profile["kernel_seconds"]:
            continue
        total = profile["kernel_seconds"]
        operators = list(profile["operators"].items())
        shown = operators[:top]
        rest = sum(seconds for _, seconds in operators[top:])
        parts = [f"{op} {seconds / total:.0%}" for op, seconds in shown]
        if rest:
            parts.append(f"others {rest / total:.0%}")
        rows.append([s["name"], f"{profile['model_run_seconds'] * 1e3:,.0f}", ", ".join(parts)])
    return rows


def gemm_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            p["engine"],
            p["dtype"],
            f"{p['m']}x{p['k']}x{p['n']}" + ("" if p["square"] else " (the model's FFN)"),
            _f(p["gflops"]),
        ]
        for p in payload["gemm"]["peaks"]
    ]


def _measured(t: Mapping[str, Any]) -> str:
    if "GEMM peak" in t["target"]:
        return _f(t["measured"], 0, 100, "%")
    if "RSS" in t["target"]:
        return _f(t["measured"], 0, 1, " MB")
    return _f(t["measured"], 2, 1, "" if "nDCG" in t["target"] else "x")


def _verdict(met: bool | None) -> str:
    return {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[yellow]n/a[/]"}[met]


def target_rows(payload: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for t in payload["targets"]:
        is_fraction = "GEMM peak" in t["target"]
        measured = _measured(t)
        threshold = _f(t["threshold"], 0, 100, "%") if is_fraction else f"{t['threshold']:g}"
        verdict = _verdict(t["met"])
        rows.append(
            [
                t["target"],
                t["system"],
                t["workload"] or "all",
                measured,
                f"{t['comparison']} {threshold}",
                verdict,
            ]
        )
    return rows


def print_report(payload: Mapping[str, Any]) -> None:
    out = _console()

    def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
        out.print(table(title, columns, rows))

    machine = payload["machine"]
    threads = f"{machine['threads']} thread{'' if machine['threads'] == 1 else 's'}"
    context = f"{payload['data']['label']}; {threads} on {machine['cpu'] or 'this CPU'}"
    print_table(
        f"rerankers side by side — {context}",
        quality_speed_columns(payload),
        quality_speed_rows(payload),
    )
    print_table(
        "start-up and memory (each system in a fresh interpreter)",
        ["system", "what", "import s", "load s", "RSS import MB", "RSS load MB", "peak RSS MB"],
        cost_rows(payload),
    )
    print_table(
        "where the time goes; FLOP/s from the model config (executed = padded shapes)",
        [
            "system",
            "workload",
            "tokenize",
            "model",
            "other",
            "model calls",
            "padding eff.",
            "useful GFLOP/s",
            "executed GFLOP/s",
            "of peak",
            "model-only of peak",
        ],
        compute_rows(payload),
    )
    operators = operator_rows(payload)
    if operators:
        print_table(
            "model time by operator (one 1-query call, onnxruntime profiler)",
            ["system", "model ms", "share of kernel time"],
            operators,
        )
    if payload["gemm"]["peaks"]:
        print_table(
            "GEMM rates of this machine (same threads); the best of each precision is its peak",
            ["engine", "dtype", "M x K x N", "G(FL)OP/s"],
            gemm_rows(payload),
        )
    else:
        out.print(f"[yellow]GEMM peak not measured: {payload['gemm'].get('error')}[/]")
    print_table(
        "targets", ["target", "system", "workload", "measured", "target", "verdict"], target_rows(payload)
    )
    for t in payload["targets"]:
        if t["met"] is False and t["note"]:
            out.print(
                f"[red]missed[/] {t['target']} ({t['workload'] or 'all'}): {t['note']}", highlight=False
            )
    for s in payload["systems"]:
        if s["status"] != "ok":
            out.print(f"[bold red]{s['name']} did not run:[/] {s['error']}", highlight=False, soft_wrap=True)


def save_json(payload: Mapping[str, Any], path: str | Path) -> None:
    write_json(path, payload)


SWEEP_SCHEMA = "rrdistill-bench-sweep/1"


def sweep_payload(payloads: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One JSON for a run at several thread counts: each count's full report, and every target
    with its thread count (the table :func:`print_sweep_targets` prints)."""
    return {
        "schema": SWEEP_SCHEMA,
        "threads": [p["config"]["threads"] for p in payloads],
        "runs": list(payloads),
        "targets": [{**t, "threads": p["config"]["threads"]} for p in payloads for t in p["targets"]],
    }


def print_sweep_targets(payloads: list[Mapping[str, Any]]) -> None:
    """Every target at every thread count, side by side."""
    counts = [p["config"]["threads"] for p in payloads]
    by_count = [{(t["target"], t["workload"]): t for t in p["targets"]} for p in payloads]
    rows = []
    for t in payloads[0]["targets"]:
        key = (t["target"], t["workload"])
        cells = []
        for found in by_count:
            other = found.get(key)
            cells.append("-" if other is None else f"{_measured(other)} {_verdict(other['met'])}")
        rows.append([t["target"], t["workload"] or "all", *cells])
    _console().print(
        table(
            "targets at each thread count",
            ["target", "workload", *[f"{n} thread{'' if n == 1 else 's'}" for n in counts]],
            rows,
        )
    )
