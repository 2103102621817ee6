"""Any model reference → a Hugging Face checkpoint folder that every training path can open.

Training code (trl's trainers, LoRA merges, the in-process backend, export) takes checkpoint
folders. A GGUF model (a registry name or a file) is read once by transformers' GGUF loader —
dequantized — and saved as a plain checkpoint with its tokenizer and chat template, cached beside
the GGUF by dtype; a checkpoint folder or hub id is used as it is. After this step a Qwen2.5 from
GGUF and one from a hub download take exactly the same code path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rrdistill.extras import require
from rrdistill.hashing import sha256_file
from rrdistill.models import ModelRef, resolve_model

MARKER = "rrdistill_source.json"
"""Written last into a materialized checkpoint: what it was made from (and that it is complete)."""


def checkpoint_source(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The record of the GGUF a checkpoint folder was made from (empty for other checkpoints)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return {}
    return dict(json.loads(marker.read_text(encoding="utf-8")))


def materialize_checkpoint(spec: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
    """The checkpoint folder for `spec` (a registry name, GGUF file, checkpoint folder or hub id).

    GGUF models are converted once into ``<gguf folder>/hf-<dtype>/`` (published atomically,
    reused afterwards); everything else is returned unchanged.
    """
    ref = resolve_model(spec)
    if ref.format == "hf":
        return ref.path
    target = ref.folder / f"hf-{dtype}"
    identity = _gguf_identity(ref)  # hashes the file once when no provenance records its sha256
    if checkpoint_source(target).get("sha256") == identity["sha256"]:
        return target
    torch = require("torch", "train", "reading a GGUF model for training")
    transformers = require("transformers", "train", "reading a GGUF model for training")
    require("gguf", "llm", "reading a GGUF model for training")
    kwargs = ref.transformers_kwargs()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(ref.folder), **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(ref.folder), dtype=getattr(torch, dtype), **kwargs
    )
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"{ref.path.name}: the GGUF carries no chat template; an instruct model is needed")
    _apply_gguf_special_tokens(ref.path, tokenizer, model)
    # A causal LM's tokenizer must not hand generate() token_type_ids.
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    staging = Path(tempfile.mkdtemp(prefix=".hf-", dir=ref.folder))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        record = {**identity, "dtype": dtype, "architecture": type(model).__name__}
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def gguf_special_token_ids(path: Path) -> dict[str, int]:
    """``bos``/``eos``/``pad``/``unk`` token ids as the GGUF file's metadata states them."""
    gguf = require("gguf", "llm", "reading GGUF metadata")
    fields = gguf.GGUFReader(str(path)).fields
    ids = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        field = fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is not None and field.data:
            ids[name] = int(field.parts[field.data[0]][0])
    return ids


def _apply_gguf_special_tokens(path: Path, tokenizer: Any, model: Any) -> None:
    """Take bos/eos/pad from the GGUF metadata, not from the converted tokenizer.

    transformers 4.57's GGUF tokenizer conversion can name the wrong end token (SmolLM2's comes out
    as ``<|im_start|>`` while the file says ``<|im_end|>``): a model trained with that eos would
    never learn to stop. The file is the authority; the generation config is aligned with it.
    """
    ids = gguf_special_token_ids(path)
    if "eos" not in ids:
        raise ValueError(f"{path.name}: the GGUF metadata names no end-of-sequence token")
    for name in ("bos", "eos", "pad"):
        if name in ids:
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(ids[name]))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.eos_token_id = model.generation_config.eos_token_id = ids["eos"]
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    if "bos" in ids:
        model.config.bos_token_id = model.generation_config.bos_token_id = ids["bos"]


def _gguf_identity(ref: ModelRef) -> dict[str, Any]:
    sha = ref.provenance.get("sha256")
    if not sha:
        sha = sha256_file(ref.path)
    return {"gguf": ref.path.name, "name": ref.name, **ref.provenance, "sha256": sha}
