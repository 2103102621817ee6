"""Cross-encoder students: layer truncation, permutation lists, every loss, caching, and the path
to a runtime bundle with no extra step."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rrdistill.distill.students.cross_encoder import (
    CrossEncoderStudentConfig,
    distill_cross_encoder,
    initial_model,
    kept_layers,
    permutation_lists,
    student_dataset,
    student_hash,
    supervised_baseline_config,
    truncate_layers,
)
from rrdistill.distill.students.label import (
    PermutationLabel,
    bundle_reranker,
    label_requests,
    read_labels,
    write_labels,
)
from rrdistill.distill.students.losses import STUDENT_LOSSES
from rrdistill.distill.students.targets import permutation_targets
from rrdistill.io import read_beir, write_requests
from rrdistill.retrieve import BM25Retriever
from rrdistill.types import Candidate, Passage, Query, Request

pytest.importorskip("sentence_transformers")


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def labelled(tiny_bundle: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labels from a bundle teacher for 6 SciFact train queries' BM25 top-8."""
    root = tmp_path_factory.mktemp("labels")
    data = read_beir(data_dir / "scifact", "train")
    requests = BM25Retriever(list(data.corpus.values())).search(data.split_queries()[:6], k=8)
    write_requests(root / "requests.jsonl", requests)
    label_requests(root / "requests.jsonl", root / "labels.jsonl", bundle_reranker(tiny_bundle, threads=1))
    return root / "labels.jsonl"


@pytest.fixture(scope="module")
def config(tiny_checkpoint: Path, labelled: Path, data_dir: Path) -> CrossEncoderStudentConfig:
    return CrossEncoderStudentConfig(
        base_model=str(tiny_checkpoint),
        labels=str(labelled),
        data=str(data_dir / "scifact"),
        layers=1,
        list_size=5,
        max_length=64,
        epochs=1.0,
        batch_size=2,
        name="tiny",
    )


def test_layer_choice_keeps_both_ends_and_spreads_between() -> None:
    assert (
        kept_layers(6, 2) == [0, 5] and kept_layers(6, 3) == [0, 2, 5] and kept_layers(6, 4) == [0, 1, 3, 5]
    )
    assert kept_layers(12, 4) == [0, 3, 7, 11] and kept_layers(6, 1) == [5]
    assert kept_layers(6, 6) == list(range(6)) and kept_layers(6, 2, "first") == [0, 1]
    with pytest.raises(ValueError):
        kept_layers(6, 7)


def test_truncation_copies_the_kept_layers_exactly(tiny_checkpoint: Path, tmp_path: Path) -> None:
    base = _tensors(tiny_checkpoint)
    for selection, source in (("first", 0), ("spread", 1)):
        out = truncate_layers(tiny_checkpoint, 1, tmp_path / selection, selection)
        cut = _tensors(out)
        assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
        assert {k for k in base if ".layer." not in k} | {
            k.replace(f".layer.{source}.", ".layer.0.") for k in base if f".layer.{source}." in k
        } == set(cut)
        for name in cut:
            original = name.replace(".layer.0.", f".layer.{source}.")
            np.testing.assert_array_equal(cut[name], base[original])
    out = tmp_path / "first"
    assert (out / "tokenizer.json").exists()
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert len(model.bert.encoder.layer) == 1
    with pytest.raises(ValueError, match="cannot keep 5"):
        truncate_layers(tiny_checkpoint, 5, tmp_path / "l5")


def test_the_kept_blocks_name_the_initial_model_and_key_the_student(
    config: CrossEncoderStudentConfig, tmp_path: Path
) -> None:
    """A cached cut or student made under another selection rule must never be returned."""
    first, spread = replace(config, layer_selection="first"), replace(config, layer_selection="spread")
    assert initial_model(first, tmp_path).name.endswith("-blocks-0")
    assert initial_model(spread, tmp_path).name.endswith("-blocks-1")
    assert student_hash(first) != student_hash(spread)
    assert student_hash(spread) == student_hash(replace(spread, name="renamed"))


