"""The dev split and every value chosen on it, so that test queries are scored once and choose nothing.

A figure tuned on the queries it is reported on is optimistic by construction. The pipeline
carves a dev split out of the labelling (train) split before anything trains on it, writes a
run-local BEIR folder without those queries in the training split, and chooses each tuned value
(fusion weight, cascade threshold) on dev. Values fixed in the config are recorded as such, with
the provenance the config gives them; the report lists every choice and the queries it was
chosen on, and refuses a choice made on evaluated queries.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rrdistill.io import atomic_writer, read_requests
from rrdistill.pipeline.context import PipelineContext

DEV_SPLIT = "dev"
CHOSEN_ON = ("dev", "config")
"""``chosen_on`` values the pipeline itself writes; a config may state another provenance
(e.g. ``fixed (prior sweep)``) for values it fixes, but never the evaluated split."""


class LeakError(ValueError):
    """A value was chosen on queries that are also evaluated (or trained on)."""


@dataclass
class Choice:
    """One tuned value and where it came from."""

    value: Any
    chosen_on: str
    """``dev`` (chosen here on the dev queries), ``config`` (given), or the provenance the config
    states for a fixed value (e.g. ``fixed (prior sweep)``)."""
    queries: list[str] = field(default_factory=list)
    """The queries the value was chosen (or measured) on; empty for a given value."""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def carve_dev(qids: Iterable[str], count: int, salt: str) -> list[str]:
    """The first `count` of `qids` ordered by sha256(salt:qid): deterministic, order-independent."""
    pool = sorted(set(qids), key=lambda q: hashlib.sha256(f"{salt}:{q}".encode()).hexdigest())
    if count < 1 or count >= len(pool):
        raise ValueError(f"dev.queries must be between 1 and {len(pool) - 1} (the split has {len(pool)})")
    return pool[:count]


def check_disjoint(what: str, chosen_on: Sequence[str], evaluated: Sequence[str]) -> None:
    """Raise when a value was chosen on queries it is then scored on."""
    shared = sorted(set(chosen_on) & set(evaluated))
    if shared:
        raise LeakError(
            f"{what} was chosen on {len(shared)} evaluated queries ({', '.join(shared[:5])}…): "
            "choose on the dev split only"
        )


def _qrels_lines(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(header, [(qid, line)]) of a BEIR qrels TSV, lines kept verbatim."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0] if lines and lines[0].lower().startswith("query-id") else ""
    body = lines[1:] if header else lines
    return header, [(line.split("\t", 1)[0].strip(), line) for line in body if line.strip()]


def write_split(ctx: PipelineContext) -> dict[str, Any]:
    """The run's BEIR folder: the labelling split minus the dev queries, the dev split, the evaluated split.

    Training stages read this folder, so no model sees a dev query; evaluation reads the original
    data, whose evaluated split is copied unchanged.
    """
    from rrdistill.io import read_qrels

    config, layout = ctx.config, ctx.layout
    train, test = config.labels.split, config.eval.split
    if train == test or DEV_SPLIT in (train, test):
        raise ValueError(
            f"labels.split ({train!r}) and eval.split ({test!r}) must differ and not be {DEV_SPLIT!r}: "
            "the dev split is carved from the labelling split"
        )
    source = ctx.data / "qrels" / f"{train}.tsv"
    judged = [q for q, grades in read_qrels(source).items() if any(g > 0 for g in grades.values())]
    dev = carve_dev(judged, config.dev.queries, config.dev.salt)
    evaluated = list(ctx.eval_qrels)
    check_disjoint("the dev split", dev, evaluated)
    view = layout.data_view
    shutil.rmtree(view, ignore_errors=True)
    (view / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copyfile(ctx.data / name, view / name)
    shutil.copyfile(ctx.data / "qrels" / f"{test}.tsv", view / "qrels" / f"{test}.tsv")
    header, rows = _qrels_lines(source)
    held = set(dev)
    for split, keep in ((train, lambda q: q not in held), (DEV_SPLIT, lambda q: q in held)):
        text = "\n".join([header] * bool(header) + [line for qid, line in rows if keep(qid)]) + "\n"
        (view / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    remaining = sorted({qid for qid, _ in rows} - held)
    with atomic_writer(layout.split_file) as handle:
        json.dump(
            {
                "dev": dev,
                "dev_from": train,
                "method": f"first {len(dev)} judged {train} queries by sha256('{config.dev.salt}:' + qid)",
                "train": remaining,
                "evaluated_split": test,
            },
            handle,
            indent=2,
        )
    return {"dev": len(dev), "train": len(remaining)}


def split_info(ctx: PipelineContext) -> dict[str, Any]:
    return json.loads(ctx.layout.split_file.read_text(encoding="utf-8"))


def dev_qids(ctx: PipelineContext) -> list[str]:
    return list(split_info(ctx)["dev"])


def fusion_weight(ctx: PipelineContext) -> float | None:
    """The fusion weight the labeller and the fused rows use: chosen on dev, or the config's."""
    if ctx.config.labels.fusion is None or not ctx.config.labels.fusion_grid:
        return ctx.config.labels.fusion
    return float(json.loads(ctx.layout.fusion_choice.read_text(encoding="utf-8"))["value"])


