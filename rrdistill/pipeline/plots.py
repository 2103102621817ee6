"""The report's plots: quality vs latency, per-query nDCG@10 deltas, the cascade curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rrdistill.extras import require
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.systems import SystemRecord

MARKERS = {
    "bm25": "s",
    "teacher": "*",
    "ensemble": "P",
    "cross-encoder": "o",
    "bi-encoder": "D",
    "listwise-lm": "^",
}


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "train", "the report's plots")
    matplotlib.use("Agg")  # files only: no display on a server
    return require("matplotlib.pyplot", "train", "the report's plots")


def quality_vs_latency(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        quality, latency = row["subset_ndcg@10"], row["latency_ms_per_query"]
        if quality is None or not latency:
            continue
        ax.scatter(latency, quality, marker=MARKERS.get(row["kind"], "o"), s=60)
        ax.annotate(row["system"], (latency, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    bm25 = next((r for r in rows if r["kind"] == "bm25"), None)
    if bm25 and bm25["subset_ndcg@10"] is not None:
        ax.axhline(bm25["subset_ndcg@10"], color="grey", linestyle="--", linewidth=1, label="BM25")
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms, log scale; this machine)")
    ax.set_ylabel("nDCG@10 on the shared subset")
    ax.set_title("Quality vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def per_query_deltas(records: list[SystemRecord], path: Path) -> Path:
    """Sorted per-query nDCG@10 change over BM25 of each cross-encoder on the full eval set.

    One curve per model: its fp32 row where that was scored, else the precision that was.
    """
    plt = _pyplot()
    bm25 = next(r for r in records if r.kind == "bm25")
    fig, ax = plt.subplots(figsize=(8, 5))
    shown: dict[str, SystemRecord] = {}
    for record in records:
        if record.kind in ("ensemble", "cross-encoder", "bi-encoder"):
            model = record.system.replace(f"-{record.precision}", "", 1)
            if model not in shown or record.precision == "fp32":
                shown[model] = record
    for record in shown.values():
        qids = [q for q in bm25.per_query if q in record.per_query]
        deltas = np.sort([record.per_query[q] - bm25.per_query[q] for q in qids])[::-1]
        ax.plot(np.arange(len(deltas)), deltas, label=f"{record.system} (mean {deltas.mean():+.3f})")
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("queries, sorted by change")
    ax.set_ylabel("nDCG@10 − BM25's nDCG@10")
    ax.set_title("Per-query change over BM25")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cascade_curves(cascade_file: Path, path: Path) -> Path:
    plt = _pyplot()
    data = json.loads(cascade_file.read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, curve in data["curves"].items():
        shares = [100 * p["share"] for p in curve["curve"]]
        left.plot(shares, [p["quality"] for p in curve["curve"]], marker="o", label=f"fast: {name}")
        right.plot(shares, [p["latency_ms"] for p in curve["curve"]], marker="o", label=f"fast: {name}")
        chosen = curve["chosen"]
        left.scatter([100 * chosen["share"]], [chosen["quality"]], s=120, facecolors="none", edgecolors="red")
    left.set_xlabel("queries escalated to reasoning (%)")
    left.set_ylabel("nDCG@10")
    right.set_xlabel("queries escalated to reasoning (%)")
    right.set_ylabel("mean ms/query")
    left.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("Cascade: quality and latency as the escalated share grows (red: picked threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(ctx: PipelineContext, records: list[SystemRecord], rows: list[dict[str, Any]]) -> list[Path]:
    folder = ctx.layout.plots
    folder.mkdir(parents=True, exist_ok=True)
    plots = [quality_vs_latency(rows, folder / "quality_vs_latency.png")]
    if any(r.kind == "bm25" for r in records):
        plots.append(per_query_deltas(records, folder / "per_query_ndcg_delta.png"))
    if ctx.layout.cascade.exists():
        plots.append(cascade_curves(ctx.layout.cascade, folder / "cascade.png"))
    return plots
