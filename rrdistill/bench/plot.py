"""The quality-vs-latency picture: nDCG@10 against one query's latency and against batch throughput."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrdistill.extras import require
from rrdistill.io import atomic_writer

COLOURS = {"rrdistill": "tab:blue", "st-torch": "tab:red", "st-onnx": "tab:orange", "flashrank": "tab:green"}


def _label_offsets(points: Sequence[tuple[float, float]], span: float) -> list[int]:
    """Vertical label offsets (points) so that labels of near-coincident markers do not overlap:
    markers closer than 4 % of the y span and 30 % in x (a log axis) stack their labels."""
    offsets = []
    for i, (x, y) in enumerate(points):
        near = sum(
            1 for (u, v) in points[:i] if abs(v - y) < 0.04 * span and max(u, x) / max(min(u, x), 1e-12) < 1.3
        )
        offsets.append(3 + 9 * near)
    return offsets


def plot_quality_latency(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Left: nDCG@10 vs p50 latency of one query (bar to p99); right: vs docs/s of the batch
    workload. Circles fp32, squares int8; BM25 (the first stage) as the dashed floor."""
    matplotlib = require("matplotlib", "bench", "the quality-vs-latency plot")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "bench", "the quality-vs-latency plot")
    ticker = require("matplotlib.ticker", "bench", "the quality-vs-latency plot")
    systems = [s for s in payload["systems"] if s["status"] == "ok"]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 5), dpi=120, sharey=True)
    latency_points = [
        (s["workloads"]["single"]["latency"]["p50"] * 1e3, s["quality"]["ndcg@10"]) for s in systems
    ]
    rate_points = [
        (s["workloads"]["batch"]["latency"]["docs_per_second"], s["quality"]["ndcg@10"]) for s in systems
    ]
    heights = [y for _, y in latency_points] + [payload["bm25"]["ndcg@10"]]
    span = max(max(heights) - min(heights), 0.01)
    for axes, points in ((left, latency_points), (right, rate_points)):
        for system, (x, y), dy in zip(systems, points, _label_offsets(points, span), strict=True):
            colour = COLOURS.get(system["kind"], "tab:gray")
            marker = "s" if system["precision"] == "int8" else "o"
            if axes is left:
                p99 = system["workloads"]["single"]["latency"]["p99"] * 1e3
                axes.errorbar(
                    [x], [y], xerr=[[0.0], [max(p99 - x, 0.0)]], fmt=marker, color=colour, capsize=3
                )
            else:
                axes.plot([x], [y], marker, color=colour)
            axes.annotate(system["name"], (x, y), textcoords="offset points", xytext=(6, dy), fontsize=8)
        axes.axhline(payload["bm25"]["ndcg@10"], color="gray", linestyle="--", linewidth=1, label="BM25")
        axes.set_xscale("log")
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
        axes.tick_params(axis="x", which="minor", labelsize=7)
        axes.grid(True, which="both", alpha=0.3)
    workloads = {w: systems[0]["workloads"][w]["label"] for w in ("single", "batch")} if systems else {}
    left.set_xlabel(f"latency, ms ({workloads.get('single', '1 query')}; p50, bar to p99) — lower is better")
    right.set_xlabel(f"docs/s ({workloads.get('batch', 'batch')}) — higher is better")
    left.set_ylabel("nDCG@10")
    left.legend(loc="best", fontsize=8)
    machine = payload["machine"]
    figure.suptitle(
        f"{payload['data']['label']} — {machine['threads']} thread{'' if machine['threads'] == 1 else 's'}, "
        f"{machine['cpu'] or 'CPU'}",
        fontsize=10,
    )
    figure.tight_layout()
    with atomic_writer(path, "wb") as handle:
        figure.savefig(handle, format="png")
    pyplot.close(figure)
    return Path(path)