def dev_candidates(ctx: PipelineContext, what: str) -> tuple[list[Any], dict[str, dict[str, int]]]:
    """The dev queries' BM25 candidates and their qrels, checked to hold dev queries only."""
    from rrdistill.io import read_beir

    requests = list(read_requests(ctx.layout.dev_requests))
    outside = {r.qid for r in requests} - set(dev_qids(ctx))
    if outside:
        raise LeakError(f"dev requests hold queries outside the dev split: {sorted(outside)[:5]}")
    check_disjoint(what, [r.qid for r in requests], list(ctx.eval_qrels))
    return requests, read_beir(ctx.layout.data_view, DEV_SPLIT).qrels


def ndcg_at_10_by_query(
    lists: Iterable[tuple[str, Sequence[str], Sequence[float]]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    """nDCG@10 of each (qid, docids, scores) list ranked by score, ties kept in list order."""
    from rrdistill.metrics import ndcg_at_k

    out = {}
    for qid, docids, scores in lists:
        order = sorted(range(len(docids)), key=lambda i: (-float(scores[i]), i))
        out[qid] = ndcg_at_k([docids[i] for i in order], qrels.get(qid, {}), 10)
    return out


def mean_ndcg_at_10(
    lists: Iterable[tuple[str, Sequence[str], Sequence[float]]], qrels: dict[str, dict[str, int]]
) -> float:
    """Mean nDCG@10 of (qid, docids, scores) lists ranked by score, ties kept in list order."""
    values = list(ndcg_at_10_by_query(lists, qrels).values())
    return sum(values) / max(len(values), 1)


def choose_fusion(ctx: PipelineContext) -> dict[str, Any]:
    """The labeller's fusion weight: best nDCG@10 on the dev queries over ``labels.fusion_grid``.

    The reference bundle (trained without the dev queries) reranks the dev queries' BM25 top-k
    once; every weight of the grid re-fuses those scores, so the grid costs one rerank. With
    ``labels.dense`` the bi-encoder scores them too, its mix weight is chosen first (the mix alone),
    and the fusion weight is searched on that mix.
    """
    from rrdistill.distill.students.label import bundle_reranker
    from rrdistill.fusion import interpolate
    from rrdistill.pipeline import dense

    config, layout = ctx.config, ctx.layout
    settings = config.labels
    grid = [float(w) for w in settings.fusion_grid]
    needs_dev = settings.dense is not None or (settings.fusion is not None and bool(grid))
    details: dict[str, Any] = {}
    if needs_dev:
        requests, qrels = dev_candidates(ctx, "the fusion weight")
        docids = [[c.docid for c in r.candidates] for r in requests]
        bm25 = [[float(c.score) for c in r.candidates] for r in requests]  # type: ignore[arg-type]
        reranker = bundle_reranker(ctx.labeller_bundle, threads=config.threads)
        ranker = dense.aligned_scores(requests, reranker(requests))

        def dev_ndcg(scores: list[Any]) -> float:
            return mean_ndcg_at_10(
                ((r.qid, d, s) for r, d, s in zip(requests, docids, scores, strict=True)), qrels
            )

        if settings.dense is not None:
            bi = dense.scorer(ctx).scores(requests)
            candidates = {
                a: [dense.mixed(ce, b, a) for ce, b in zip(ranker, bi, strict=True)]
                for a in settings.dense_grid
            }
            mixes = {a: dev_ndcg(scores) for a, scores in candidates.items()}
            share = max(settings.dense_grid, key=lambda a: (mixes[a], a))
            ranker = candidates[share]
            details["dense"] = {
                "model": dense.dense_system(ctx),
                "max_length": settings.dense_max_length,
                "weight": share,
                "note": "the reference's share a of a·z(reference) + (1−a)·z(cosine): best nDCG@10 of the "
                "mix alone on the dev queries (ties: the larger a)",
                "ndcg@10": {str(a): round(v, 4) for a, v in mixes.items()},
            }
    if settings.fusion is None or not grid:
        choice = Choice(
            settings.fusion, "config", note="labels.fusion as given (no fusion_grid)", details=details
        )
    else:
        scores = {
            w: dev_ndcg([interpolate(b, r, w) for b, r in zip(bm25, ranker, strict=True)]) for w in grid
        }
        best = max(grid, key=lambda w: (scores[w], -grid.index(w)))
        what = "the reference" + (" mixed with the bi-encoder" if settings.dense is not None else "")
        choice = Choice(
            best,
            "dev",
            [r.qid for r in requests],
            note=f"best nDCG@10 of {what} fused with BM25 on the dev queries' BM25 top-{config.dev.top_k}",
            details={"ndcg@10": {str(w): round(v, 4) for w, v in scores.items()}, **details},
        )
    with atomic_writer(layout.fusion_choice) as handle:
        json.dump(choice.to_json(), handle, indent=2)
    summary = {"weight": choice.value, "chosen_on": choice.chosen_on}
    if "dense" in details:
        summary["dense_weight"] = details["dense"]["weight"]
    return summary


def gather_choices(ctx: PipelineContext) -> dict[str, dict[str, Any]]:
    """Every tuned value of the run with the split it was chosen on (for report.json's ``choices``)."""
    config, layout = ctx.config, ctx.layout
    evaluated = list(ctx.eval_qrels)
    choices: dict[str, Choice] = {}
    if layout.fusion_choice.exists():
        fusion = Choice(**json.loads(layout.fusion_choice.read_text(encoding="utf-8")))
        choices["fusion_weight"] = fusion
        if "dense" in fusion.details:  # the bi-encoder's mix weight, chosen on every dev query
            mix = fusion.details["dense"]
            choices["dense_weight"] = Choice(
                mix["weight"],
                "dev",
                [r.qid for r in read_requests(layout.dev_requests)],
                note=mix["note"],
                details={"model": mix["model"], "ndcg@10": mix["ndcg@10"]},
            )
    if layout.cascade.exists():
        cascade = json.loads(layout.cascade.read_text(encoding="utf-8"))
        chosen = cascade["chosen"]
        choices["cascade_threshold"] = Choice(
            chosen["threshold"],
            "dev",
            list(cascade["calibrated_on"]),
            note=f"cheapest escalation share within {config.cascade.tolerance} nDCG@10 of the best, "
            "on the dev queries",
            details={"share": chosen["share"], "tolerance": config.cascade.tolerance},
        )
    settings = config.cross_encoder
    student = None
    if settings.enabled and layout.student_choice.exists():
        student = Choice(**json.loads(layout.student_choice.read_text(encoding="utf-8")))
    elif settings.enabled and not settings.candidates:  # before the stage ran: the config's values
        from rrdistill.pipeline.student_selection import chosen_settings

        student = Choice(chosen_settings(ctx), settings.chosen_on, note=settings.chosen_note)
    for name, key in (("student_layers", "layers"), ("learning_rate", "learning_rate")):
        if student is not None and key in student.value:
            choices[name] = replace(student, value=student.value[key])
    if config.bi_encoder.enabled:
        bi = config.bi_encoder
        choices["bi_encoder_recipe"] = Choice(
            {"layers": bi.layers, **bi.overrides}, bi.chosen_on, note=bi.chosen_note
        )
    if "int8" in config.export.precisions:
        qids = _parity_qids(ctx)
        choices["int8_drift_acceptance"] = Choice(
            config.export.accept_drift,
            "config",
            qids,
            note=f"int8 parity measured on {len(qids)} dev queries; bundles beyond the drift limits are "
            + ("written with the drift recorded" if config.export.accept_drift else "refused"),
        )
    for name, choice in choices.items():
        if choice.chosen_on.strip().lower() in (config.eval.split.lower(), "test"):
            raise LeakError(f"{name}: chosen_on {choice.chosen_on!r} names the evaluated split")
        check_disjoint(name, choice.queries, evaluated)
    return {name: choice.to_json() for name, choice in choices.items()}


def _parity_qids(ctx: PipelineContext) -> list[str]:
    """The queries the int8 bundles' parity was measured on (as their manifests record)."""
    from rrdistill.runtime.bundle import load_manifest

    qids: set[str] = set()
    for bundle in sorted(ctx.layout.root.glob("bundles/*-int8")):
        if (bundle / "rrdistill.json").exists():
            qids.update((load_manifest(bundle).parity or {}).get("qids") or [])
    return sorted(qids)
