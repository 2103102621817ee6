"""Teacher permutations: labelling with bundles and teachers (resumable), and importing existing ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrdistill.distill.students.label import (
    bundle_reranker,
    label_requests,
    labels_from_reasonrank,
    labels_from_results,
    labels_from_trec,
    parse_label,
    read_labels,
    results_path_for,
)
from rrdistill.io import read_rankgpt, read_requests, write_requests
from rrdistill.runtime import Reranker


@pytest.fixture(scope="module")
def requests_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("label") / "requests.jsonl"
    write_requests(path, read_rankgpt(data_dir / "noveleval" / "data.json")[:6])
    return path


def test_cross_encoder_bundle_labels_keep_order_and_scores(
    tiny_bundle: Path, requests_file: Path, tmp_path: Path
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    summary = label_requests(requests_file, labels_path, bundle_reranker(tiny_bundle), chunk_size=2)
    assert summary.labels == 6 and summary.job.reranked == 6
    labels = list(read_labels(labels_path))
    reranker = Reranker.load(tiny_bundle)
    for label, request in zip(labels, read_requests(requests_file), strict=True):
        expected = reranker.rerank(request.query.text, [c.passage for c in request.candidates])
        assert label.docids == [r.id for r in expected]
        assert label.scores == pytest.approx([r.score for r in expected], abs=1e-5)
        assert label.teacher["kind"] == "cross-encoder"
    assert results_path_for(labels_path).exists()
    again = label_requests(requests_file, labels_path, bundle_reranker(tiny_bundle))
    assert (again.job.resumed, again.job.reranked) == (6, 0)


def test_listwise_bundle_labels_keep_windows_and_reasoning(
    lm_bundles: dict[str, Path], requests_file: Path, tmp_path: Path
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    label_requests(
        requests_file, labels_path, bundle_reranker(lm_bundles["plain"], reasoning=True), chunk_size=3
    )
    labels = list(read_labels(labels_path))
    assert len(labels) == 6
    for label, request in zip(labels, read_requests(requests_file), strict=True):
        assert sorted(label.docids) == sorted(request.docids)
        assert label.windows and label.windows[0]["docids"] == request.docids[:20]
        assert label.teacher["kind"] == "listwise-lm" and label.teacher["prompt_version"]
        assert set(label.repairs) == {"out_of_range", "duplicates", "missing", "no_answer"}


def test_teacher_checkpoint_labels_through_the_sliding_window(
    tiny_model_dir: Path, requests_file: Path, tmp_path: Path
) -> None:
    from rrdistill.distill.backends import SamplingParams, TransformersBackend
    from rrdistill.distill.teacher.rerank import window_batch_reranker
    from rrdistill.distill.window_ranker import GenerativeRanker
    from rrdistill.window import WindowConfig

    ranker = GenerativeRanker(
        TransformersBackend(tiny_model_dir, batch_size=8),
        SamplingParams(max_new_tokens=8),
        max_passage_tokens=16,
    )
    labels_path = tmp_path / "labels.jsonl"
    summary = label_requests(
        requests_file, labels_path, window_batch_reranker(ranker, WindowConfig(10, 5, top_k=20))
    )
    labels = list(read_labels(labels_path))
    assert len(labels) == 6
    assert all(len(label.windows) == 3 for label in labels)  # spans (10,20) (5,15) (0,10)
    assert summary.repairs.missing > 0  # an untrained model's answers needed repair, and it was counted


def test_import_results_trec_and_reasonrank(requests_file: Path, tmp_path: Path, repo: Path) -> None:
    (first,) = list(labels_from_results(requests_file))[:1]
    assert first.docids == next(read_requests(requests_file)).docids and first.teacher["source"].startswith(
        "results:"
    )
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 3.0 t\nq1 Q0 c 3 1.0 t\n")
    (label,) = labels_from_trec(run, {"q1": "the query"})
    assert label.docids == ["b", "c", "a"] and label.query == "the query" and label.scores == [3.0, 1.0, 1.0]
    released = list(
        labels_from_reasonrank(repo / "tests" / "fixtures" / "reasonrank" / "training_data_all.jsonl")
    )
    assert released[0].docids == ["m_c", "m_a", "m_d", "m_b"]
    assert released[0].reasoning.startswith("Okay, I need to rank")
    assert released[0].windows[0]["order"] == [2, 0, 3, 1]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"qid": "q", "docids": "abc"}, "'docids' must be a list"),
        ({"qid": "q", "docids": ["a", "a"]}, "repeats a document"),
        ({"qid": "q", "docids": ["a"], "scores": [1, 2]}, "aligned"),
        ({"docids": ["a"]}, "'qid' must be"),
    ],
)
def test_malformed_labels(record: dict, reason: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_label(record)
    path = tmp_path / "labels.jsonl"
    path.write_text(
        json.dumps({"qid": "ok", "query": "", "docids": ["x"]}) + "\n" + json.dumps(record) + "\n"
    )
    from rrdistill.io import LineError

    with pytest.raises(LineError, match=f"{path}:2: "):
        list(read_labels(path))
