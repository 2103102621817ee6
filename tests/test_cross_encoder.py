"""Supervised cross-encoder training (sentence-transformers' CrossEncoderTrainer) on a tiny subset:
BM25 hard negatives, seeding, the cache, and the provenance that export copies into bundles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from models import onnx_bundle_from_checkpoint

from rrdistill.distill.students.trainer import (
    TRAINING_PROVENANCE,
    CrossEncoderTrainConfig,
    config_hash,
    hard_negative_lists,
    train_cross_encoder,
)
from rrdistill.io import read_beir
from rrdistill.retrieve import BM25Retriever
from rrdistill.runtime.bundle import load_manifest


@pytest.fixture(scope="module")
def config(tiny_checkpoint: Path, data_dir: Path) -> CrossEncoderTrainConfig:
    return CrossEncoderTrainConfig(
        base_model=str(tiny_checkpoint),
        data=str(data_dir / "scifact"),
        max_queries=8,
        negatives=2,
        negative_pool=5,
        max_length=64,
        batch_size=8,
        name="tiny",
    )


@pytest.fixture(scope="module")
def trained(config: CrossEncoderTrainConfig, tmp_path_factory: pytest.TempPathFactory):
    return train_cross_encoder(config, tmp_path_factory.mktemp("runs"))


def test_hard_negatives_come_from_bm25_and_are_never_judged(config: CrossEncoderTrainConfig) -> None:
    lists = hard_negative_lists(config)
    data = read_beir(config.data, "train")
    assert len(lists) == 8 and len({r.qid for r in lists}) == 8
    bm25 = BM25Retriever(list(data.corpus.values()))
    for item in lists:
        judged = data.qrels[item.qid]
        positives = [d for d, y in zip(item.docids, item.labels, strict=True) if y == 1.0]
        negatives = [d for d, y in zip(item.docids, item.labels, strict=True) if y == 0.0]
        assert sorted(positives) == sorted(d for d, g in judged.items() if g > 0)
        assert len(negatives) == 2 and not set(negatives) & set(judged)
        (ranked,) = bm25.search([data.queries[item.qid]], k=5 + len(judged))
        top_unjudged = [d for d in ranked.docids if d not in judged][:5]
        assert set(negatives) <= set(top_unjudged)
        assert item.passages[0] == data.corpus[item.docids[0]].full_text()


def test_each_loss_gets_its_data_layout(config: CrossEncoderTrainConfig) -> None:
    from rrdistill.distill.students.trainer import _dataset

    lists = hard_negative_lists(config)
    positives = sum(int(sum(r.labels)) for r in lists)
    pairs = _dataset(lists, "bce")
    assert pairs.column_names == ["query", "passage", "label"] and len(pairs) == sum(
        len(r.labels) for r in lists
    )
    assert sum(pairs["label"]) == positives
    ranked = _dataset(lists, "listnet")
    assert ranked.column_names == ["query", "docs", "labels"] and ranked["labels"][0] == lists[0].labels
    rows = _dataset(lists, "mnrl")
    assert rows.column_names == ["query", "positive", "negative_1", "negative_2"] and len(rows) == positives
    first = lists[0]
    assert (rows["positive"][0], rows["negative_1"][0]) == (first.passages[0], first.passages[-2])


def test_training_is_recorded_and_cached(
    trained, config: CrossEncoderTrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not trained.cached and trained.path.name == f"tiny-{config_hash(config)}"
    info = json.loads((trained.path / TRAINING_PROVENANCE).read_text())
    assert info == trained.info
    assert info["config"]["negatives"] == 2 and info["seed"] == 12
    assert info["data"]["queries"] == 8 and info["data"]["negatives"] == 16
    assert info["data"]["examples"] == info["data"]["positives"]  # mnrl: one row per positive
    assert info["metrics"]["steps"] == config.epochs * -(-info["data"]["examples"] // 8)
    assert np.isfinite(info["metrics"]["train_loss"]) and info["timing"]["train_seconds"] > 0
    assert {"sentence-transformers", "transformers", "torch"} <= set(info["libraries"])

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached run must not train again")

    monkeypatch.setattr("sentence_transformers.cross_encoder.CrossEncoderTrainer", no_training)
    again = train_cross_encoder(config, trained.path.parent)
    assert again.cached and again.path == trained.path and again.info == info
    assert config_hash(replace(config, seed=13)) != config_hash(config)
    assert config_hash(replace(config, name="other")) == config_hash(
        config
    )  # names and paths are not identity


def test_training_is_seeded(trained, config: CrossEncoderTrainConfig, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    again = train_cross_encoder(config, tmp_path)
    assert not again.cached
    first, second = load_file(trained.path / "model.safetensors"), load_file(again.path / "model.safetensors")
    base = load_file(Path(config.base_model) / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["classifier.weight"], base["classifier.weight"])  # it did learn


def test_bundles_carry_the_training_provenance(trained, tmp_path: Path) -> None:
    bundle = onnx_bundle_from_checkpoint(
        trained.path, tmp_path / "bundle", max_length=None, accept_drift=True
    )
    manifest = load_manifest(bundle)
    assert manifest.inputs.max_length == 64  # the length it was trained with
    assert manifest.provenance["training"] == trained.info
    assert (
        manifest.parity["max_abs_diff"] < 1e-4
    )  # a sentence-transformers folder exports like any checkpoint


def test_one_fingerprint_rule_follows_the_model_not_its_folder(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Training caches and export provenance identify a checkpoint the same way: by config and weights."""
    import shutil

    from rrdistill.export.onnx import checkpoint_fingerprint as export_fingerprint
    from rrdistill.hashing import checkpoint_fingerprint, model_fingerprint, sha256_json

    assert export_fingerprint is checkpoint_fingerprint
    fingerprint = checkpoint_fingerprint(tiny_checkpoint)
    assert set(fingerprint["weights_sha256"]) == {"model.safetensors"}
    assert model_fingerprint(tiny_checkpoint) == sha256_json(
        {k: fingerprint[k] for k in ("config_sha256", "weights_sha256")}
    )
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "elsewhere")
    (copy / "vocab.txt").write_text("tokenizer files are not the model\n")
    assert model_fingerprint(copy) == model_fingerprint(tiny_checkpoint)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(copy) != model_fingerprint(tiny_checkpoint)


def test_a_run_is_reused_only_under_its_own_key(tmp_path: Path) -> None:
    """The train-or-cached skeleton both trainers share: publish atomically, reuse only a matching stamp."""
    from rrdistill.distill.students.trainer import train_or_cached

    calls: list[Path] = []

    def train(staging: Path) -> dict[str, object]:
        calls.append(staging)
        (staging / "model.safetensors").write_text("weights")
        return {"kind": "test"}

    first = train_or_cached(tmp_path, "run", "abc", train)
    assert not first.cached and first.path == tmp_path / "run-abc" and first.info["config_hash"] == "abc"
    assert calls[0] != first.path and (first.path / "model.safetensors").exists()
    again = train_or_cached(tmp_path, "run", "abc", train)
    assert again.cached and again.info == first.info and len(calls) == 1

    # A folder whose stamp names another key (e.g. made under an older hashing rule) is not reused.
    stamp = first.path / TRAINING_PROVENANCE
    stamp.write_text(json.dumps({**first.info, "config_hash": "old"}))
    assert not train_or_cached(tmp_path, "run", "abc", train).cached and len(calls) == 2

    def crash(staging: Path) -> dict[str, object]:
        (staging / "partial").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_or_cached(tmp_path, "run", "new", crash)
    assert not (tmp_path / "run-new").exists()  # nothing half-written is published
