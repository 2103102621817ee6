"""Report rows name the model behind them: a checkpoint's name survives truncation and training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rrdistill.checkpoint_names import BLOCKS_RECORD, TRAINING_RECORD, checkpoint_name, model_card_title
from rrdistill.pipeline.systems import describe_model

CARD = "---\nlanguage: en\nlibrary_name: sentence-transformers\n---\n\n# all-MiniLM-L6-v2\nThis is a model.\n"


def test_a_model_card_names_its_folder_and_front_matter_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    assert checkpoint_name(tmp_path / "model") == "model"  # nothing says more than the folder
    (tmp_path / "model" / "README.md").write_text(CARD, encoding="utf-8")
    assert model_card_title(tmp_path / "model") == "all-MiniLM-L6-v2"
    assert checkpoint_name(tmp_path / "model") == "all-MiniLM-L6-v2"
    (tmp_path / "model" / "README.md").write_text(
        "---\n# not a title: still front matter\n", encoding="utf-8"
    )
    assert model_card_title(tmp_path / "model") is None


def test_a_fetched_registry_model_is_named_by_its_registry_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RRDISTILL_MODELS", str(tmp_path / "cache"))
    fetched = tmp_path / "cache" / "smollm2-135m-instruct" / "hf-float32"
    fetched.mkdir(parents=True)
    unknown = tmp_path / "cache" / "not-registered" / "hf-float32"
    unknown.mkdir(parents=True)
    assert checkpoint_name(fetched) == "smollm2-135m-instruct"
    assert checkpoint_name(unknown) == "hf-float32"


def test_truncation_and_training_keep_the_source_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from rrdistill.distill.students.cross_encoder import truncate_layers

    source = tmp_path / "minilm"
    shutil.copytree(tiny_checkpoint, source)
    (source / "README.md").write_text(CARD, encoding="utf-8")
    cut = truncate_layers(source, 1, tmp_path / "cut", "first")
    assert json.loads((cut / BLOCKS_RECORD).read_text())["blocks"] == [0]
    assert checkpoint_name(cut) == "all-MiniLM-L6-v2, blocks [0]"
    run = tmp_path / "reference-0123"
    run.mkdir()
    (run / TRAINING_RECORD).write_text(json.dumps({"base_model_name": "all-MiniLM-L6-v2"}), encoding="utf-8")
    (run / "README.md").write_text("# CrossEncoder\n", encoding="utf-8")  # the card every fit writes
    assert checkpoint_name(run) == "reference-0123, fine-tuned from all-MiniLM-L6-v2"
    (run / TRAINING_RECORD).write_text("{}", encoding="utf-8")  # an older run: no base recorded
    assert checkpoint_name(run) == "reference-0123"


@pytest.mark.parametrize(
    ("training", "named"),
    [
        (
            {"kind": "cross-encoder", "config": {"base_model": "/x/cut"}, "base_model_name": "m, blocks [0]"},
            "m, blocks [0]",
        ),
        (  # a listwise LM records where its base came from, not a config
            {
                "kind": "listwise-teacher",
                "base_model": "/c/hf-float32",
                "base_source": {"name": "smollm2-135m-instruct"},
            },
            "smollm2-135m-instruct",
        ),
        ({"kind": "cross-encoder", "config": {"base_model": "/x/base-0123"}}, "base-0123"),  # an older bundle
    ],
)
def test_a_report_row_names_the_base_its_bundle_records(
    tiny_bundle: Path, tmp_path: Path, training: dict, named: str
) -> None:
    from rrdistill.pipeline.systems import model_provenance
    from rrdistill.runtime.bundle import load_manifest, write_manifest

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = load_manifest(bundle)
    manifest.provenance = {"training": training}
    write_manifest(bundle, manifest)
    provenance = model_provenance(bundle)
    assert provenance["base_checkpoint"] == named
    assert describe_model(provenance).startswith(f"{provenance['kind']}, from {named}")
