"""The cross-encoder student's layers and learning rate, chosen on the dev queries.

A layer-cut student must re-learn what its missing blocks did, and how fast it may move is the
setting that decides whether it learns or collapses (a learning rate that suits one cut and one
label set diverges on another). So the pipeline does not trust a fixed value: it distils every
candidate of ``cross_encoder.candidates``, lets each rerank the dev queries' BM25 top-k (queries no
model trained on), keeps the best by nDCG@10 and records every candidate's figure. Test queries
never see a candidate.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from rrdistill.io import atomic_writer
from rrdistill.pipeline.context import PipelineContext
from rrdistill.pipeline.heldout import Choice, dev_candidates, mean_ndcg_at_10

CHOSEN_FIELDS = ("layers", "learning_rate", "head_learning_rate")
"""What the report lists for the chosen student (the candidates may vary other fields too)."""


def candidate_settings(ctx: PipelineContext) -> list[dict[str, Any]]:
    """The candidates as complete override sets (``layers`` included), in config order."""
    settings = ctx.config.cross_encoder
    base = {"layers": settings.layers, **settings.overrides}
    return [{**base, **candidate} for candidate in settings.candidates]


def chosen_settings(ctx: PipelineContext) -> dict[str, Any]:
    """The student's settings: the dev choice when candidates were given, else the config's."""
    if ctx.config.cross_encoder.candidates:
        return dict(json.loads(ctx.layout.student_choice.read_text(encoding="utf-8"))["value"])
    return {"layers": ctx.config.cross_encoder.layers, **ctx.config.cross_encoder.overrides}


def choose_student(ctx: PipelineContext) -> dict[str, Any]:
    """Distil each candidate, score it on dev, keep the best (the others' checkpoints are dropped)."""
    from rrdistill.distill.students.cross_encoder import distill_cross_encoder
    from rrdistill.pipeline.student_steps import STUDENT, keep_only, student_config

    settings, layout = ctx.config.cross_encoder, ctx.layout
    run_dir = layout.model_dir(STUDENT)
    if not settings.candidates:
        config = student_config(ctx)
        trained = distill_cross_encoder(config, run_dir, progress=ctx.progress("distilling the student"))
        choice = Choice(
            {**chosen_settings(ctx), **_effective(config)}, settings.chosen_on, note=settings.chosen_note
        )
        scored: list[dict[str, Any]] = []
    else:
        requests, qrels = dev_candidates(ctx, "the student's settings")
        scored = []
        best = None
        for number, candidate in enumerate(candidate_settings(ctx), start=1):
            config = replace(student_config(ctx), **candidate)
            trained = distill_cross_encoder(
                config,
                run_dir,
                progress=ctx.progress(f"distilling student candidate {number}/{len(settings.candidates)}"),
            )
            ndcg = dev_ndcg(trained.path, requests, qrels, max_length=config.max_length)
            scored.append({"settings": candidate, "ndcg@10": round(ndcg, 4), "checkpoint": trained.path.name})
            if best is None or ndcg > best[0]:
                best = (ndcg, {**candidate, **_effective(config)}, trained)
        assert best is not None
        _, winner, trained = best
        choice = Choice(
            winner,
            "dev",
            [r.qid for r in requests],
            note=f"best nDCG@10 of {len(scored)} distilled candidates reranking the dev queries' "
            f"BM25 top-{ctx.config.dev.top_k} alone: "
            + "; ".join(f"{_describe(c['settings'])} → {c['ndcg@10']:.4f}" for c in scored),
            details={"candidates": scored},
        )
    keep_only(run_dir, trained.path)
    with atomic_writer(layout.student_choice) as handle:
        json.dump(choice.to_json(), handle, indent=2)
    return {
        "checkpoint": str(trained.path),
        "train_seconds": trained.info["timing"]["train_seconds"],
        "chosen": {k: v for k, v in choice.value.items() if k in CHOSEN_FIELDS},
        "candidates": [{**c["settings"], "ndcg@10": c["ndcg@10"]} for c in scored],
    }


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in settings.items()
        if k in CHOSEN_FIELDS
    )


def _effective(config: Any) -> dict[str, Any]:
    """The values the student trained with, defaults included (the report states them)."""
    return {name: getattr(config, name) for name in CHOSEN_FIELDS}


def dev_ndcg(
    checkpoint: Any, requests: list[Any], qrels: dict[str, dict[str, int]], *, max_length: int
) -> float:
    """Mean nDCG@10 of a trained checkpoint reranking `requests` (torch; before any export)."""
    from rrdistill.extras import require

    ce = require("sentence_transformers.cross_encoder", "train", "choosing the student on dev")
    model = ce.CrossEncoder(str(checkpoint), num_labels=1, max_length=max_length, device="cpu")
    pairs = [(r.query.text, c.passage.full_text()) for r in requests for c in r.candidates]
    scores = model.predict(pairs, batch_size=64, show_progress_bar=False)  # monotone: order as logits
    lists, start = [], 0
    for request in requests:
        end = start + len(request.candidates)
        lists.append((request.qid, request.docids, scores[start:end]))
        start = end
    return mean_ndcg_at_10(lists, qrels)
