"""The run's report: one table of every system (JSON + Markdown) and its plots.

Rows are the :class:`~rrdistill.pipeline.systems.SystemRecord` files the stages wrote; their metrics
are not recomputed here. Only *fidelity* (each system's agreement with the labeller the students
learned from) is computed here, from the two run files, because it needs both. Every tuned value
is listed with the split it was chosen on (``choices``); the report refuses one chosen on the
evaluated queries. Systems are measured on different query sets (cross-encoders rerank every
evaluation query's top-k; generative systems a subset), so every row also carries its nDCG@10 on
the *shared subset*, the only column where all systems are compared on the same queries.

Rows are grouped by the collection they were judged on (``dataset``): the in-domain one first,
then each out-of-domain set. Every row carries its paired difference in nDCG@10 with BM25 and
with the qrels-only baseline of its precision, on the queries both ranked, with a bootstrap
interval: on a hundred queries a small difference is noise, and the interval says so.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rrdistill.io import atomic_writer
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.student_steps import BASELINE, BI_BASELINE
from rrdistill.pipeline.systems import SystemRecord

ORDER = ("bm25", "teacher", "ensemble", "cross-encoder", "bi-encoder", "listwise-lm")
CONFIDENCE = 0.95
"""Of the paired bootstrap intervals on Δ nDCG@10 (``vs_bm25``, ``vs_baseline``)."""


def load_records(ctx: PipelineContext) -> list[SystemRecord]:
    """The in-domain rows, then each out-of-domain set's (config order); by kind and name within each."""
    layout = ctx.layout
    folders = [layout.eval_dir(), *(layout.eval_dir(s.name) for s in ctx.config.out_of_domain)]
    records: list[SystemRecord] = []
    for folder in folders:
        group = [SystemRecord.load(p) for p in sorted(folder.glob("*.json"))]
        records += sorted(group, key=lambda r: (ORDER.index(r.kind), r.system))
    return records


def by_dataset(ctx: PipelineContext, records: list[SystemRecord]) -> dict[str, list[SystemRecord]]:
    """Records grouped by the collection they were judged on, the in-domain one first."""
    groups: dict[str, list[SystemRecord]] = {ctx.dataset: []}
    for record in records:
        groups.setdefault(record.dataset, []).append(record)
    return {name: group for name, group in groups.items() if group}


def _shared_queries(ctx: PipelineContext, dataset: str, records: list[SystemRecord]) -> list[str]:
    """In domain: the generative subset's judged queries. Out of domain: the queries every row ranks."""
    from rrdistill.io import read_requests

    if dataset == ctx.dataset:
        subset = [r.qid for r in read_requests(ctx.layout.subset_requests)]
        return [q for q in subset if q in ctx.eval_qrels]
    return [q for q in records[0].per_query if all(q in r.per_query for r in records)]


def paired_comparison(record: SystemRecord, anchor: SystemRecord | None) -> dict[str, Any] | None:
    """Δ nDCG@10 (record − anchor) over the queries both ranked, with a paired bootstrap interval."""
    from rrdistill.bench.stats import paired_delta_by_query

    if anchor is None or anchor is record:
        return None
    delta = paired_delta_by_query(record.per_query, anchor.per_query, confidence=CONFIDENCE)
    return None if delta is None else {"against": anchor.system, **delta.to_json()}


def baseline_of(record: SystemRecord, by_system: dict[str, SystemRecord]) -> SystemRecord | None:
    """The qrels-only baseline a row is compared with: its architecture and precision, fused with
    BM25 when the row is (bi-encoder students against the bi-encoder baseline)."""
    if record.precision is None or record.kind not in ("cross-encoder", "bi-encoder"):
        return None
    fused = "+bm25" if record.system.endswith("+bm25") else ""
    baseline = BI_BASELINE if record.kind == "bi-encoder" else BASELINE
    return by_system.get(f"{baseline}-{record.precision}{fused}")


def _subset_ndcg(record: SystemRecord, subset: list[str]) -> float | None:
    if not all(q in record.per_query for q in subset):
        return None
    return float(np.mean([record.per_query[q] for q in subset])) if subset else None


def report_rows(ctx: PipelineContext, records: list[SystemRecord]) -> list[dict[str, Any]]:
    """One row per record, each compared with the anchors of its own collection (``dataset``)."""
    rows: list[dict[str, Any]] = []
    for dataset, group in by_dataset(ctx, records).items():
        rows += _dataset_rows(ctx, group, _shared_queries(ctx, dataset, group))
    return rows


def _dataset_rows(
    ctx: PipelineContext, records: list[SystemRecord], subset: list[str]
) -> list[dict[str, Any]]:
    """The rows of one collection: its own BM25, baseline, labeller and teacher are the anchors."""
    by_system = {r.system: r for r in records}
    bm25 = next((r for r in records if r.kind == "bm25"), None)
    # the trained teacher (its zero-shot and SFT rows are steps towards it)
    teacher = next((r for r in records if r.system == "teacher"), None)
    # which system labelled is a config setting (labels.labeller, fusion, reference name)
    labeller = next((r for r in records if r.system == ctx.labeller_system), None)
    rows = []
    for record in records:
        latency = record.latency_ms_per_query
        row: dict[str, Any] = {
            "system": record.system,
            "dataset": record.dataset,
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
            "run_file": record.run_file,
            **fidelity(record, labeller),
            "vs_bm25": paired_comparison(record, bm25),
            "vs_baseline": paired_comparison(record, baseline_of(record, by_system)),
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
    if kind == "delta":
        return f"{value['mean']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"
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
    (f"Δ nDCG@10 vs BM25 [{CONFIDENCE:.0%} CI]", "vs_bm25", "delta"),
    (f"Δ nDCG@10 vs baseline [{CONFIDENCE:.0%} CI]", "vs_baseline", "delta"),
]

