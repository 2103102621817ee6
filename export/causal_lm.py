"""Export a listwise LM (a causal LM trained on the listwise prompt) to a ``listwise-lm`` bundle.

Optimum exports the decoder with its KV cache (``text-generation-with-past``); the runtime's numpy
loop (:mod:`rrdistill.runtime.generation`) decodes with it. The manifest carries what the runtime
needs to prompt the model without transformers or jinja: the chat template rendered with
``{system}``/``{user}`` slots, end-of-sequence ids, and — when every identifier ``1..window`` is
a single token right after ``<answer>[`` — those token ids, so the fast mode can rank a window from
one forward pass (FIRST). Parity: greedy generations of the ONNX model vs transformers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rrdistill.extras import require
from rrdistill.prompts import PROMPT_VERSION, build_messages
from rrdistill.runtime.bundle import InputSpec, Manifest, ModelSpec, write_manifest

_SENTINEL_SYSTEM = "\u2060RRDISTILL-SYSTEM\u2060"
_SENTINEL_USER = "\u2060RRDISTILL-USER\u2060"


@dataclass(frozen=True)
class ListwiseExportConfig:
    precision: str = "fp32"
    """fp32, or int8 (dynamic quantization of the decoder's MatMuls)."""
    passage_max_tokens: int = 128
    window_size: int = 20
    step: int = 10
    max_new_tokens_fast: int = 200
    max_new_tokens_reasoning: int = 1024
    max_length: int = 4096


def chat_template_slots(tokenizer: Any) -> str:
    """The tokenizer's chat template rendered once, with ``{system}`` and ``{user}`` slots."""
    messages = [{"role": "system", "content": _SENTINEL_SYSTEM}, {"role": "user", "content": _SENTINEL_USER}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered.count(_SENTINEL_SYSTEM) != 1 or rendered.count(_SENTINEL_USER) != 1:
        raise ValueError("the chat template must place the system and user messages verbatim, once each")
    return rendered.replace(_SENTINEL_SYSTEM, "{system}").replace(_SENTINEL_USER, "{user}")


def first_identifier_tokens(
    tokenizer: Any, template: str, window_size: int, answer_prefix: str = "<answer>["
) -> list[int] | None:
    """Token id of each identifier 1..window_size as the first token after `answer_prefix`, or None.

    FIRST needs every identifier to be exactly one token there, and distinct; with tokenizers
    that split digits (or merge ``[1`` into one token) the fast mode falls back to generation.
    """
    messages = build_messages("query", [], reasoning=False)
    prefix = (
        template.replace("{system}", messages[0]["content"]).replace("{user}", messages[1]["content"])
        + answer_prefix
    )
    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for k in range(1, window_size + 1):
        full = tokenizer(f"{prefix}{k}]", add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) < len(base) + 1:
            return None
        token = full[len(base)]
        if tokenizer.decode([token]) != str(k):
            return None
        ids.append(int(token))
    return ids if len(set(ids)) == len(ids) else None


def export_listwise_lm(
    checkpoint: str | Path, out_dir: str | Path, config: ListwiseExportConfig | None = None
) -> Path:
    """Export `checkpoint` to a verified ``listwise-lm`` bundle at `out_dir` (written atomically)."""
    config = config or ListwiseExportConfig()
    transformers = require("transformers", "export", "exporting a listwise LM")
    exporters = require("optimum.exporters.onnx", "export", "exporting a listwise LM")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    template = chat_template_slots(tokenizer)
    eos = {tokenizer.eos_token_id} | {
        tokenizer.convert_tokens_to_ids(t)
        for t in ("<|im_end|>", "<|endoftext|>")
        if t in tokenizer.get_vocab()
    }
    eos.discard(None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        raw = staging / "optimum"
        exporters.main_export(str(checkpoint), raw, task="text-generation-with-past", do_validation=False)
        bundle = staging / "bundle"
        bundle.mkdir()
        if config.precision == "int8":
            _quantize_dynamic(raw / "model.onnx", bundle / "model.onnx")
        elif config.precision == "fp32":
            shutil.copy(raw / "model.onnx", bundle / "model.onnx")
        else:
            raise ValueError(f"listwise-lm export supports fp32 and int8, not {config.precision!r}")
        tokenizer.backend_tokenizer.save(str(bundle / "tokenizer.json"))
        settings = {
            "chat_template": template,
            "eos_token_ids": sorted(int(t) for t in eos),
            "pad_token_id": int(pad),
            "passage_max_tokens": config.passage_max_tokens,
            "window_size": config.window_size,
            "step": config.step,
            "max_new_tokens_fast": config.max_new_tokens_fast,
            "max_new_tokens_reasoning": config.max_new_tokens_reasoning,
            "first_token_ids": first_identifier_tokens(tokenizer, template, config.window_size),
        }
        manifest = Manifest(
            kind="listwise-lm",
            precision=config.precision,
            model=ModelSpec(
                inputs=["input_ids", "attention_mask", "position_ids", "past_key_values.*"], output="logits"
            ),
            inputs=InputSpec(
                max_length=config.max_length, passage_template="{title} {text}", truncation="passage_tokens"
            ),
            prompt_version=PROMPT_VERSION,
            extra={"listwise": settings, "export": asdict(config)},
            provenance=_provenance(checkpoint, time.perf_counter() - started),
        )
        write_manifest(bundle, manifest)
        manifest.parity = measure_generation_parity(checkpoint, bundle)
        write_manifest(bundle, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        bundle.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _quantize_dynamic(source: Path, target: Path) -> None:
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    quantization.quantize_dynamic(
        str(source), str(target), weight_type=quantization.QuantType.QInt8, per_channel=True
    )


def _provenance(checkpoint: Path, seconds: float) -> dict[str, Any]:
    import json

    import onnxruntime
    import optimum.version
    import torch
    import transformers

    training = checkpoint / "rrdistill_training.json"
    return {
        "source_checkpoint": str(checkpoint),
        "training": json.loads(training.read_text()) if training.exists() else None,
        "export_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "optimum": optimum.version.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def measure_generation_parity(
    checkpoint: Path, bundle: Path, windows: int = 3, new_tokens: int = 24
) -> dict[str, Any]:
    """Greedy continuations of ONNX vs transformers on listwise prompts: token agreement and logit gap."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rrdistill.runtime.reasoning import ListwiseReranker
    from rrdistill.types import Candidate, Passage, Query, Request

    engine = ListwiseReranker.load(bundle, threads=1).engine
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    agree = total = 0
    gaps = []
    for w in range(windows):
        passages = [Passage(str(i), f"passage {i} about topic {w} with some words") for i in range(5)]
        window = Request(
            Query(str(w), f"which passage is about topic {w}?"), [Candidate(p) for p in passages]
        )
        prompt = engine.prompt(window, reasoning=w % 2 == 0)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            reference = model.generate(
                ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            torch_logits = model(ids).logits[0, -1].numpy()
        ours = engine.model.generate([ids[0].tolist()], new_tokens)[0].token_ids
        expected = reference[0, ids.shape[1] :].tolist()
        n = min(len(ours), len(expected))
        agree += sum(a == b for a, b in zip(ours[:n], expected[:n], strict=True))
        total += n
        gaps.append(
            float(np.max(np.abs(engine.model.next_token_logits([ids[0].tolist()])[0] - torch_logits)))
        )
    return {
        "reference": "transformers greedy generation (torch fp32)",
        "greedy_token_agreement": agree / max(total, 1),
        "max_abs_logit_diff": max(gaps),
        "windows": windows,
        "new_tokens": new_tokens,
    }
