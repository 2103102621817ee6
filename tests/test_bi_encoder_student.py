"""Bi-encoder students: which ranks a list keeps, the teacher's scores as targets, the loss against
sentence-transformers' own, training that moves the student toward the teacher, caching, the baseline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rrdistill.distill.students.bi_encoder import (
    BiEncoderStudentConfig,
    _loss,
    distill_bi_encoder,
    qrels_lists,
    spread_ranks,
    student_hash,
    student_model,
    teacher_lists,
    training_dataset,
)
from rrdistill.distill.students.label import bundle_reranker, label_requests, read_labels
from rrdistill.io import read_beir, write_requests
from rrdistill.retrieve import BM25Retriever

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def labelled(tiny_bundle: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scored labels from a bundle teacher for 6 SciFact train queries' BM25 top-10."""
    root = tmp_path_factory.mktemp("bi-labels")
    data = read_beir(data_dir / "scifact", "train")
    requests = BM25Retriever(list(data.corpus.values())).search(data.split_queries()[:6], k=10)
    write_requests(root / "requests.jsonl", requests)
    label_requests(root / "requests.jsonl", root / "labels.jsonl", bundle_reranker(tiny_bundle, threads=1))
    return root / "labels.jsonl"


@pytest.fixture(scope="module")
def config(tiny_checkpoint: Path, labelled: Path) -> BiEncoderStudentConfig:
    return BiEncoderStudentConfig(
        base_model=str(tiny_checkpoint),
        labels=str(labelled),
        list_size=4,
        max_length=48,
        epochs=1.0,
        batch_size=2,
        name="tiny-bi",
    )


def test_spread_ranks_keep_the_head_and_reach_the_tail() -> None:
    assert spread_ranks(20, 8) == [0, 1, 2, 3, 4, 8, 12, 16]
    assert spread_ranks(10, 4) == [0, 1, 2, 6] and spread_ranks(3, 8) == [0, 1, 2]
    for length in range(2, 40):
        for size in range(2, length + 1):
            ranks = spread_ranks(length, size)
            assert len(ranks) == size and ranks == sorted(set(ranks)) and ranks[-1] < length


def test_lists_carry_the_teacher_scores_of_the_kept_ranks(config: BiEncoderStudentConfig) -> None:
    labels = list(read_labels(config.labels))
    lists = teacher_lists(config)
    assert [r.qid for r in lists] == [label.qid for label in labels]
    for item, label in zip(lists, labels, strict=True):
        keep = spread_ranks(len(label.docids), 4)
        assert item.docids == [label.docids[i] for i in keep]
        assert item.labels == [label.scores[i] for i in keep]
        assert item.labels == sorted(item.labels, reverse=True)  # best first, as the teacher ranked
    rows = training_dataset(lists, config)
    assert rows.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert rows["positive"][0] == lists[0].passages[0] and rows["label"][0] == lists[0].labels


def test_the_loss_is_kl_of_the_teacher_softmax_and_the_scaled_cosine(config: BiEncoderStudentConfig) -> None:
    """sentence-transformers' DistillKLDivLoss with cosine × scale: checked against the formula."""
    import torch

    rng = np.random.default_rng(0)
    query, docs = (
        torch.tensor(rng.normal(size=(3, 8))),
        [torch.tensor(rng.normal(size=(3, 8))) for _ in range(4)],
    )
    teacher = torch.tensor(rng.normal(size=(3, 4)))
    for scale, temperature in ((20.0, 1.0), (5.0, 2.0)):
        cfg = replace(config, scale=scale, temperature=temperature)
        loss = _loss(student_model(cfg, "unused-run-dir"), cfg).compute_loss_from_embeddings(
            [query, *docs], teacher
        )
        cos = torch.stack([torch.nn.functional.cosine_similarity(query, d) for d in docs], dim=1)
        p = torch.softmax(teacher / temperature, dim=1)
        log_q = torch.log_softmax(scale * cos / temperature, dim=1)
        expected = (p * (p.log() - log_q)).sum(dim=1).mean() * temperature**2
        assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def _kl_to_teacher(model, lists, scale: float = 20.0) -> float:
    total = 0.0
    for r in lists:
        q = model.encode([r.query], normalize_embeddings=True)[0]
        d = model.encode(r.passages, normalize_embeddings=True)
        student = scale * d @ q
        p = np.exp(r.labels - np.max(r.labels))
        p /= p.sum()
        log_q = student - np.max(student) - np.log(np.exp(student - np.max(student)).sum())
        total += float(np.sum(p * (np.log(p) - log_q)))
    return total / len(lists)


def test_training_moves_the_student_toward_the_teacher_and_is_cached(
    config: BiEncoderStudentConfig, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    cfg = replace(config, epochs=6.0, learning_rate=2e-3, warmup_ratio=0.0)
    lists = teacher_lists(cfg)
    before = _kl_to_teacher(student_model(cfg, tmp_path), lists)
    trained = distill_bi_encoder(cfg, tmp_path)
    assert not trained.cached and trained.info["data"]["queries"] == len(lists)
    student = SentenceTransformer(str(trained.path), device="cpu")
    assert [type(m).__name__ for m in student] == ["Transformer", "Pooling", "Normalize"]
    assert student.max_seq_length == 48
    after = _kl_to_teacher(student, lists)
    assert after < 0.8 * before, (before, after)
    again = distill_bi_encoder(cfg, tmp_path)
    assert again.cached and again.path == trained.path
    assert student_hash(replace(cfg, name="renamed")) == student_hash(cfg)
    assert student_hash(replace(cfg, scale=10.0)) != student_hash(cfg)


def test_the_baseline_reads_qrels_with_bm25_negatives(config: BiEncoderStudentConfig, data_dir: Path) -> None:
    base = replace(config, loss="mnrl", labels=None, data=str(data_dir / "scifact"), max_queries=5)
    lists = qrels_lists(base)
    qrels = read_beir(data_dir / "scifact", "train").qrels
    rows = training_dataset(lists, base)
    assert rows.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3"]
    for r in lists:
        for docid, label in zip(r.docids, r.labels, strict=True):
            assert (qrels[r.qid].get(docid, 0) > 0) == (label > 0)
    with pytest.raises(ValueError, match="give `data`"):
        replace(base, data=None)
    with pytest.raises(ValueError, match="give `labels`"):
        replace(config, labels=None)
