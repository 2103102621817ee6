"""The pipeline's bench stage: the reference bundles against sentence-transformers and FlashRank.

A short ``rrdistill bench`` on the run's own reference model (same checkpoint, same machine, each
system in a fresh interpreter), so the report carries the speed ratios next to the quality
table. ``rrdistill bench`` with its defaults is the longer, more precise measurement.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.student_steps import _checkpoint_of


def run_bench(ctx: PipelineContext) -> dict[str, Any]:
    from rrdistill.bench.report import save_json
    from rrdistill.bench.runner import BenchConfig
    from rrdistill.bench.runner import run_bench as bench

    settings, layout = ctx.config.bench, ctx.layout
    bundles = {p: layout.bundle(f"{ctx.reference_name}-{p}") for p in ctx.config.export.precisions}
    config = BenchConfig(
        checkpoint=_checkpoint_of(layout.reference_dir),
        bundles=bundles,
        data=ctx.data,
        queries=settings.queries,
        batch_queries=min(32, settings.queries),
        repeats=settings.repeats,
        warmup=settings.warmup,
        import_repeats=settings.import_repeats,
        threads=ctx.config.threads,
        systems=settings.systems or None,
        work_dir=layout.root / "bench",
    )
    hook = ctx.progress("bench: the runtime against its peers")
    steps = iter(range(1, 10_000))
    payload = bench(config, progress=lambda message: hook(next(steps), 0))
    save_json(payload, layout.bench)
    return {
        s["name"]: round(s["vs_reference"]["speedup_single"], 2)
        for s in payload["systems"]
        if s.get("status") == "ok" and "speedup_single" in s.get("vs_reference", {})
    }


def bench_markdown(path: Path) -> str:
    """The bench's quality/speed table and its targets, as Markdown."""
    from rrdistill.bench.report import quality_speed_columns, quality_speed_rows, target_rows

    payload = json.loads(path.read_text(encoding="utf-8"))
    columns = quality_speed_columns(payload)
    lines = [
        f"{payload['data']['label']}; {payload['machine']['threads']} threads.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in quality_speed_rows(payload)),
        "",
        "| target | system | workload | measured | goal | verdict |",
        "|---|---|---|---|---|---|",
        *(
            "| " + " | ".join(re.sub(r"\[/?[a-z]*\]", "", cell) for cell in row) + " |"
            for row in target_rows(payload)
        ),
    ]
    failed = [s for s in payload["systems"] if s.get("status") != "ok"]
    lines += [f"- {s['name']}: {s.get('error', s.get('status'))}" for s in failed]
    return "\n".join(lines)
