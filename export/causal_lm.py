"""Export a listwise LM (a causal LM trained on the listwise prompt) to a ``listwise-lm`` bundle.

Optimum exports the decoder with its KV cache (``text-generation-with-past``); the runtime's numpy
loop (:mod:`rrdistill.runtime.generation`) decodes with it. The manifest carries what the runtime
needs to prompt the model without transformers or jinja: the chat template rendered with
``{system}``/``{user}`` slots (checked to render real prompts exactly as ``apply_chat_template``
does), the end-of-sequence and padding ids the checkpoint declares, the
generation budgets (bounded by ``max_length``), and — when every identifier ``1..window`` is a
single token right after ``<answer>[`` — those token ids, so the fast mode can rank a window from
one forward pass (FIRST). A tokenizer that splits numbers into digits (SmolLM2's) makes ``[10]``
two tokens: such a bundle's fast mode ranks by a short greedy answer instead.
The provenance names the base checkpoint (a GGUF's upstream and sha256) the model started from.

Parity is measured on real BM25 windows (the ``parity`` data) against transformers and enforced
like a cross-encoder's: next-token logits max |Δ|, greedy-generation token agreement, and the
fast mode's ranking (FIRST logits or parsed greedy answers) by Kendall τ and nDCG@10. A bundle
that misses the thresholds is not written unless drift is accepted, and then the drift is
recorded in its manifest.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.checkpoint_names import TRAINING_RECORD
from rrdistill.export import ExportError
from rrdistill.export.validate import ParityConfig
from rrdistill.extras import require
from rrdistill.hf_tokenizers import open_tokenizer
from rrdistill.prompts import PROMPT_VERSION, build_messages
from rrdistill.runtime.bundle import InputSpec, Manifest, ModelSpec, write_manifest

_SENTINEL_SYSTEM = "\u2060RRDISTILL-SYSTEM\u2060"
_SENTINEL_USER = "\u2060RRDISTILL-USER\u2060"
PRECISIONS = ("fp32", "int8")
INT8_SCHEMES = ("weight-only", "dynamic")
DEFAULT_MAX_LENGTH = 4096
QUERY_TOKENS_RESERVED = 32
"""Tokens of query text the length budget reserves (passages are cut by tokens, queries are not)."""


@dataclass(frozen=True)
class ListwiseParityThresholds:
    """Bounds a listwise-lm bundle must meet against transformers; ``None`` leaves a figure unchecked."""

    max_logit_diff: float | None = None
    """Max |Δ| of next-token logits (whole vocabulary) at the end of each parity prompt."""
    min_token_agreement: float | None = None
    """Share of greedy-generated tokens (reasoning prompts) equal to transformers' at the same position."""
    min_mean_tau: float | None = None
    """Mean Kendall τ per window of the fast mode's ranking (FIRST logits, or the parsed greedy answer)."""
    max_ndcg_delta: float | None = None
    """Bound on |nDCG@10(exported) − nDCG@10(source)| of the fast mode's window rankings."""

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)


DEFAULT_LISTWISE_THRESHOLDS = {
    "fp32": ListwiseParityThresholds(
        max_logit_diff=1e-3, min_token_agreement=0.95, min_mean_tau=0.99, max_ndcg_delta=1e-3
    ),
    "int8": ListwiseParityThresholds(
        max_logit_diff=None, min_token_agreement=0.5, min_mean_tau=0.5, max_ndcg_delta=0.05
    ),
}
"""fp32 must be the same model (greedy decoding may still flip an exact near-tie, hence 0.95, not 1);
int8 may reorder near-ties but must not break the graph (a broken decoder agrees on ~no tokens)."""