OUT_OF_DOMAIN_COLUMNS = [
    c
    for c in COLUMNS
    if c[1] not in ("mode", "subset_ndcg@10", "size_bytes", "parity_max_abs_diff", "speedup_vs_teacher")
]
"""Only scoring rerankers (cross-encoders, bi-encoders, the labeller's mix) and BM25 are judged out of
domain, every one on all of the set's queries."""

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


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str | None, str]] = COLUMNS) -> str:
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            f"{row['queries']} × {row['depth']}" if key is None else _cell(row.get(key), kind)
            for _, key, kind in columns
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


def _out_of_domain_splits(ctx: PipelineContext) -> dict[str, Any]:
    """Each out-of-domain set's source and judged queries (report.json ``splits``)."""
    from rrdistill.io import read_requests

    splits = {}
    for settings in ctx.config.out_of_domain:
        requests = ctx.layout.ood_requests(settings.name)
        qids = [r.qid for r in read_requests(requests)] if requests.exists() else []
        splits[settings.name] = {"data": settings.data, "split": settings.split, "queries": qids}
    return splits


def _out_of_domain_lines(ctx: PipelineContext, rows: list[dict[str, Any]]) -> list[str]:
    """One table per out-of-domain set, after the in-domain one."""
    from rrdistill.pipeline.heldout import fusion_weight

    if not ctx.config.out_of_domain:
        return []
    weight = fusion_weight(ctx)
    fused = f"; `+bm25` rows fuse with w={weight}, chosen on {ctx.dataset} dev" if weight is not None else ""
    lines: list[str] = []
    for settings in ctx.config.out_of_domain:
        mine = [r for r in rows if r["dataset"] == settings.name]
        if not mine:
            continue
        first_stage = _first_stage(ctx, settings.name)
        lines += [
            f"### {settings.name} (out of domain)",
            "",
            f"`{settings.data}` `{settings.split}`, {mine[0]['queries']} judged queries, {first_stage}. "
            f"No stage trains or tunes on it{fused}.",
            "",
            markdown_table(mine, OUT_OF_DOMAIN_COLUMNS),
            "",
        ]
    return lines


def _first_stage(ctx: PipelineContext, name: str) -> str:
    """How an out-of-domain set's candidates were drawn, as its BM25 row records it."""
    path = ctx.layout.system_file("bm25", name)
    notes = SystemRecord.load(path).notes if path.exists() else {}
    return str(notes.get("first_stage", "BM25 candidates"))


def write_report(ctx: PipelineContext) -> dict[str, Any]:
    from rrdistill.pipeline.heldout import gather_choices, split_info
    from rrdistill.pipeline.plots import write_plots

    records = load_records(ctx)
    rows = report_rows(ctx, records)
    choices = gather_choices(ctx)
    split = split_info(ctx)
    in_domain = [r for r in rows if r["dataset"] == ctx.dataset]
    plots = write_plots(ctx, [r for r in records if r.dataset == ctx.dataset], in_domain)
    payload: dict[str, Any] = {
        "config": ctx.config_snapshot(),
        "labeller": ctx.labeller_system,
        "splits": {
            "dev": {"method": split["method"], "queries": split["dev"]},
            "evaluated": {"split": split["evaluated_split"], "queries": sorted(ctx.eval_qrels)},
            "out_of_domain": _out_of_domain_splits(ctx),
        },
        "comparisons": {
            "vs_bm25": "mean per-query nDCG@10 difference with BM25's row of the same collection",
            "vs_baseline": f"the same with the qrels-only baseline ({BASELINE}-<precision>, fused when the "
            "row is)",
            "interval": f"{CONFIDENCE:.0%} percentile bootstrap over the queries both ranked (paired)",
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
        f"### {ctx.dataset} (in domain)",
        "",
        markdown_table(in_domain),
        "",
        f"Fidelity columns: agreement with the labeller `{ctx.labeller_system}` (from `labels.labeller`), "
        f"Kendall τ-b over its top {FIDELITY_K} and nDCG@10 with its rank r ≤ {FIDELITY_K} as gain "
        f"{FIDELITY_K + 1} − r. Δ columns: mean per-query difference in nDCG@10 with BM25 and with the "
        f"qrels-only baseline of the row's precision (`+bm25` rows: the fused baseline), on the queries "
        f"both ranked, with a {CONFIDENCE:.0%} paired bootstrap interval.",
        "",
        *_out_of_domain_lines(ctx, rows),
        *_choice_lines(choices, split),
        "## Which model produced each figure",
        "",
        "| system | model | trained on |",
        "|---|---|---|",
        *(  # one line per system: its rows on the other collections name the same model
            f"| {r['system']} | {r['model']} | {r['trained_on']} |"
            for i, r in enumerate(rows)
            if r["system"] not in {earlier["system"] for earlier in rows[:i]}
        ),
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
