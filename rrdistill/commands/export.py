"""Export: `rrdistill export` (Optimum ONNX bundles, quantization, TensorRT, parity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rrdistill.commands.common import fail, refuse_options
from rrdistill.extras import MissingExtraError


def is_causal_lm(checkpoint: Path) -> bool:
    """A generative checkpoint (the listwise LM student) rather than a cross-encoder."""
    import json

    config = checkpoint / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(str(a).endswith("ForCausalLM") for a in architectures)


LISTWISE_REFUSED = {
    "trt": "TensorRT export is for cross-encoders; a listwise-lm bundle is the ONNX decoder with its KV "
    "cache, run by onnxruntime",
    "optimize": "Optimum's ORTOptimizer levels are applied to cross-encoders; a listwise-lm bundle is "
    "exported unfused and onnxruntime optimises its graph when the runtime loads it",
    "int8_graph": "a listwise LM's int8 is chosen with --int8-scheme (weight-only or dynamic)",
}
"""Options a listwise LM export cannot honour, and why (every other option applies to it)."""
CROSS_ENCODER_REFUSED = {
    "min_agreement": "greedy-generation agreement is a listwise LM's parity figure; a cross-encoder's "
    "are max |Δscore|, Kendall τ and nDCG@10",
}


def _export_listwise(
    model_dir: Path, out_dir: Path, config: Any, overwrite: bool, json_path: Path | None
) -> None:
    """A listwise-lm bundle: decoder with KV cache, chat template, FIRST identifiers, enforced parity."""
    from rrdistill.export import ExportError
    from rrdistill.reporting import console, print_table, write_json

    if out_dir.exists() and not overwrite:
        raise fail(f"{out_dir} exists: pass --overwrite to replace it")
    try:
        from rrdistill.export.causal_lm import ListwiseParityError, export_listwise_lm
        from rrdistill.runtime.bundle import load_manifest

        config.check()
        with console.status("exporting the listwise LM (decoder with KV cache)"):
            bundle = export_listwise_lm(model_dir, out_dir, config)
    except ListwiseParityError as exc:
        print_table(
            "parity (refused)", ["", "value"], _listwise_parity_rows(exc.parity, exc.thresholds.to_json())
        )
        raise fail(str(exc)) from None
    except (ExportError, MissingExtraError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    manifest = load_manifest(bundle)
    listwise = manifest.extra["listwise"]
    export_details = manifest.extra["export"]
    quantization = export_details.get("quantization")
    parity = manifest.parity or {}
    rows = [
        ("bundle", str(bundle)),
        ("kind", manifest.kind),
        ("precision", manifest.precision),
        (
            "int8 quantization",
            _quantization_words(quantization),
        ),
        ("fast mode", "FIRST (one forward pass)" if listwise.get("first_token_ids") else "greedy generation"),
        ("window / step", f"{listwise['window_size']} / {listwise['step']}"),
        ("max_length (prompt + generation)", str(manifest.inputs.max_length)),
        (
            "generation budget fast / reasoning",
            f"{listwise['max_new_tokens_fast']} / {listwise['max_new_tokens_reasoning']}"
            + (" (capped by max_length)" if export_details["length_budget"]["capped"] else ""),
        ),
        *_listwise_parity_rows(parity, parity.get("thresholds", {})),
        (
            "verdict",
            "passed"
            if parity.get("passed")
            else "DRIFT ACCEPTED: " + "; ".join(parity.get("violations", [])),
        ),
    ]
    print_table("export (listwise-lm)", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, {"bundle": str(bundle), "manifest": manifest.to_json()})


def _quantization_words(quantization: dict | None) -> str:
    """How a bundle's int8 was made, in one line of the export summary."""
    if not quantization:
        return "-"
    if quantization.get("mode") == "weight-only":
        return f"weight-only, int8 blocks of {quantization['block_size']}, activations {quantization['activations']}"
    scales = "per-channel" if quantization["per_channel"] else "per-tensor"
    weights = f"{quantization['weights']} weights{' (7-bit)' if quantization.get('reduce_range') else ''}"
    graph = quantization.get("graph", "plain")
    return f"dynamic, {graph} graph, {quantization['isa']}, {weights}, {scales}"


def _listwise_parity_rows(parity: dict, thresholds: dict) -> list[tuple[str, str]]:
    def bound(name: str, relation: str) -> str:
        value = thresholds.get(name)
        return "" if value is None else f"  (threshold {relation} {value:g})"

    return [
        ("parity data", str(parity["data"])),
        ("max |Δ next-token logit|", f"{parity['max_abs_logit_diff']:.3g}{bound('max_logit_diff', '≤')}"),
        (
            "greedy token agreement",
            f"{parity['greedy_token_agreement']:.1%}{bound('min_token_agreement', '≥')}",
        ),
        (
            f"fast ranking ({parity['ranking_mode']}): Kendall τ mean / min",
            f"{parity['kendall_tau_mean']:.4f} / {parity['kendall_tau_min']:.4f}{bound('min_mean_tau', '≥')}",
        ),
        ("Δ nDCG@10 (fast ranking)", f"{parity['ndcg@10_delta']:+.4f}{bound('max_ndcg_delta', '|Δ| ≤')}"),
        ("top-1 agreement", f"{parity['top1_agreement']:.1%}"),
    ]


