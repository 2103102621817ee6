"""Bundles: the self-describing directory that export writes and the runtime loads.

A bundle holds the model file(s), ``tokenizer.json`` and the ``rrdistill.json`` manifest. The
manifest says what the model is (kind, inputs, how an output becomes a score, max length,
precision), where it came from (provenance, prompt version), how close it is to its source
model (parity figures measured at export time) and the sha256 of every file — including a
checksum of the manifest itself, so an edited manifest is refused like a flipped byte.

Only the standard library (and the core's hashing) is used here: the lean runtime verifies bundles with this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.hashing import sha256_file

MANIFEST_NAME = "rrdistill.json"
BUNDLE_FORMAT = "rrdistill-bundle"
FORMAT_VERSION = 1
KINDS = ("cross-encoder", "listwise-lm", "bi-encoder")
POOLINGS = ("mean", "cls")
PRECISIONS = ("fp32", "fp16", "int8")


class BundleError(ValueError):
    """A bundle that must not be used; the message says which check failed and why."""


@dataclass
class ModelSpec:
    """How to run the model file."""

    file: str = "model.onnx"
    engine: str = "onnxruntime"
    """``onnxruntime`` or ``tensorrt`` (then ``file`` is the engine and ``onnx_file`` its source)."""
    inputs: list[str] = field(default_factory=lambda: ["input_ids", "attention_mask"])
    output: str = "logits"
    onnx_file: str | None = None


@dataclass
class ScoreSpec:
    """How a model output becomes a relevance score (higher is more relevant)."""

    logit_index: int = 0
    activation: str = "identity"
    """``identity`` (raw logit) or ``sigmoid``; neither changes the ranking."""


@dataclass
class InputSpec:
    """How a (query, passage) pair becomes model input."""

    max_length: int = 512
    passage_template: str = "{title} {text}"
    """Formatted with the passage's ``title`` and ``text``; surrounding whitespace is stripped."""
    query_template: str = "{query}"
    truncation: str = "only_second"
    """``only_second``: tokens are cut from the passage, never the query (a cross-encoder's pairs);
    ``end``: each text is cut at its end (a bi-encoder embeds query and passage apart). The runtime
    counts and reports every cut."""
    pad_token_id: int | None = None
    """The model's pad token id; None: the runtime reads ``padding.pad_id`` from tokenizer.json."""


@dataclass
class EmbeddingSpec:
    """How a bi-encoder's token states become a score: pooled into one vector per text (query and
    passage apart), L2-normalised when `normalize`, then the dot product (a cosine when normalised).

    The model output (``model.output``, e.g. ``last_hidden_state``) is read per token; pooling is
    done by the runtime over the attention mask, as sentence-transformers' Pooling module does.
    """

    pooling: str = "mean"
    """``mean`` (over the real tokens) or ``cls`` (the first token's state)."""
    normalize: bool = True
    dimension: int | None = None
    """Width of the vectors (informational)."""


@dataclass
class Manifest:
    kind: str
    precision: str
    model: ModelSpec = field(default_factory=ModelSpec)
    inputs: InputSpec = field(default_factory=InputSpec)
    score: ScoreSpec = field(default_factory=ScoreSpec)
    tokenizer_file: str = "tokenizer.json"
    providers_validated: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    parity: dict[str, Any] = field(default_factory=dict)
    """Figures vs the source model on the embedded data: max_abs_diff, kendall_tau, ndcg@10 delta…"""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Source checkpoint, teacher, training data and run, library versions, creation time."""
    prompt_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Kind-specific settings (e.g. generation settings of a listwise LM)."""
    embedding: EmbeddingSpec | None = None
    """A bi-encoder's pooling and normalisation (None, and absent from the JSON, for other kinds)."""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Filled by :func:`write_manifest`: name → {sha256, bytes} for every file of the bundle."""
    format: str = BUNDLE_FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["embedding"] is None:  # other kinds' manifests keep the layout they always had
            del data["embedding"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        try:
            values = dict(data)
            values.pop("manifest_sha256", None)
            values["model"] = ModelSpec(**values.get("model", {}))
            values["inputs"] = InputSpec(**values.get("inputs", {}))
            values["score"] = ScoreSpec(**values.get("score", {}))
            if values.get("embedding") is not None:
                values["embedding"] = EmbeddingSpec(**values["embedding"])
            manifest = cls(**values)
        except TypeError as exc:
            raise BundleError(f"manifest has an unexpected layout: {exc}") from None
        manifest.validate()
        return manifest

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise BundleError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.precision not in PRECISIONS:
            raise BundleError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.inputs.max_length < 8:
            raise BundleError(f"max_length {self.inputs.max_length} is too small")
        if (self.kind == "bi-encoder") != (self.embedding is not None):
            raise BundleError("an embedding section belongs to bi-encoder manifests, and every one needs it")
        if self.embedding is not None and self.embedding.pooling not in POOLINGS:
            raise BundleError(f"pooling {self.embedding.pooling!r} is not one of {', '.join(POOLINGS)}")


def _manifest_digest(data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _bundle_files(root: Path) -> list[str]:
    """Every regular file under `root` but the manifest and hidden files, as relative paths."""
    names = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or relative.as_posix() == MANIFEST_NAME:
            continue
        if path.is_file():
            names.append(relative.as_posix())
    return names


def write_manifest(bundle: str | os.PathLike[str], manifest: Manifest) -> dict[str, Any]:
    """Checksum every file in `bundle`, write ``rrdistill.json`` atomically, return what was written."""
    root = Path(bundle)
    manifest.validate()
    manifest.files = {
        name: {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
        for name in _bundle_files(root)
    }
    for required in filter(None, (manifest.model.file, manifest.model.onnx_file, manifest.tokenizer_file)):
        if required not in manifest.files:
            raise BundleError(f"{root}: {required} is named in the manifest but not in the bundle")
    data = manifest.to_json()
    data["manifest_sha256"] = _manifest_digest(data)
    tmp = root / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_NAME)
    return data


def load_manifest(bundle: str | os.PathLike[str], *, verify_files: bool = True) -> Manifest:
    """Read and verify a bundle's manifest; :class:`BundleError` says what is wrong.

    Checks, in order: the manifest exists and is JSON; format and version are this runtime's;
    the manifest's own checksum holds (it was not edited); with `verify_files`, every listed
    file exists with its size and sha256, and no unlisted file sits in the bundle.
    """
    root = Path(bundle)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    if not path.exists():
        raise BundleError(
            f"{root}: no {MANIFEST_NAME} (not an rrdistill bundle, or an export that did not finish)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not an {BUNDLE_FORMAT} manifest")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r}, this rrdistill reads version {FORMAT_VERSION}; "
            "re-export the model with this version of rrdistill"
        )
    if data.get("manifest_sha256") != _manifest_digest(data):
        raise BundleError(f"{path}: manifest checksum mismatch (the manifest was edited after export)")
    manifest = Manifest.from_json(data)
    if verify_files:
        verify_bundle_files(root, manifest)
    return manifest


def verify_bundle_files(root: Path, manifest: Manifest) -> None:
    for name, expected in manifest.files.items():
        file = root / name
        if not file.is_file():
            raise BundleError(f"{root}: {name} is missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise BundleError(
                f"{root}: {name} has {size} bytes, the manifest says {expected.get('bytes')} (truncated or replaced)"
            )
        if sha256_file(file) != expected.get("sha256"):
            raise BundleError(f"{root}: {name} fails its sha256 check (corrupted or tampered with)")
    unlisted = sorted(set(_bundle_files(root)) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{root}: files not in the manifest: {', '.join(unlisted)}")
