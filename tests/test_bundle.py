"""Bundle manifests: written with checksums, and every kind of damage refused with its reason."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from rrdistill.runtime.bundle import MANIFEST_NAME, BundleError, Manifest, load_manifest, write_manifest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.onnx").write_bytes(os.urandom(4096))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    manifest = Manifest(kind="cross-encoder", precision="int8", provenance={"source": "unit test"})
    manifest.parity = {"max_abs_diff": 0.01}
    write_manifest(root, manifest)
    return root


def test_round_trip(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    assert manifest.kind == "cross-encoder" and manifest.precision == "int8"
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.files["model.onnx"]["bytes"] == 4096
    assert manifest.parity == {"max_abs_diff": 0.01}


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: flip_byte(b / "model.onnx"), "model.onnx fails its sha256 check"),
        (lambda b: (b / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:100]), "has 100 bytes"),
        (
            lambda b: (b / "tokenizer.json").write_text('{"version": "2.0"}'),
            "tokenizer.json fails its sha256",
        ),
        (lambda b: (b / "extra.onnx").write_bytes(b"x"), "files not in the manifest: extra.onnx"),
        (
            lambda b: edit_manifest(b, lambda d: d["inputs"].update(max_length=4096)),
            "manifest checksum mismatch",
        ),
        (lambda b: edit_manifest(b, lambda d: d.update(format_version=99)), "bundle format version 99"),
        (lambda b: edit_manifest(b, lambda d: d.update(format="other")), "not an rrdistill-bundle manifest"),
        (lambda b: (b / MANIFEST_NAME).write_text("{broken"), "manifest is not valid JSON"),
        (lambda b: (b / MANIFEST_NAME).unlink(), "no rrdistill.json"),
    ],
)
def test_damaged_bundles_are_refused_with_the_reason(bundle: Path, damage, reason: str) -> None:
    damage(bundle)
    with pytest.raises(BundleError, match=re.escape(reason)):
        load_manifest(bundle)


def test_invalid_fields_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="precision 'int4'"):
        write_manifest(tmp_path, Manifest(kind="cross-encoder", precision="int4"))
    with pytest.raises(BundleError, match="kind 'colbert'"):
        write_manifest(tmp_path, Manifest(kind="colbert", precision="fp32"))
    with pytest.raises(BundleError, match="embedding section"):  # a bi-encoder must say how to pool
        write_manifest(tmp_path, Manifest(kind="bi-encoder", precision="fp32"))
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is named in the manifest but not in the bundle"):
        write_manifest(tmp_path, Manifest(kind="cross-encoder", precision="fp32"))


def test_checksums_use_the_core_file_digest(bundle: Path) -> None:
    """One sha256-of-a-file in the project: the bundle's checksums are the core's, which are hashlib's."""
    import hashlib

    from rrdistill import hashing
    from rrdistill.runtime import bundle as bundle_module

    assert bundle_module.sha256_file is hashing.sha256_file
    data = (bundle / "model.onnx").read_bytes()
    assert load_manifest(bundle).files["model.onnx"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(bundle / "model.onnx", chunk=7) == hashlib.sha256(data).hexdigest()