def export_model(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="Hugging Face cross-encoder checkpoint (num_labels=1), a sentence-transformers folder "
            "(a bi-encoder: mean or CLS pooling), or a listwise LM student",
            exists=True,
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(help="Bundle directory to write (must not exist)")],
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (GPU) | int8 (CPU, dynamic)")] = "fp32",
    optimize: Annotated[str | None, typer.Option(help="Optimum level O1..O4 (fp16 defaults to O4)")] = None,
    trt: Annotated[
        bool,
        typer.Option(
            "--trt",
            help="Serve a TensorRT engine built here (GPU + tensorrt); it loads only on the same GPU "
            "architecture and TensorRT version",
        ),
    ] = False,
    max_length: Annotated[
        int | None,
        typer.Option(
            min=8,
            help="Cross-encoder: tokens per pair (default: the training length the checkpoint saved, at most "
            "512). Bi-encoder: tokens per text (default: its max_seq_length). Listwise LM: longest prompt + "
            "generation, generation budgets capped to fit (default: the model's positions, at most 4096)",
        ),
    ] = None,
    accept_drift: Annotated[
        bool, typer.Option("--accept-drift", help="Write the bundle even if parity misses the thresholds")
    ] = False,
    parity_queries: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Queries parity is measured on (default: 30; a listwise LM: 8, one window of each)",
        ),
    ] = None,
    parity_passages: Annotated[int, typer.Option(min=2, help="BM25 candidates per parity query")] = 50,
    parity_data: Annotated[
        Path, typer.Option(help="BEIR folder parity is measured on (its test split)")
    ] = Path("data/scifact"),
    max_abs_diff: Annotated[
        float | None, typer.Option(help="Threshold: max |Δscore| (listwise LM: of next-token logits)")
    ] = None,
    min_tau: Annotated[
        float | None,
        typer.Option(
            help="Threshold: mean Kendall τ per query (listwise LM: of the fast ranking per window)"
        ),
    ] = None,
    max_ndcg_delta: Annotated[
        float | None, typer.Option(help="Threshold: |Δ nDCG@10| (listwise LM: of the fast ranking)")
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Listwise LM threshold: greedy-generation token agreement"),
    ] = None,
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="int8 weight scales per channel or per tensor")
    ] = True,
    isa: Annotated[
        str | None, typer.Option(help="int8: avx512_vnni | avx512 | avx2 | arm64 (default: this CPU's)")
    ] = None,
    int8_scheme: Annotated[
        str | None,
        typer.Option(
            help="Listwise LM int8: weight-only (MatMulNBits, int8 weights in blocks of 32; the default) "
            "or dynamic (per-tensor activation scales, as cross-encoders; --isa / --per-tensor tune it)"
        ),
    ] = None,
    int8_graph: Annotated[
        str | None,
        typer.Option(
            help="Cross-encoder int8: fused (quantized after onnxruntime's transformer fusions: QAttention, "
            "s8 weights; O2 unless --optimize O3; the default) or plain (Optimum's preset on the unfused graph)"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR if it exists")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the export report (parity, timings) as JSON")
    ] = None,
) -> None:
    """Export a cross-encoder, a bi-encoder or a listwise LM student to a self-checking bundle (Optimum ONNX)."""
    from dataclasses import replace

    if precision != "int8":
        refuse_options(
            f"--precision {precision}",
            {n: "it tunes int8 quantization" for n in ("isa", "per_channel", "int8_scheme", "int8_graph")},
        )
    if is_causal_lm(model_dir):
        refuse_options("a listwise LM (causal LM) export", LISTWISE_REFUSED)
        try:
            from rrdistill.export.causal_lm import DEFAULT_LISTWISE_THRESHOLDS, ListwiseExportConfig
            from rrdistill.export.validate import ParityConfig
        except MissingExtraError as exc:
            raise fail(str(exc)) from None
        if precision not in DEFAULT_LISTWISE_THRESHOLDS:
            raise fail(
                f"--precision for a listwise LM must be one of {', '.join(DEFAULT_LISTWISE_THRESHOLDS)}"
            )
        listwise_overrides = {
            k: v
            for k, v in {
                "max_logit_diff": max_abs_diff,
                "min_token_agreement": min_agreement,
                "min_mean_tau": min_tau,
                "max_ndcg_delta": max_ndcg_delta,
            }.items()
            if v is not None
        }
        scheme = {"int8_scheme": int8_scheme} if int8_scheme is not None else {}
        listwise_config = ListwiseExportConfig(
            precision=precision,
            **scheme,
            max_length=max_length,
            per_channel=per_channel,
            isa=isa,
            parity=ParityConfig(data=parity_data, queries=parity_queries or 8, passages=parity_passages),
            thresholds=replace(DEFAULT_LISTWISE_THRESHOLDS[precision], **listwise_overrides),
            accept_drift=accept_drift,
        )
        _export_listwise(model_dir, out_dir, listwise_config, overwrite, json_path)
        return
    refuse_options(
        "a cross-encoder export",
        {**CROSS_ENCODER_REFUSED, "int8_scheme": "cross-encoders quantize dynamically (batched encoders)"},
    )

    from rrdistill.export import ExportError
    from rrdistill.reporting import console, print_table, write_json

    try:
        from rrdistill.export.pipeline import ExportConfig, ParityError, export_bundle
        from rrdistill.export.validate import DEFAULT_THRESHOLDS, ParityConfig
    except MissingExtraError as exc:
        raise fail(str(exc)) from None
    if precision not in DEFAULT_THRESHOLDS:
        raise fail(f"--precision must be one of {', '.join(DEFAULT_THRESHOLDS)}, got {precision!r}")
    overrides = {
        k: v
        for k, v in {
            "max_abs_diff": max_abs_diff,
            "min_mean_tau": min_tau,
            "max_ndcg_delta": max_ndcg_delta,
        }.items()
        if v is not None
    }
    config = ExportConfig(
        precision=precision,
        optimize=optimize.upper() if optimize else None,
        trt=trt,
        max_length=max_length,
        accept_drift=accept_drift,
        per_channel=per_channel,
        isa=isa,
        **({"int8_graph": int8_graph} if int8_graph is not None else {}),
        thresholds=replace(DEFAULT_THRESHOLDS[precision], **overrides),
        parity=ParityConfig(data=parity_data, queries=parity_queries or 30, passages=parity_passages),
        overwrite=overwrite,
    )
    try:
        with console.status("exporting") as status:
            result = export_bundle(
                model_dir, out_dir, config, progress=lambda message: status.update(message)
            )
    except ParityError as exc:
        print_table(
            "parity (refused)", ["", "value"], _parity_rows(exc.report.to_json(), exc.thresholds.to_json())
        )
        raise fail(str(exc)) from None
    except (ExportError, MissingExtraError, FileExistsError, OSError) as exc:
        raise fail(str(exc)) from None
    manifest = result.manifest
    export_details = manifest.extra.get("export", {})
    quantization = export_details.get("quantization")
    embedding = manifest.embedding
    rows = [
        ("bundle", str(result.bundle)),
        ("kind", manifest.kind),
        *(
            [
                (
                    "embedding",
                    f"{embedding.pooling} pooling, {'cosine' if embedding.normalize else 'dot product'}",
                )
            ]
            if embedding is not None
            else []
        ),
        ("model", f"{manifest.model.file} ({manifest.model.engine})"),
        ("precision", manifest.precision),
        ("optimisation", export_details.get("optimize") or "-"),
        (
            "int8 quantization",
            _quantization_words(quantization),
        ),
        ("max_length", str(manifest.inputs.max_length)),
        ("providers validated", ", ".join(manifest.providers_validated)),
        *_parity_rows(manifest.parity, result.thresholds.to_json()),
        ("verdict", "passed" if not result.violations else "DRIFT ACCEPTED: " + "; ".join(result.violations)),
        ("bundle size", f"{result.size_bytes / 1e6:.1f} MB"),
        ("wall time", f"{result.timings.get('total', 0.0):.1f} s"),
    ]
    print_table("export", ["", "value"], rows)
    if json_path is not None:
        write_json(json_path, {"bundle": str(result.bundle), "manifest": manifest.to_json()})


def _parity_rows(parity: dict, thresholds: dict) -> list[tuple[str, str]]:
    def bound(name: str, relation: str) -> str:
        value = thresholds.get(name)
        return "" if value is None else f"  (threshold {relation} {value:g})"

    return [
        ("parity data", f"{parity['data']} ({parity['pairs']:,} pairs)"),
        ("max |Δscore|", f"{parity['max_abs_diff']:.3g}{bound('max_abs_diff', '≤')}"),
        ("mean |Δscore|", f"{parity['mean_abs_diff']:.3g}"),
        (
            "Kendall τ per query (mean / min)",
            f"{parity['kendall_tau_mean']:.4f} / {parity['kendall_tau_min']:.4f}{bound('min_mean_tau', '≥')}",
        ),
        ("nDCG@10 source → exported", f"{parity['ndcg@10_source']:.4f} → {parity['ndcg@10_exported']:.4f}"),
        ("Δ nDCG@10", f"{parity['ndcg@10_delta']:+.4f}{bound('max_ndcg_delta', '|Δ| ≤')}"),
        ("top-1 agreement", f"{parity['top1_agreement']:.1%}"),
    ]
