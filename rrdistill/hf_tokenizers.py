"""Opening a Hugging Face tokenizer from a checkpoint folder (training, export, the in-process backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rrdistill.extras import require

MISTRAL_MODEL_TYPES = frozenset({"mistral", "mistral3", "voxtral", "ministral", "pixtral"})


def open_tokenizer(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` of a checkpoint, without transformers 4.57.3+'s false alarm.

    Those releases warn that *every* local checkpoint they saved (Qwen2, Llama, …) has "an
    incorrect regex pattern" — a check meant for Mistral tokenizers whose model-type test only
    runs for older saves — and then change nothing. For a folder whose config names another
    model type, ``fix_mistral_regex=False`` says what their own test concludes for older saves.
    """
    transformers = require("transformers", "train", "loading a tokenizer")
    config = Path(path) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if model_type not in MISTRAL_MODEL_TYPES:
            kwargs.setdefault("fix_mistral_regex", False)
    return transformers.AutoTokenizer.from_pretrained(str(path), **kwargs)
