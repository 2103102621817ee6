"""A PEFT LoRA adapter → a llama.cpp LoRA adapter (GGUF), for a model fine-tuned from a GGUF base.

A teacher trained here starts from a GGUF model dequantized into a checkpoint, so its LoRA deltas
were learned against exactly the quantized base weights. llama.cpp applies an adapter next to
those weights (``y = Wx + α/r · B(Ax)``), so serving the base GGUF plus the adapters *is* the
trained model: a quarter of the fp32 checkpoint's memory, llama.cpp's server (concurrent slots,
any OpenAI-compatible client) and no torch, the way the synthesis labeller is served.

Adapters stack: a GRPO adapter trained on top of the merged SFT model is served together with
the SFT adapter (``W + ΔSFT + ΔGRPO`` is the GRPO model). The file layout follows llama.cpp's
``convert_lora_to_gguf.py``: ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and per adapted weight ``<gguf name>.lora_a`` (r × in) and ``.lora_b``
(out × r).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrdistill.extras import require

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CONVERTED = "llama.cpp-adapter.gguf"
"""Where :func:`llama_adapter` writes a PEFT folder's conversion (inside that folder)."""


def _llama_rotary_rows(weights: Any, heads: int) -> Any:
    """llama.cpp stores Llama's q/k projections with each head's rotary halves interleaved
    (``convert_hf_to_gguf`` permutes them; transformers' GGUF loader undoes it), so a delta to
    those weights is permuted the same way: its output rows, i.e. the rows of ``lora_b``."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _base_layout(base_gguf: Path) -> tuple[str, int, dict[str, Callable[[Any], Any]]]:
    """(architecture, blocks, per-projection row permutation) of the base GGUF."""
    gguf = require("gguf", "llm", "writing a llama.cpp LoRA adapter")
    fields = gguf.GGUFReader(str(base_gguf)).fields

    def value(key: str) -> Any:
        field = fields.get(key)
        if field is None:
            raise ValueError(f"{base_gguf.name}: no {key} in its metadata")
        return field.contents()

    arch = str(value("general.architecture"))
    blocks = int(value(f"{arch}.block_count"))
    if arch == "qwen2":
        return arch, blocks, {}
    if arch == "llama":
        heads = int(value(f"{arch}.attention.head_count"))
        kv_heads = (
            int(value(f"{arch}.attention.head_count_kv"))
            if f"{arch}.attention.head_count_kv" in fields
            else heads
        )
        return (
            arch,
            blocks,
            {
                "q_proj": lambda w: _llama_rotary_rows(w, heads),
                "k_proj": lambda w: _llama_rotary_rows(w, kv_heads),
            },
        )
    raise ValueError(
        f"{base_gguf.name}: LoRA adapters for llama.cpp are written for the qwen2 and llama "
        f"architectures (their tensor layouts are known here), not {arch}"
    )


def _adapter_settings(adapter: Path) -> dict[str, Any]:
    config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    unsupported = [
        name
        for name, bad in (
            ("DoRA", config.get("use_dora")),
            ("rsLoRA", config.get("use_rslora")),
            ("per-module ranks", config.get("rank_pattern")),
            ("per-module alphas", config.get("alpha_pattern")),
            ("modules_to_save", config.get("modules_to_save")),
            ("LoRA biases", config.get("lora_bias")),
        )
        if bad
    ]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise ValueError(
            f"{adapter}: llama.cpp applies plain LoRA (α/r · BA); this adapter uses "
            f"{', '.join(unsupported) or config.get('peft_type')}"
        )
    return config


def write_lora_gguf(
    adapter: str | os.PathLike[str], base_gguf: str | os.PathLike[str], destination: str | os.PathLike[str]
) -> Path:
    """Write the PEFT adapter folder `adapter` as a llama.cpp adapter for `base_gguf` at `destination`."""
    gguf = require("gguf", "llm", "writing a llama.cpp LoRA adapter")
    safetensors = require("safetensors.numpy", "train", "reading a PEFT LoRA adapter")
    adapter, base_gguf, destination = Path(adapter), Path(base_gguf), Path(destination)
    config = _adapter_settings(adapter)
    arch, blocks, permutations = _base_layout(base_gguf)
    arch_id = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    names = gguf.get_tensor_name_map(arch_id, blocks)
    weights = safetensors.load_file(str(adapter / ADAPTER_WEIGHTS))
    tensors: dict[str, Any] = {}
    for key in sorted(weights):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise ValueError(
                    f"{adapter}: {key} is not a LoRA A/B matrix (llama.cpp adapters hold only those)"
                )
            continue
        module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        target = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if target is None:
            raise ValueError(f"{adapter}: no {arch} GGUF tensor for {module}")
        down = weights[key].astype("float32")
        up = weights[key.replace(".lora_A.", ".lora_B.")].astype("float32")
        permute = permutations.get(module.rsplit(".", 1)[-1])
        tensors[f"{target}.lora_a"] = down
        tensors[f"{target}.lora_b"] = permute(up) if permute else up
    if not tensors:
        raise ValueError(f"{adapter}: no LoRA matrices in {ADAPTER_WEIGHTS}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.partial")
    try:
        writer = gguf.GGUFWriter(str(staging), arch)
        writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, destination)  # a reader never sees half an adapter
    finally:
        staging.unlink(missing_ok=True)
    return destination


def llama_adapter(path: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> Path:
    """A llama.cpp adapter for `path`: a GGUF adapter as it is, a PEFT adapter folder converted
    into ``<folder>/llama.cpp-adapter.gguf`` (rewritten each time: a few seconds, never stale)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not (path / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(
            f"{path}: neither a GGUF LoRA adapter nor a PEFT adapter folder (no {ADAPTER_CONFIG})"
        )
    return write_lora_gguf(path, base_gguf, path / CONVERTED)
