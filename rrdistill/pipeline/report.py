"""The run's report: one table of every system (JSON + Markdown) and its plots.

Rows are the :class:`~rrdistill.pipeline.systems.SystemRecord` files the stages wrote; their metrics
are not recomputed here. Only *fidelity* (each system's agreement with the labeller the students
learned from) is computed here, from the two run files, because it needs both. Every tuned value
is listed with the split it was chosen on (``choices``); the report refuses one chosen on the
evaluated queries. Systems are measured on different query sets (cross-encoders rerank every
evaluation query's top-k; generative systems a subset), so every row also carries its nDCG@10 on
the *shared subset*, the only column where all systems are compared on the same queries.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rrdistill.io import atomic_writer
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.systems import SystemRecord

ORDER = ("bm25", "teacher", "cross-encoder", "listwise-lm")


def load_records(ctx: PipelineContext) -> list[SystemRecord]:
    folder = ctx.layout.root / "eval"
    records = [SystemRecord.load(p) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: (ORDER.index(r.kind), r.system))


def _subset_ndcg(record: SystemRecord, subset: list[str]) -> float | None:
    if not all(q in record.per_query for q in subset):
        return None
    return float(np.mean([record.per_query[q] for q in subset])) if subset else None


def report_rows(ctx: PipelineContext, records: list[SystemRecord]) -> list[dict[str, Any]]:
    from rrdistill.io import read_requests

    subset = [r.qid for r in read_requests(ctx.layout.subset_requests)]
    subset = [q for q in subset if q in ctx.eval_qrels]
    # the trained teacher (its zero-shot and SFT rows are steps towards it)
    teacher = next((r for r in records if r.system == "teacher"), None)
    # which system labelled is a config setting (labels.labeller, fusion, reference name)
    labeller = next((r for r in records if r.system == ctx.labeller_system), None)
    rows = []
    for record in records:
        latency = record.latency_ms_per_query
        row: dict[str, Any] = {
            "system": record.system,
            "kind": record.kind,
            "mode": record.mode,
            "precision": record.precision,
            "ndcg@10": record.metrics["ndcg@10"],
            "recall@10": record.metrics["recall@10"],
            "latency_ms_per_query": latency,
            "bundle": record.bundle,
            "queries": record.queries,
            "depth": record.depth,
            "subset_ndcg@10": _subset_ndcg(record, subset),
            "size_bytes": record.size_bytes,
            "parity_max_abs_diff": (record.parity or {}).get("max_abs_diff"),
            "model": record.model,
            "trained_on": record.trained_on,
            "provenance": record.provenance,
            "roles": record.roles,
            **fidelity(record, labeller),
        }
        for name, anchor in (("teacher", teacher), ("labeller", labeller)):
            if anchor is None or anchor is record:
                continue
            mine, theirs = row["subset_ndcg@10"], _subset_ndcg(anchor, subset)
            if mine is not None and theirs:
                row[f"retention_vs_{name}"] = mine / theirs
            if latency and anchor.latency_ms_per_query:
                row[f"speedup_vs_{name}"] = anchor.latency_ms_per_query / latency
        rows.append(row)
    return rows


def _cell(value: Any, kind: str = "") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if kind == "x":
        return f"{value:.1f}×"
    if kind == "mb":
        return f"{value / 1e6:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


COLUMNS = [
    ("system", "system", ""),
    ("mode", "mode", ""),
    ("nDCG@10", "ndcg@10", ""),
    ("R@10", "recall@10", ""),
    ("queries × depth", None, ""),
    ("nDCG@10 (shared subset)", "subset_ndcg@10", ""),
    ("ms/query", "latency_ms_per_query", ""),
    ("MB", "size_bytes", "mb"),
    ("parity max|Δ|", "parity_max_abs_diff", ""),
    ("nDCG kept vs labeller", "retention_vs_labeller", "pct"),
    ("speed-up vs labeller", "speedup_vs_labeller", "x"),
    ("speed-up vs LLM teacher", "speedup_vs_teacher", "x"),
    ("τ vs labeller (top-10)", "fidelity_tau@10", ""),
    ("nDCG@10 vs labeller", "fidelity_ndcg@10", ""),
]

FIDELITY_K = 10
"""The labeller's top-k that fidelity compares (τ over it; its ranks graded k … 1 for nDCG)."""