@dataclass(frozen=True)
class ListwiseExportConfig:
    precision: str = "fp32"
    """fp32, or int8 (see `int8_scheme`)."""
    int8_scheme: str = "weight-only"
    """int8: ``weight-only`` (MatMulNBits: int8 weights in blocks, the default: a decoder's activation
    outliers break per-tensor activation scales) or ``dynamic`` (Optimum's ORTQuantizer, as for
    cross-encoders; `isa` and `per_channel` tune it)."""
    passage_max_tokens: int = 128
    window_size: int = 20
    step: int = 10
    max_new_tokens_fast: int = 200
    max_new_tokens_reasoning: int = 1024
    max_length: int | None = None
    """Longest sequence (prompt + generated tokens) the bundle serves; default: the model's positions,
    at most 4096. The generation budgets are capped so a full window's prompt plus its budget fits."""
    per_channel: bool = True
    """dynamic int8: one weight scale per output channel (else per tensor)."""
    isa: str | None = None
    """dynamic int8: the instruction set to tune for (default: this CPU's, see ``quantize.detect_isa``)."""
    parity: ParityConfig = field(default_factory=lambda: ParityConfig(queries=3, passages=10))
    """The BEIR data parity windows are cut from (the first ``window_size`` BM25 candidates per query)."""
    parity_new_tokens: int = 24
    """Greedy tokens generated per parity window (reasoning prompt) by both sides."""
    thresholds: ListwiseParityThresholds | None = None
    """Default: :data:`DEFAULT_LISTWISE_THRESHOLDS` for the precision."""
    accept_drift: bool = False
    """Write the bundle even when parity misses the thresholds (the drift is recorded in the manifest)."""

    def check(self) -> None:
        """Refuse impossible settings before any work is done."""
        if self.precision not in PRECISIONS:
            raise ExportError(
                f"listwise-lm export supports {' and '.join(PRECISIONS)}, not {self.precision!r}"
            )
        if self.precision != "int8" and (self.isa is not None or not self.per_channel):
            raise ExportError("isa and per-tensor scales choose int8 quantization: use them with int8")
        if self.int8_scheme not in INT8_SCHEMES:
            raise ExportError(f"int8 scheme {self.int8_scheme!r} is not one of {', '.join(INT8_SCHEMES)}")
        if self.int8_scheme == "weight-only" and (self.isa is not None or not self.per_channel):
            raise ExportError(
                "isa and per-tensor scales tune dynamic int8: use them with the dynamic int8 scheme "
                "(weight-only int8 scales every block of 32 weights and runs on any CPU)"
            )
        if self.max_length is not None and self.max_length < 8:
            raise ExportError(f"max_length {self.max_length} is too small")
        from rrdistill.export.quantize import ISAS

        if self.isa is not None and self.isa not in ISAS:
            raise ExportError(f"unknown instruction set {self.isa!r}: use one of {', '.join(ISAS)}")


class ListwiseParityError(ExportError):
    """The exported listwise LM drifted beyond the thresholds; nothing was written."""

    def __init__(self, parity: dict[str, Any], found: list[str], thresholds: ListwiseParityThresholds):
        self.parity, self.violations, self.thresholds = parity, found, thresholds
        super().__init__(
            "parity check failed: " + "; ".join(found) + " — no bundle written "
            "(pass --accept-drift to write it anyway, recorded in its manifest, or loosen the thresholds)"
        )


def listwise_violations(parity: dict[str, Any], thresholds: ListwiseParityThresholds) -> list[str]:
    """Human-readable reasons `parity` fails `thresholds` (empty: it passes)."""
    found = []
    logits, agreement = parity["max_abs_logit_diff"], parity["greedy_token_agreement"]
    tau, ndcg = parity["kendall_tau_mean"], abs(parity["ndcg@10_delta"])
    if thresholds.max_logit_diff is not None and not logits <= thresholds.max_logit_diff:
        found.append(f"max |Δ next-token logit| {logits:.3g} > {thresholds.max_logit_diff:.3g}")
    if thresholds.min_token_agreement is not None and not agreement >= thresholds.min_token_agreement:
        found.append(f"greedy token agreement {agreement:.4f} < {thresholds.min_token_agreement:.4f}")
    if thresholds.min_mean_tau is not None and not tau >= thresholds.min_mean_tau:
        found.append(f"mean Kendall τ of the fast ranking {tau:.4f} < {thresholds.min_mean_tau:.4f}")
    if thresholds.max_ndcg_delta is not None and not ndcg <= thresholds.max_ndcg_delta:
        found.append(f"|Δ nDCG@10| of the fast ranking {ndcg:.4f} > {thresholds.max_ndcg_delta:.4f}")
    return found


