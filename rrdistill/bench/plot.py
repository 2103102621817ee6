"""The quality-vs-latency picture: nDCG@10 against the p50 latency of one query's reranking."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrdistill.extras import require
from rrdistill.io import atomic_writer


def plot_quality_latency(payload: Mapping[str, Any], path: str | Path) -> Path:
    """One point per system (p50, with a bar to p99), BM25 as the floor; written as PNG."""
    matplotlib = require("matplotlib", "bench", "the quality-vs-latency plot")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "bench", "the quality-vs-latency plot")
    systems = [s for s in payload["systems"] if s["status"] == "ok"]
    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=120)
    families = {
        "rrdistill": "tab:blue",
        "st-torch": "tab:red",
        "st-onnx": "tab:orange",
        "flashrank": "tab:green",
    }
    for system in systems:
        latency = system["workloads"]["single"]["latency"]
        p50, p99 = latency["p50"] * 1e3, latency["p99"] * 1e3
        ndcg = system["quality"]["ndcg@10"]
        marker = "s" if system["precision"] == "int8" else "o"
        axes.errorbar(
            [p50],
            [ndcg],
            xerr=[[0.0], [max(p99 - p50, 0.0)]],
            fmt=marker,
            color=families.get(system["kind"], "tab:gray"),
            capsize=3,
        )
        axes.annotate(system["name"], (p50, ndcg), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.axhline(payload["bm25"]["ndcg@10"], color="gray", linestyle="--", linewidth=1)
    axes.annotate(
        "BM25",
        (axes.get_xlim()[0], payload["bm25"]["ndcg@10"]),
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=8,
    )
    machine = payload["machine"]
    axes.set_xlabel(f"latency of 1 query x {payload['config']['passages']} passages, ms (p50, bar to p99)")
    axes.set_ylabel("nDCG@10")
    axes.set_title(
        f"{payload['data']['label']} — {machine['threads']} threads, {machine['cpu'] or 'CPU'}", fontsize=9
    )
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_writer(path, "wb") as handle:
        figure.savefig(handle, format="png")
    pyplot.close(figure)
    return Path(path)
