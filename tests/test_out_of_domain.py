"""Out-of-domain sets: their candidates, their BM25 rows, the leak guard, and the report's paired Δ columns.

The end-to-end checks (every cross-encoder judged on each set, metrics recomputed with pytrec_eval)
are in test_pipeline.py, on the one pipeline run the suite pays for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipelines import small_context

from rrdistill.config import ConfigError, load_config
from rrdistill.io import read_qrels, read_rankgpt, read_requests, write_requests
from rrdistill.pipeline import PipelineConfig, PipelineContext
from rrdistill.pipeline.config import OutOfDomainSettings
from rrdistill.pipeline.heldout import LeakError, write_split
from rrdistill.pipeline.out_of_domain import (
    check_unseen,
    given_candidates,
    retrieve_out_of_domain,
    retrieved_candidates,
    training_queries,
)
from rrdistill.pipeline.report import OUT_OF_DOMAIN_COLUMNS, markdown_table, report_rows
from rrdistill.pipeline.systems import SystemRecord
from rrdistill.types import Query, Request

REPO = Path(__file__).resolve().parent.parent


def _context(tmp_path: Path, data_dir: Path, *sets: OutOfDomainSettings) -> PipelineContext:
    return small_context(tmp_path, data_dir, out_of_domain=list(sets))


def test_a_rankgpt_set_keeps_its_given_candidates_in_bm25_order(data_dir: Path) -> None:
    folder = data_dir / "noveleval"
    qrels = read_qrels(folder / "qrels.txt")
    settings = OutOfDomainSettings("noveleval", str(folder), top_k=20, max_queries=2)
    requests = given_candidates(folder, settings, qrels)
    given = {r.qid: r.docids for r in read_rankgpt(folder / "data.json")}
    assert [r.qid for r in requests] == list(given)[:2]
    for request in requests:
        assert sorted(request.docids) == sorted(given[request.qid])  # the same 20, reordered
        scores = [c.score for c in request.candidates]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0
        assert request.docids != given[request.qid]  # BM25's order, not the file's
    short = given_candidates(folder, OutOfDomainSettings("n", str(folder), top_k=5, max_queries=1), qrels)
    assert sorted(short[0].docids) == sorted(given[short[0].qid][:5])  # the first k given, then reordered


def test_a_beir_set_takes_bm25s_top_k_for_its_first_judged_queries(data_dir: Path) -> None:
    folder = data_dir / "cranfield"
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    requests = retrieved_candidates(
        folder, OutOfDomainSettings("c", str(folder), top_k=5, max_queries=3), qrels
    )
    assert [r.qid for r in requests] == list(qrels)[:3]
    for request in requests:
        scores = [c.score for c in request.candidates]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)


def test_retrieve_writes_each_sets_candidates_and_its_bm25_row(tmp_path: Path, data_dir: Path) -> None:
    import pytrec_eval

    sets = (
        OutOfDomainSettings("cranfield", str(data_dir / "cranfield"), top_k=10, max_queries=4),
        OutOfDomainSettings("noveleval", str(data_dir / "noveleval"), top_k=20, max_queries=3),
    )
    ctx = _context(tmp_path, data_dir, *sets)
    write_split(ctx)
    summary = retrieve_out_of_domain(ctx)
    assert {name: s["queries"] for name, s in summary.items()} == {"cranfield": 4, "noveleval": 3}
    for settings, qrels_path in zip(
        sets,
        (data_dir / "cranfield" / "qrels" / "test.tsv", data_dir / "noveleval" / "qrels.txt"),
        strict=True,
    ):
        record = SystemRecord.load(ctx.layout.system_file("bm25", settings.name))
        assert record.dataset == settings.name and record.kind == "bm25"
        assert record.notes["first_stage"]
        requests = list(read_requests(ctx.layout.ood_requests(settings.name)))
        qrels = read_qrels(qrels_path)
        run = {
            r.qid: {c.docid: float(len(r.candidates) - i) for i, c in enumerate(r.candidates)}
            for r in requests
        }
        expected = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in run}, {"ndcg_cut.10"}).evaluate(run)
        assert record.per_query == pytest.approx({q: v["ndcg_cut_10"] for q, v in expected.items()})
    # a set named as the in-domain data would write its rows beside it: refused
    ctx.config.out_of_domain = [OutOfDomainSettings("scifact", str(data_dir / "cranfield"), max_queries=1)]
    with pytest.raises(ValueError, match="in-domain"):
        retrieve_out_of_domain(ctx)


def test_a_set_sharing_a_training_or_dev_query_is_refused(tmp_path: Path, data_dir: Path) -> None:
    ctx = _context(tmp_path, data_dir)
    write_split(ctx)
    seen = training_queries(ctx)
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (data_dir / "scifact" / "queries.jsonl").read_text().splitlines()
    }
    split = json.loads(ctx.layout.split_file.read_text())
    train, dev, test = split["train"][0], split["dev"][0], next(iter(ctx.eval_qrels))

    def normal(text: str) -> str:
        return " ".join(text.casefold().split())

    assert normal(queries[train]) in seen and normal(queries[dev]) in seen
    assert normal(queries[test]) not in seen  # evaluated queries are not trained on
    novel = read_rankgpt(data_dir / "noveleval" / "data.json")
    check_unseen("noveleval", novel, seen)
    leaked = [*novel[:1], Request(Query("x", "  " + queries[train].upper()), novel[0].candidates)]
    with pytest.raises(LeakError, match="shares 1 queries"):
        check_unseen("noveleval", leaked, seen)


def test_the_config_lists_out_of_domain_sets_with_valid_unique_names(tmp_path: Path) -> None:
    demo = load_config(PipelineConfig, REPO / "configs" / "pipeline" / "demo.yaml")
    assert [s.name for s in demo.out_of_domain] == ["cranfield", "noveleval"]
    assert PipelineConfig().out_of_domain == []  # none unless configured
    for sets, message in (
        ([{"name": "a/b", "data": "x"}], "letters"),
        ([{"name": "a", "data": "x"}, {"name": "a", "data": "y"}], "unique"),
        ([{"data": "x"}], "name"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps({"out_of_domain": sets}))
        with pytest.raises(ConfigError, match=message):
            load_config(PipelineConfig, path)


def test_a_record_written_before_the_dataset_field_loads_as_scifact() -> None:
    record = _record("bm25", "bm25", None, {"q": 0.5})
    old = record.to_json()
    del old["dataset"]
    assert SystemRecord.from_json(old).dataset == "scifact"


def _record(
    system: str, kind: str, precision: str | None, per_query: dict[str, float], dataset: str = "scifact"
) -> SystemRecord:
    return SystemRecord(
        system=system,
        kind=kind,
        mode=None,
        precision=precision,
        bundle=None,
        model=f"model of {system}",
        trained_on="-",
        queries=len(per_query),
        depth=10,
        metrics={"ndcg@10": float(np.mean(list(per_query.values()))), "recall@10": 0.5},
        latency_ms_per_query=None,
        per_query=per_query,
        dataset=dataset,
    )


def test_each_row_is_compared_with_bm25_and_the_baseline_of_its_own_collection(
    tmp_path: Path, data_dir: Path
) -> None:
    ctx = _context(tmp_path, data_dir, OutOfDomainSettings("cranfield", "data/cranfield"))
    write_requests(ctx.layout.subset_requests, [])
    rng = np.random.default_rng(1)
    qids = [str(i) for i in range(12)]

    def scores(shift: float, skip: int = 0) -> dict[str, float]:
        return {q: float(np.clip(rng.random() + shift, 0, 1)) for q in qids[skip:]}

    cranfield = [
        _record("bm25", "bm25", None, scores(0.0), "cranfield"),
        _record("student-ce-fp32", "cross-encoder", "fp32", scores(0.3), "cranfield"),
        _record("baseline-ce-fp32", "cross-encoder", "fp32", scores(0.1, skip=2), "cranfield"),
    ]
    scifact = [
        _record("bm25", "bm25", None, scores(0.0)),
        _record("student-ce-fp32", "cross-encoder", "fp32", scores(0.2)),
        _record("student-ce-fp32+bm25", "cross-encoder", "fp32", scores(0.4)),
        _record("student-ce-int8", "cross-encoder", "int8", scores(0.2)),
        _record("baseline-ce-fp32", "cross-encoder", "fp32", scores(0.0)),
        _record("baseline-ce-fp32+bm25", "cross-encoder", "fp32", scores(0.3)),
    ]
    rows = report_rows(ctx, cranfield + scifact)
    assert [r["dataset"] for r in rows] == ["scifact"] * 6 + ["cranfield"] * 3  # in domain first
    by_key = {(r["dataset"], r["system"]): r for r in rows}
    records = {(r.dataset, r.system): r for r in cranfield + scifact}

    def check(row: dict, key: str, anchor: SystemRecord) -> None:
        """The row's Δ against `anchor`: the mean of per-query differences on the queries both ranked."""
        delta, mine = row[key], records[(row["dataset"], row["system"])].per_query
        shared = [q for q in mine if q in anchor.per_query]
        assert delta["against"] == anchor.system and delta["queries"] == len(shared)
        assert delta["mean"] == pytest.approx(np.mean([mine[q] - anchor.per_query[q] for q in shared]))
        assert delta["low"] <= delta["mean"] <= delta["high"] and delta["low"] < delta["high"]

    for (dataset, system), row in by_key.items():
        if system == "bm25":
            assert row["vs_bm25"] is None and row["vs_baseline"] is None
            continue
        check(row, "vs_bm25", records[(dataset, "bm25")])  # the BM25 row of its own collection
    # the baseline of the row's precision, fused with BM25 when the row is; none for int8 here
    check(by_key[("scifact", "student-ce-fp32")], "vs_baseline", records[("scifact", "baseline-ce-fp32")])
    fused = by_key[("scifact", "student-ce-fp32+bm25")]
    check(fused, "vs_baseline", records[("scifact", "baseline-ce-fp32+bm25")])
    assert by_key[("scifact", "student-ce-int8")]["vs_baseline"] is None
    assert by_key[("scifact", "baseline-ce-fp32")]["vs_baseline"] is None
    student = by_key[("cranfield", "student-ce-fp32")]
    check(student, "vs_baseline", records[("cranfield", "baseline-ce-fp32")])
    assert student["vs_baseline"]["queries"] == 10  # the baseline ranked 10 of the 12
    # out of domain the shared subset is the queries every row of the set ranks
    per_query = records[("cranfield", "student-ce-fp32")].per_query
    assert student["subset_ndcg@10"] == pytest.approx(np.mean([per_query[q] for q in qids[2:]]))
    table = markdown_table([student], OUT_OF_DOMAIN_COLUMNS)
    assert f"{student['vs_bm25']['mean']:+.3f} [{student['vs_bm25']['low']:+.3f}, " in table