def fidelity(record: SystemRecord, labeller: SystemRecord | None) -> dict[str, Any]:
    """Agreement of a system's ranking with the labeller's, over the queries both ranked.

    ``fidelity_tau@10``: mean Kendall τ-b between the labeller's top-10 order and the positions
    the system gives those passages; ``fidelity_ndcg@10``: mean nDCG@10 of the system's ranking
    with the labeller's rank r ≤ 10 as gain 11 − r. Queries where τ is undefined are skipped.
    """
    from rrdistill.io import read_run
    from rrdistill.metrics import ndcg_vs_reference, ranked_docids, topk_kendall_tau

    empty = {"fidelity_tau@10": None, "fidelity_ndcg@10": None, "fidelity_queries": 0}
    if labeller is None or record is labeller or not record.run_file or not labeller.run_file:
        return empty
    mine, theirs = read_run(record.run_file), read_run(labeller.run_file)
    shared = [q for q in theirs if q in mine]
    if not shared:
        return empty
    taus, ndcgs = [], []
    for qid in shared:
        reference, ranked = ranked_docids(theirs[qid]), ranked_docids(mine[qid])
        tau = topk_kendall_tau(reference, ranked, FIDELITY_K)
        if not np.isnan(tau):
            taus.append(tau)
        ndcgs.append(ndcg_vs_reference(reference, ranked, 10, FIDELITY_K))
    return {
        "fidelity_tau@10": float(np.mean(taus)) if taus else None,
        "fidelity_ndcg@10": float(np.mean(ndcgs)),
        "fidelity_queries": len(shared),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            f"{row['queries']} × {row['depth']}" if key is None else _cell(row.get(key), kind)
            for _, key, kind in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stage_lines(ctx: PipelineContext) -> list[str]:
    state_path = ctx.layout.root / "stages.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    lines = ["| stage | wall time (s) | finished |", "|---|---|---|"]
    for name, record in state.items():
        lines.append(f"| {name} | {record.get('seconds', 0):.1f} | {record.get('finished', '')} |")
    return lines


def _bench_lines(ctx: PipelineContext) -> list[str]:
    if not ctx.layout.bench.exists():
        return []
    from rrdistill.pipeline.bench_step import bench_markdown

    return ["## Speed against peers (`rrdistill bench`)", "", bench_markdown(ctx.layout.bench), ""]


def _cascade_lines(ctx: PipelineContext) -> list[str]:
    if not ctx.layout.cascade.exists():
        return []
    data = json.loads(ctx.layout.cascade.read_text())
    lines = [
        "## Cascade: fast first, reasoning for the unsure queries",
        "",
        f"The threshold is chosen on {len(data.get('calibrated_on', []))} dev queries and applied once to "
        f"the {len(data.get('evaluated_on', []))} evaluated queries (the `-auto` row).",
        "",
    ]
    for name, curve in data["curves"].items():
        chosen = curve["chosen"]
        lines += [
            f"Fast: **{name}**, reasoner: {curve['reasoner']}, calibrated on {curve['queries']} "
            f"{curve.get('split', 'dev')} queries. Picked threshold {chosen['threshold']:.4f}: "
            f"{100 * chosen['share']:.0f}% escalated, dev nDCG@10 {chosen['quality']:.4f}, "
            f"{chosen['latency_ms']:.1f} ms/query. (Curve below: dev queries.)",
            "",
            "| escalated | nDCG@10 | ms/query |",
            "|---|---|---|",
            *(
                f"| {100 * p['share']:.0f}% | {p['quality']:.4f} | {p['latency_ms']:.1f} |"
                for p in curve["curve"]
            ),
            "",
        ]
    return lines


def _choice_lines(choices: dict[str, dict[str, Any]], split: dict[str, Any]) -> list[str]:
    lines = [
        "## Where each tuned value was chosen",
        "",
        f"Dev split: {split['method']} ({len(split['dev'])} queries), removed from every training "
        f"stage; the evaluated `{split['evaluated_split']}` queries are scored once and choose nothing.",
        "",
        "| value | chosen | chosen on | queries | how |",
        "|---|---|---|---|---|",
    ]
    for name, choice in choices.items():
        lines.append(
            f"| {name} | {_cell(choice['value'])} | {choice['chosen_on']} | "
            f"{len(choice['queries']) or '–'} | {choice['note'] or '–'} |"
        )
    return [*lines, ""]


def write_report(ctx: PipelineContext) -> dict[str, Any]:
    from rrdistill.pipeline.heldout import gather_choices, split_info
    from rrdistill.pipeline.plots import write_plots

    records = load_records(ctx)
    rows = report_rows(ctx, records)
    choices = gather_choices(ctx)
    split = split_info(ctx)
    plots = write_plots(ctx, records, rows)
    payload: dict[str, Any] = {
        "config": ctx.config_snapshot(),
        "labeller": ctx.labeller_system,
        "splits": {
            "dev": {"method": split["method"], "queries": split["dev"]},
            "evaluated": {"split": split["evaluated_split"], "queries": sorted(ctx.eval_qrels)},
        },
        "choices": choices,
        "fidelity": {
            "against": ctx.labeller_system,
            "tau": f"Kendall tau-b over the labeller's top-{FIDELITY_K}; passages the system did not rank "
            "share the last position",
            "ndcg": f"nDCG@10 with the labeller's rank r <= {FIDELITY_K} as gain {FIDELITY_K + 1} - r",
        },
        "rows": rows,
        "plots": [str(p) for p in plots],
        "stages": json.loads((ctx.layout.root / "stages.json").read_text())
        if (ctx.layout.root / "stages.json").exists()
        else {},
    }
    for name, path in (("cascade", ctx.layout.cascade), ("bench", ctx.layout.bench)):
        if path.exists():
            payload[name] = json.loads(path.read_text())
    with atomic_writer(ctx.layout.report_json) as handle:
        json.dump(payload, handle, indent=2)
    markdown = [
        f"# rrdistill pipeline report: {ctx.layout.root.name}",
        "",
        f"Evaluation: {ctx.config.data} `{ctx.config.eval.split}`. Cross-encoders rerank BM25's top "
        f"{ctx.config.eval.top_k}; generative systems rerank the top {ctx.config.eval.generative_depth} of "
        f"the first {ctx.config.eval.generative_queries} queries (the shared subset) with a "
        f"{ctx.config.eval.window}/{ctx.config.eval.step} window. Latency: wall time per query on this "
        "machine, one query stream.",
        "",
        markdown_table(rows),
        "",
        f"Fidelity columns: agreement with the labeller `{ctx.labeller_system}` (from `labels.labeller`), "
        f"Kendall τ-b over its top {FIDELITY_K} and nDCG@10 with its rank r ≤ {FIDELITY_K} as gain "
        f"{FIDELITY_K + 1} − r.",
        "",
        *_choice_lines(choices, split),
        "## Which model produced each figure",
        "",
        "| system | model | trained on |",
        "|---|---|---|",
        *(f"| {r['system']} | {r['model']} | {r['trained_on']} |" for r in rows),
        "",
        *_cascade_lines(ctx),
        *_bench_lines(ctx),
        "## Stages",
        "",
        *_stage_lines(ctx),
        "",
        *(f"![{p.stem}](plots/{p.name})" for p in plots),
        "",
    ]
    with atomic_writer(ctx.layout.report_md) as handle:
        handle.write("\n".join(markdown))
    return {"rows": len(rows), "report": str(ctx.layout.report_md)}
