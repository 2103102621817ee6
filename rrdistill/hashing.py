"""Content hashes that caches and provenance rely on: one rule each, shared by every stage.

A file's digest, a folder's digest and a checkpoint's fingerprint each have exactly one
definition here, so a cache keyed in training and a provenance record written at export (or a
bundle verified by the runtime) can never disagree on what "the same model" means. Standard
library only: the lean runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (weights files are large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of `value` as canonical JSON (sorted keys): a key for a settings dictionary."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def sha256_tree(path: PathLike) -> str:
    """Digest of a file, or of a folder's files (relative names and contents, hidden ones left out).

    A missing path gives ``"missing"``, so a key built from it changes when the path appears.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    return sha256_json([[p.relative_to(path).as_posix(), sha256_file(p)] for p in files])


def _is_weights(path: Path) -> bool:
    """HF weight files: ``model*.safetensors``, ``pytorch_model*.bin``, ``adapter_model.*``."""
    return path.is_file() and path.suffix in {".safetensors", ".bin"} and "model" in path.name


def checkpoint_fingerprint(checkpoint: PathLike) -> dict[str, Any]:
    """What identifies a Hugging Face checkpoint: its config (as canonical JSON) and each weights file.

    Tokenizer files and the folder's location are left out: the same model copied anywhere has the
    same fingerprint. The name and architecture ride along for provenance records.
    """
    root = Path(checkpoint)
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {
        "config_sha256": hashlib.sha256(canonical).hexdigest(),
        "weights_sha256": {p.name: sha256_file(p) for p in sorted(root.iterdir()) if _is_weights(p)},
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "name": config.get("_name_or_path") or root.name,
    }


def model_fingerprint(checkpoint: PathLike) -> str:
    """One hex digest of :func:`checkpoint_fingerprint`'s identifying part (config and weights)."""
    fingerprint = checkpoint_fingerprint(checkpoint)
    return sha256_json({k: fingerprint[k] for k in ("config_sha256", "weights_sha256")})


__all__ = ["checkpoint_fingerprint", "model_fingerprint", "sha256_file", "sha256_json", "sha256_tree"]