def test_lists_follow_the_teacher_order_with_rank_targets(config: CrossEncoderStudentConfig) -> None:
    labels = list(read_labels(config.labels))
    lists = permutation_lists(config)
    assert [r.qid for r in lists] == [label.qid for label in labels]
    for item, label in zip(lists, labels, strict=True):
        assert item.docids == label.docids[:5] and item.labels == permutation_targets(5, "reciprocal")
    lambda_lists = permutation_lists(replace(config, loss="lambdaloss"))
    assert lambda_lists[0].labels == permutation_targets(5, "linear")
    margin = permutation_lists(replace(config, loss="margin-mse"))
    assert margin[0].labels == labels[0].scores[:5]  # the bundle teacher's own scores, best first
    rows = student_dataset(margin, replace(config, loss="margin-mse", margin_negatives=3))
    assert rows.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "labels"]
    assert rows["positive"][0] == margin[0].passages[0] and len(rows["labels"][0]) == 4


def test_weighted_ranknet_refuses_targets_it_cannot_read(config: CrossEncoderStudentConfig) -> None:
    with pytest.raises(ValueError, match="reciprocal"):
        replace(config, loss="weighted-ranknet", targets="graded")
    with pytest.raises(ValueError, match="loss must be one of"):
        replace(config, loss="hinge")
    with pytest.raises(ValueError, match="nothing to learn"):
        replace(config, targets="graded")  # ranks 1-5 all get the top grade


# A teacher order a tiny student can learn in a few steps: the query is one word, and the passage at
# teacher rank r (of 5) holds that word 4 - r times among filler words.
_KEYS = ["apple", "river", "music", "garden", "winter", "doctor", "window", "silver", "engine", "forest"]
_FILLERS = [
    "table",
    "paper",
    "green",
    "small",
    "house",
    "light",
    "water",
    "stone",
    "cloud",
    "sugar",
    "horse",
    "bread",
]
_LIST = 5


def _learnable_lists(seed: int, count: int) -> list[tuple[str, list[str]]]:
    """(query, passages in teacher order, best first) for `count` queries."""
    rng = random.Random(seed)
    lists = []
    for _ in range(count):
        key = rng.choice(_KEYS)
        passages = []
        for rank in range(_LIST):
            words = [key] * (_LIST - 1 - rank) + rng.choices(_FILLERS, k=6 + rank)
            rng.shuffle(words)
            passages.append(" ".join(words))
        lists.append((key, passages))
    return lists


def _write_teacher(folder: Path, lists: list[tuple[str, list[str]]], reverse: bool) -> Path:
    """Labels (the teacher's order, with scores for MarginMSE) and the requests they rank, shuffled."""
    rng = random.Random(0)
    requests, labels = [], []
    for q, (query, passages) in enumerate(lists):
        docids = [f"q{q}-d{rank}" for rank in range(_LIST)]
        order = docids[::-1] if reverse else docids
        shuffled = rng.sample(range(_LIST), _LIST)
        requests.append(
            Request(Query(f"q{q}", query), [Candidate(Passage(docids[i], passages[i])) for i in shuffled])
        )
        labels.append(
            PermutationLabel(f"q{q}", query, order, scores=[float(_LIST - i) for i in range(_LIST)])
        )
    folder.mkdir(parents=True)
    write_requests(folder / "labels.results.jsonl", requests)
    write_labels(folder / "labels.jsonl", labels)
    return folder / "labels.jsonl"


def _kendall_tau(checkpoint: Path, lists: list[tuple[str, list[str]]]) -> float:
    """Mean Kendall τ between the model's scores and the true teacher order of each list."""
    from scipy.stats import kendalltau
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(checkpoint), num_labels=1, max_length=32, device="cpu")
    taus = [
        kendalltau(-np.arange(_LIST), model.predict([(query, p) for p in passages])).statistic
        for query, passages in lists
    ]
    return float(np.mean(taus))


