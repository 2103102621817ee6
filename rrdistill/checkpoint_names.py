"""A readable name for a checkpoint folder, so reports say *which* model a row is, not its path.

Folders are named in this order: a layer truncation written by rrdistill (its source's name and the
blocks kept), a training run written by rrdistill (the run folder and the model it started from), a
registry model fetched into the model cache (its registry name), a model card (the card's title, as
sentence-transformers and the hub write it), and finally the folder's own name. Standard library
only: the runtime's manifests and the reports read these without torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

BLOCKS_RECORD = "rrdistill_blocks.json"
"""Written into a truncated checkpoint: the source it was cut from and the blocks kept."""
TRAINING_RECORD = "rrdistill_training.json"
"""A cross-encoder training run's provenance (see ``rrdistill.distill.students.trainer``)."""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_card_title(folder: Path) -> str | None:
    """The first ``# Title`` of ``README.md`` after its front matter (None without one)."""
    try:
        lines = (folder / "README.md").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter: skip to its closing line
        closing = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---"), None)
        start = closing + 1 if closing is not None else len(lines)
    for line in lines[start:]:
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def _registry_name(folder: Path) -> str | None:
    from rrdistill.models import REGISTRY, models_home

    try:
        relative = folder.resolve().relative_to(models_home().resolve())
    except (OSError, ValueError):
        return None
    return relative.parts[0] if relative.parts and relative.parts[0] in REGISTRY else None


def checkpoint_name(path: str | os.PathLike[str]) -> str:
    """What the checkpoint at `path` is, in a few words (its folder name when nothing says more)."""
    folder = Path(path)
    blocks = _json(folder / BLOCKS_RECORD)
    if blocks and blocks.get("source_name") and blocks.get("blocks") is not None:
        return f"{blocks['source_name']}, blocks {blocks['blocks']}"
    training = _json(folder / TRAINING_RECORD)
    if training is not None:  # a run of ours: its folder names it (its card is a generic one)
        base = training.get("base_model_name")
        return f"{folder.name}, fine-tuned from {base}" if base else folder.name
    return _registry_name(folder) or model_card_title(folder) or folder.name


__all__ = ["BLOCKS_RECORD", "TRAINING_RECORD", "checkpoint_name", "model_card_title"]
