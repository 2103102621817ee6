"""Checkpoints saved by the pinned transformers open without its Mistral-regex false alarm."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")


def large_vocab_checkpoint(folder: Path, model_type: str) -> Path:
    """A tokenizer-only checkpoint as transformers 4.57.6 saves a Qwen2 (vocabulary > 100,000:
    the size at which transformers runs its Mistral check)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(100_500)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    config = {"model_type": model_type, "transformers_version": "4.57.6"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def load_logging(opener: Any, folder: Path) -> tuple[Any, str]:
    library = logging.getLogger("transformers")  # transformers' loggers report to this one
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    library.addHandler(handler)
    try:
        return opener(folder), stream.getvalue()
    finally:
        library.removeHandler(handler)


def test_a_qwen_checkpoint_opens_without_the_false_alarm_and_tokenizes_the_same(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from rrdistill.hf_tokenizers import open_tokenizer

    folder = large_vocab_checkpoint(tmp_path, "qwen2")
    plain, plain_log = load_logging(AutoTokenizer.from_pretrained, folder)
    opened, opened_log = load_logging(open_tokenizer, folder)
    assert "incorrect regex pattern" in plain_log  # the alarm the helper exists for
    assert "incorrect regex pattern" not in opened_log
    text = "w1 w17 w100499 unknown w3"
    assert opened(text)["input_ids"] == plain(text)["input_ids"] == [1 + 1, 17 + 1, 100499 + 1, 0, 3 + 1]


def test_a_mistral_checkpoint_keeps_transformers_warning(tmp_path: Path) -> None:
    from rrdistill.hf_tokenizers import open_tokenizer

    _, log = load_logging(open_tokenizer, large_vocab_checkpoint(tmp_path, "mistral"))
    assert "incorrect regex pattern" in log  # a real Mistral tokenizer is the user's call