def chat_template_slots(tokenizer: Any) -> str:
    """The tokenizer's chat template rendered once, with ``{system}`` and ``{user}`` slots."""
    messages = [{"role": "system", "content": _SENTINEL_SYSTEM}, {"role": "user", "content": _SENTINEL_USER}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered.count(_SENTINEL_SYSTEM) != 1 or rendered.count(_SENTINEL_USER) != 1:
        raise ValueError("the chat template must place the system and user messages verbatim, once each")
    return rendered.replace(_SENTINEL_SYSTEM, "{system}").replace(_SENTINEL_USER, "{user}")


def check_chat_template(tokenizer: Any, template: str) -> None:
    """Refuse a slot template that renders a real prompt differently from ``apply_chat_template``.

    The runtime fills the slots by literal replacement; a template that branches on content (a
    default system prompt, whitespace trimming, escaping) would serve a prompt the model was not
    trained on. Checked on both modes' real prompts, with braces and non-ASCII text in them.
    """
    from rrdistill.types import Passage

    passages = [Passage("a", "Ünïcode {braces} & <tags>\nsecond line", "T"), Passage("b", "{user} [3] text")]
    for reasoning in (True, False):
        messages = build_messages("a {system} query?", passages, reasoning=reasoning)
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        served = template.replace("{system}", messages[0]["content"]).replace(
            "{user}", messages[1]["content"]
        )
        if served != expected:
            raise ExportError(
                "the chat template does not render by slot replacement (it changes the messages or "
                f"branches on them): transformers gives {expected[:160]!r}…, the slots {served[:160]!r}…"
            )


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


def special_token_ids(checkpoint: Path, tokenizer: Any) -> tuple[list[int], int]:
    """End-of-sequence ids and the padding id, as the checkpoint declares them.

    EOS: the tokenizer's ``eos_token_id`` and every id of ``generation_config.eos_token_id`` (chat
    models end a turn with one token and a document with another; generation must stop at both).
    Padding: the tokenizer's ``pad_token_id``, else the generation config's, else the first EOS
    (the runtime masks padded positions, so any id works; Llama-style checkpoints have none).
    """
    transformers = require("transformers", "export", "exporting a listwise LM")
    generation = (
        transformers.GenerationConfig.from_pretrained(checkpoint)
        if (checkpoint / "generation_config.json").is_file()
        else None
    )
    declared = getattr(generation, "eos_token_id", None)
    declared = declared if isinstance(declared, list | tuple) else [declared]
    eos = sorted({int(t) for t in (tokenizer.eos_token_id, *declared) if t is not None})
    if not eos:
        raise ExportError(
            f"{checkpoint}: no end-of-sequence token: set eos_token in tokenizer_config.json or "
            "eos_token_id in generation_config.json (generation would never stop)"
        )
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(generation, "pad_token_id", None)
    return eos, int(pad) if pad is not None else eos[0]


def _length_budget(
    tokenizer: Any, template: str, config: ListwiseExportConfig, positions: int | None
) -> tuple[int, dict[str, Any]]:
    """The bundle's max_length and generation budgets: a full window's longest prompt (passages at
    ``passage_max_tokens``, a query of :data:`QUERY_TOKENS_RESERVED` tokens) plus each mode's budget
    must fit in max_length; budgets are capped to fit, and refused if an answer no longer fits."""
    from rrdistill.prompts import TokenTruncator
    from rrdistill.types import Passage

    if config.max_length is not None and positions is not None and config.max_length > positions:
        raise ExportError(
            f"max_length {config.max_length} exceeds the model's {positions} positions "
            "(max_position_embeddings)"
        )
    max_length = config.max_length or min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
    truncate = TokenTruncator(config.passage_max_tokens, tokenizer)
    passages = [
        Passage(str(i), " ".join(["evidence"] * 4 * config.passage_max_tokens))
        for i in range(config.window_size)
    ]
    query = " ".join(["query"] * QUERY_TOKENS_RESERVED)
    answer = " > ".join(f"[{k}]" for k in range(config.window_size, 0, -1))
    minimum = {
        "fast": f"<answer>{answer}</answer>",
        "reasoning": f"<think></think><answer>{answer}</answer>",
    }
    wanted = {"fast": config.max_new_tokens_fast, "reasoning": config.max_new_tokens_reasoning}
    prompts, budgets = {}, {}
    for mode in ("fast", "reasoning"):
        system, user = (
            m["content"]
            for m in build_messages(query, passages, reasoning=mode == "reasoning", truncate=truncate)
        )
        prompt = template.replace("{system}", system).replace("{user}", user)
        prompts[mode] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        need = len(tokenizer(minimum[mode], add_special_tokens=False)["input_ids"])
        budgets[mode] = min(wanted[mode], max_length - prompts[mode])
        if budgets[mode] < min(need, wanted[mode]):  # a smaller budget than an answer is the caller's choice
            raise ExportError(
                f"max_length {max_length} cannot hold a full {mode} window: its prompt is {prompts[mode]} "
                f"tokens ({config.window_size} passages × {config.passage_max_tokens} tokens) and an answer "
                f"needs {need} more; raise max_length or cut passages shorter"
            )
    return max_length, {
        "prompt_tokens": prompts,
        "max_new_tokens": budgets,
        "capped": budgets != wanted,
        "query_tokens_reserved": QUERY_TOKENS_RESERVED,
    }


def export_listwise_lm(
    checkpoint: str | Path, out_dir: str | Path, config: ListwiseExportConfig | None = None
) -> Path:
    """Export `checkpoint` to a verified ``listwise-lm`` bundle at `out_dir` (written atomically).

    Raises :class:`ListwiseParityError` (nothing written, an existing `out_dir` untouched) when
    parity misses the thresholds and drift was not accepted.
    """
    config = config or ListwiseExportConfig()
    config.check()
    transformers = require("transformers", "export", "exporting a listwise LM")
    exporters = require("optimum.exporters.onnx", "export", "exporting a listwise LM")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    tokenizer = open_tokenizer(checkpoint)
    positions = getattr(transformers.AutoConfig.from_pretrained(checkpoint), "max_position_embeddings", None)
    template = chat_template_slots(tokenizer)
    check_chat_template(tokenizer, template)
    eos, pad = special_token_ids(checkpoint, tokenizer)
    max_length, budget = _length_budget(tokenizer, template, config, positions)
    thresholds = config.thresholds or DEFAULT_LISTWISE_THRESHOLDS[config.precision]
    details: dict[str, Any] = {
        "precision": config.precision,
        "max_length": max_length,
        "length_budget": budget,
        "parity_new_tokens": config.parity_new_tokens,
    }
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        raw = staging / "optimum"
        exporters.main_export(str(checkpoint), raw, task="text-generation-with-past", do_validation=False)
        bundle = staging / "bundle"
        bundle.mkdir()
        if config.precision == "int8":
            from rrdistill.export.onnx import OnnxModel
            from rrdistill.export.quantize import (
                output_projection_nodes,
                quantize_dynamic_int8,
                quantize_weight_only_int8,
            )

            source, head = OnnxModel.read(raw / "model.onnx"), output_projection_nodes(raw / "model.onnx")
            if config.int8_scheme == "weight-only":
                model, settings = quantize_weight_only_int8(source, staging / "quantized", exclude_nodes=head)
            else:
                model, settings = quantize_dynamic_int8(
                    source,
                    staging / "quantized",
                    isa=config.isa,
                    per_channel=config.per_channel,
                    exclude_nodes=head,
                )
            shutil.copy(model.path, bundle / "model.onnx")
            details["quantization"] = settings.to_json()
        else:
            shutil.copy(raw / "model.onnx", bundle / "model.onnx")
        tokenizer.backend_tokenizer.save(str(bundle / "tokenizer.json"))
        settings_json = {
            "chat_template": template,
            "eos_token_ids": eos,
            "pad_token_id": pad,
            "passage_max_tokens": config.passage_max_tokens,
            "window_size": config.window_size,
            "step": config.step,
            "max_new_tokens_fast": budget["max_new_tokens"]["fast"],
            "max_new_tokens_reasoning": budget["max_new_tokens"]["reasoning"],
            "first_token_ids": first_identifier_tokens(tokenizer, template, config.window_size),
        }
        manifest = Manifest(
            kind="listwise-lm",
            precision=config.precision,
            model=ModelSpec(
                inputs=["input_ids", "attention_mask", "position_ids", "past_key_values.*"], output="logits"
            ),
            inputs=InputSpec(
                max_length=max_length, passage_template="{title} {text}", truncation="passage_tokens"
            ),
            prompt_version=PROMPT_VERSION,
            extra={"listwise": settings_json, "export": details},
            provenance=_provenance(checkpoint, time.perf_counter() - started),
        )
        write_manifest(bundle, manifest)  # provisional: the runtime verifies what it loads
        parity = measure_listwise_parity(checkpoint, bundle, config.parity, config.parity_new_tokens)
        found = listwise_violations(parity, thresholds)
        if found and not config.accept_drift:
            raise ListwiseParityError(parity, found, thresholds)
        manifest.parity = {
            **parity,
            "thresholds": thresholds.to_json(),
            "passed": not found,
            "violations": found,
            "drift_accepted": bool(found) and config.accept_drift,
        }
        write_manifest(bundle, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        bundle.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _provenance(checkpoint: Path, seconds: float) -> dict[str, Any]:
    import json

    import onnxruntime
    import optimum.version
    import torch
    import transformers

    def record(name: str) -> dict[str, Any] | None:
        path = checkpoint / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    training = record(TRAINING_RECORD) or record("rrdistill_teacher.json")
    return {
        "source_checkpoint": str(checkpoint),
        "base_checkpoint": base_checkpoint(checkpoint),
        "training": training,
        "export_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "optimum": optimum.version.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def base_checkpoint(checkpoint: Path) -> dict[str, Any] | None:
    """What `checkpoint` started from: the GGUF record (upstream, file, sha256) of a converted
    base (``rrdistill_source.json``), of the base a trained listwise LM was fine-tuned from
    (``rrdistill_teacher.json``'s ``base_source``), or None when the folder says nothing."""
    import json

    source = checkpoint / "rrdistill_source.json"  # a GGUF converted by distill.checkpoints
    if source.is_file():
        return dict(json.loads(source.read_text(encoding="utf-8")))
    trained = checkpoint / "rrdistill_teacher.json"  # trained by the teacher trainer (SFT/GRPO)
    if trained.is_file():
        base = json.loads(trained.read_text(encoding="utf-8"))
        return {"base_model": base.get("base_model"), **(base.get("base_source") or {})}
    return None


def measure_listwise_parity(
    checkpoint: Path, bundle: Path, data: ParityConfig, new_tokens: int = 24
) -> dict[str, Any]:
    """The bundle as the runtime serves it vs the checkpoint in transformers (torch fp32).

    Windows are the first ``window_size`` BM25 candidates of each parity query. Per window:
    next-token logits at the end of the reasoning and fast prompts (max |Δ|), `new_tokens` greedy
    tokens of the reasoning prompt (positionwise agreement), and the fast mode's ranking — FIRST
    identifier logits when the bundle has them, else the parsed greedy answer — compared with
    :func:`~rrdistill.export.validate.compare` (Kendall τ, nDCG@10 with the qrels, top-1).
    """
    import numpy as np

    torch = require("torch", "export", "parity checks")
    transformers = require("transformers", "export", "parity checks")
    from rrdistill.export.validate import compare, parity_data
    from rrdistill.prompts import parse_answer
    from rrdistill.runtime.reasoning import ListwiseReranker, OnnxWindowRanker
    from rrdistill.types import Request

    started = time.perf_counter()
    engine = ListwiseReranker.load(bundle, threads=1).engine
    settings = engine.settings
    tokenizer = open_tokenizer(checkpoint)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    requests, qrels = parity_data(data)
    windows = [Request(r.query, r.candidates[: settings.window_size]) for r in requests]
    windows = [w for w in windows if len(w.candidates) >= 2]
    first = settings.first_token_ids

    def encode(text: str) -> Any:
        return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    agree = total = 0
    gaps: list[float] = []
    reference: list[np.ndarray] = []
    with torch.inference_mode():
        for window in windows:
            ids = encode(engine.prompt(window, reasoning=True))
            generated = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=settings.pad_token_id,
                eos_token_id=settings.eos_token_ids,
            )[0, ids.shape[1] :].tolist()
            ours = engine.model.generate([ids[0].tolist()], new_tokens)[0].token_ids
            n = min(len(ours), len(generated))
            agree += sum(a == b for a, b in zip(ours[:n], generated[:n], strict=True))
            total += max(len(ours), len(generated))
            gaps.append(_logit_gap(model, engine, ids))
            n_passages = len(window.candidates)
            if first is not None:
                fast = encode(engine.prompt(window, reasoning=False) + settings.answer_prefix)
                logits = model(fast).logits[0, -1].float().numpy()
                gaps.append(_logit_gap(model, engine, fast, logits))
                reference.append(logits[np.asarray(first[:n_passages])])
            else:
                fast = encode(engine.prompt(window, reasoning=False))
                answer = model.generate(
                    fast,
                    attention_mask=torch.ones_like(fast),
                    max_new_tokens=settings.max_new_tokens_fast,
                    do_sample=False,
                    pad_token_id=settings.pad_token_id,
                    eos_token_id=settings.eos_token_ids,
                    stop_strings=[OnnxWindowRanker.STOP],
                    tokenizer=tokenizer,
                )[0, fast.shape[1] :]
                text = tokenizer.decode(answer, skip_special_tokens=True)
                reference.append(_rank_scores(parse_answer(text, n_passages, reasoning=False).order))
    exported = [
        np.asarray(out.scores) if out.scores is not None else _rank_scores(out.order)
        for out in engine(windows, False)
    ]
    ranking = compare(
        windows,
        qrels,
        reference,
        exported,
        data=f"{Path(data.data).name}/{data.split}: {len(windows)} windows of BM25 top-{settings.window_size}",
        seconds=time.perf_counter() - started,
    ).to_json()
    return {
        "reference": "transformers (torch fp32): greedy generation, next-token logits, fast-mode ranking",
        "greedy_token_agreement": agree / max(total, 1),
        "max_abs_logit_diff": max(gaps),
        "windows": len(windows),
        "new_tokens": new_tokens,
        "ranking_mode": "FIRST (identifier logits)" if first is not None else "greedy answer (parsed)",
        "ranking_max_abs_diff": ranking.pop("max_abs_diff"),
        "ranking_mean_abs_diff": ranking.pop("mean_abs_diff"),
        **ranking,
    }


def _logit_gap(model: Any, engine: Any, ids: Any, reference: Any = None) -> float:
    import numpy as np

    if reference is None:
        reference = model(ids).logits[0, -1].float().numpy()
    ours = engine.model.next_token_logits([ids[0].tolist()])[0]
    return float(np.max(np.abs(ours - reference)))


def _rank_scores(order: list[int]) -> Any:
    """Scores in input order from a ranking (best first): the best of n gets n, the last 1."""
    import numpy as np

    scores = np.empty(len(order), dtype=np.float64)
    scores[np.asarray(order, dtype=np.int64)] = len(order) - np.arange(len(order))
    return scores