@pytest.fixture(scope="module")
def learnable(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Teacher labels in the learnable order and reversed, held-out lists, the untrained student's τ."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine: 7x faster than 2 threads
    root = tmp_path_factory.mktemp("learnable")
    train = _learnable_lists(1, 32)
    held_out = _learnable_lists(2, 20)
    yield {
        "config": CrossEncoderStudentConfig(
            base_model=str(tiny_checkpoint),
            labels=str(_write_teacher(root / "teacher", train, reverse=False)),
            list_size=_LIST,
            margin_negatives=_LIST - 1,
            max_length=32,
            epochs=2.0,
            batch_size=4,
            learning_rate=1e-3,
            head_learning_rate=1e-2,
            warmup_ratio=0.0,
            name="learnable",
        ),
        "reversed": str(_write_teacher(root / "reversed", train, reverse=True)),
        "held_out": held_out,
        "tau_before": _kendall_tau(tiny_checkpoint, held_out),
    }
    torch.set_num_threads(threads)


@pytest.mark.parametrize("loss", STUDENT_LOSSES)
def test_every_loss_learns_the_teacher_order(loss: str, learnable: dict[str, Any], tmp_path: Path) -> None:
    """After 16 steps the student orders held-out lists like the teacher, which it did not before."""
    config = replace(learnable["config"], loss=loss)
    trained = distill_cross_encoder(config, tmp_path)
    assert trained.info["config"]["loss"] == loss and trained.info["metrics"]["steps"] == 16
    assert np.isfinite(trained.info["metrics"]["train_loss"])
    tau = _kendall_tau(trained.path, learnable["held_out"])
    assert tau > 0.3 and tau > learnable["tau_before"] + 0.2, (loss, learnable["tau_before"], tau)
    start, weights = _tensors(Path(config.base_model)), _tensors(trained.path)
    assert any(
        not np.array_equal(weights[k], start[k]) for k in start if ".layer.0." in k
    )  # the encoder learned


def test_a_reversed_teacher_drives_the_student_the_other_way(
    learnable: dict[str, Any], tmp_path: Path
) -> None:
    """The check above can fail: the same training on the reversed order ranks the lists backwards."""
    config = replace(learnable["config"], loss="listmle", labels=learnable["reversed"])
    tau = _kendall_tau(distill_cross_encoder(config, tmp_path).path, learnable["held_out"])
    assert tau < -0.3 and tau < learnable["tau_before"] - 0.2, (learnable["tau_before"], tau)


def test_students_are_cached_and_export_to_a_runtime_bundle(
    config: CrossEncoderStudentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import onnx_bundle_from_checkpoint

    from rrdistill.runtime import Reranker
    from rrdistill.runtime.bundle import load_manifest

    first = distill_cross_encoder(config, tmp_path)
    assert not first.cached and first.info["teacher"]["kind"] == "cross-encoder"

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached student must not train again")

    monkeypatch.setattr("rrdistill.distill.students.cross_encoder.fit_cross_encoder", no_training)
    again = distill_cross_encoder(config, tmp_path)
    assert again.cached and again.path == first.path
    monkeypatch.undo()

    bundle = onnx_bundle_from_checkpoint(first.path, tmp_path / "bundle", max_length=None, accept_drift=True)
    assert load_manifest(bundle).provenance["training"]["kind"] == "cross-encoder-student"
    ranked = Reranker.load(bundle, threads=1).rerank(
        "vitamin D and bone density", ["bones", "calcium", "stars"]
    )
    assert sorted(r.index for r in ranked) == [0, 1, 2]


def test_the_supervised_baseline_shares_the_architecture(
    config: CrossEncoderStudentConfig, tmp_path: Path
) -> None:
    baseline = supervised_baseline_config(config, tmp_path)
    assert json.loads((Path(baseline.base_model) / "config.json").read_text())["num_hidden_layers"] == 1
    assert (baseline.max_length, baseline.epochs, baseline.seed) == (
        config.max_length,
        config.epochs,
        config.seed,
    )
    with pytest.raises(ValueError, match="needs `data`"):
        supervised_baseline_config(replace(config, data=None), tmp_path)
