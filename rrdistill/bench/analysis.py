"""From the workers' raw measurements to the report: latencies, throughput, where the time went,
FLOP/s against the GEMM peak, nDCG@10 and its difference to the reference system."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rrdistill.bench.flops import EncoderShape
from rrdistill.bench.gemm import peak_gflops
from rrdistill.bench.prepare import BenchData
from rrdistill.bench.stats import paired_delta, summarize
from rrdistill.bench.systems import SystemSpec
from rrdistill.bench.targets import evaluate_targets
from rrdistill.metrics import evaluate
from rrdistill.types import Request

NDCG = "ndcg@10"
WORKLOADS = ("single", "batch")


def pair_lengths(bundle: Path, requests: Sequence[Request]) -> list[list[int]]:
    """Real tokens of every (query, passage) pair, as the bundle's tokenizer and truncation make them."""
    from tokenizers import Tokenizer

    from rrdistill.runtime.bundle import load_manifest

    manifest = load_manifest(bundle, verify_files=False)
    tokenizer = Tokenizer.from_file(str(bundle / manifest.tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(manifest.inputs.max_length, strategy="only_second")
    template = manifest.inputs.passage_template
    out = []
    for request in requests:
        pairs = [
            (request.query.text, template.format(title=c.passage.title, text=c.passage.text).strip())
            for c in request.candidates
        ]
        out.append([len(e.ids) for e in tokenizer.encode_batch(pairs)])
    return out


def failed(name: str, error: str, spec: SystemSpec | None = None) -> dict[str, Any]:
    return {"status": "failed", "error": error, "spec": spec.to_json() if spec else {"name": name}}


def _workload(
    raw: dict[str, Any],
    label: str,
    query_flops: Sequence[int],
    query_tokens: Sequence[int],
    shape: EncoderShape,
    peak: float | None,
) -> dict[str, Any]:
    timed = [i for i, t in enumerate(raw["timed"]) if t]
    latency = summarize([raw["latencies"][i] for i in timed], [raw["docs"][i] for i in timed])
    tokenize = sum(raw["sections"][i].get("tokenize", 0.0) for i in timed)
    model = sum(raw["sections"][i].get("model", 0.0) for i in timed)
    other = max(latency.total - tokenize - model, 0.0)
    shapes = [tuple(s) for i in timed for s in raw["shapes"][i]]
    useful = sum(query_flops[q] for i in timed for q in raw["queries"][i])
    real_tokens = sum(query_tokens[q] for i in timed for q in raw["queries"][i])
    executed = shape.executed_flops(shapes) if shapes else None
    executed_tokens = sum(b * w for b, w in shapes) if shapes else None

    def rate(flops: float | None, seconds: float) -> float | None:
        return flops / seconds / 1e9 if flops is not None and seconds > 0 else None

    executed_rate = rate(executed, latency.total)
    model_rate = rate(executed, model)
    return {
        "label": label,
        "latency": latency.to_json(),
        "breakdown": {
            "tokenize_seconds": tokenize,
            "model_seconds": model,
            "other_seconds": other,
            "tokenize_share": tokenize / latency.total,
            "model_share": model / latency.total,
            "other_share": other / latency.total,
            "model_calls": len(shapes),
        },
        "tokens": {
            "real": real_tokens,
            "executed": executed_tokens,
            "padding_efficiency": real_tokens / executed_tokens if executed_tokens else None,
        },
        "flops": {
            "counted_over": "executed = padded (batch x width) shapes of every model call; useful = real tokens",
            "useful": useful,
            "executed": executed,
            "useful_gflops_per_second": rate(useful, latency.total),
            "executed_gflops_per_second": executed_rate,
            "model_only_gflops_per_second": model_rate,
            "peak_gflops_per_second": peak,
            "fraction_of_peak": executed_rate / peak if executed_rate and peak else None,
            "model_only_fraction_of_peak": model_rate / peak if model_rate and peak else None,
        },
    }


def _quality(scores: dict[str, list[float]], data: BenchData) -> dict[str, Any]:
    run = {
        r.qid: {c.docid: s for c, s in zip(r.candidates, scores[r.qid], strict=True)} for r in data.requests
    }
    qrels = {r.qid: data.qrels[r.qid] for r in data.requests if r.qid in data.qrels}
    result = evaluate(run, qrels, [NDCG])
    return {NDCG: result.means[NDCG], "per_query": {q: v[NDCG] for q, v in result.per_query.items()}}


def _system(
    raw: dict[str, Any],
    data: BenchData,
    lengths: Sequence[Sequence[int]],
    shape: EncoderShape,
    peaks: dict[str, float | None],
) -> dict[str, Any]:
    spec = raw.get("spec", {})
    entry: dict[str, Any] = {
        "name": spec.get("name"),
        "kind": spec.get("kind"),
        "precision": spec.get("precision"),
        "description": spec.get("description", ""),
        "status": raw["status"],
        "versions": raw.get("versions", {}),
    }
    if raw["status"] != "ok":
        entry["error"] = raw.get("error", "unknown error")
        if raw.get("log_tail"):
            entry["log_tail"] = raw["log_tail"]
        return entry
    query_flops = [shape.useful_flops(q) for q in lengths]
    query_tokens = [sum(q) for q in lengths]
    peak = peaks["int8" if spec.get("precision") == "int8" else "fp32"]
    batch_label = f"{raw['batch_queries']} queries x {len(data.requests[0].candidates)} passages"
    labels = {"single": f"1 query x {len(data.requests[0].candidates)} passages", "batch": batch_label}
    entry.update(
        import_seconds=raw["import_seconds"],
        import_samples=raw["import_samples"],
        load_seconds=raw["load_seconds"],
        rss_mb=raw["rss_mb"],
        peak_rss_mb=raw["rss_mb"]["peak"],
        workloads={
            w: _workload(raw[w], labels[w], query_flops, query_tokens, shape, peak) for w in WORKLOADS
        },
        quality=_quality(raw["scores"], data),
        notes=raw.get("notes", []),
        extra=raw.get("extra", {}),
        op_profile=raw.get("op_profile"),
    )
    return entry


def _bm25(data: BenchData) -> dict[str, Any]:
    scores = {r.qid: [c.score if c.score is not None else 0.0 for c in r.candidates] for r in data.requests}
    return _quality(scores, data)


def analyse(
    raw: Sequence[dict[str, Any]],
    data: BenchData,
    lengths: Sequence[Sequence[int]],
    shape: EncoderShape,
    gemm: dict[str, Any],
    reference: str,
) -> dict[str, Any]:
    """The report body: systems, reference comparisons, targets."""
    gemm_peaks = gemm.get("peaks", []) if gemm.get("status") == "ok" else []
    peaks = {dtype: peak_gflops(gemm_peaks, dtype) for dtype in ("fp32", "int8")}
    systems = [_system(r, data, lengths, shape, peaks) for r in raw]
    ok = {s["name"]: s for s in systems if s["status"] == "ok"}
    ref_name = reference if reference in ok else None
    if ref_name is None:  # fall back to the first fp32 system measured
        ref_name = next((n for n, s in ok.items() if s["precision"] == "fp32"), None)
    ref = ok.get(ref_name) if ref_name else None
    for system in ok.values():
        comparison: dict[str, Any] = {"reference": ref_name}
        if ref is not None:
            for w in WORKLOADS:
                mine = system["workloads"][w]["latency"]["docs_per_second"]
                theirs = ref["workloads"][w]["latency"]["docs_per_second"]
                comparison[f"speedup_{w}"] = mine / theirs
            qids = sorted(ref["quality"]["per_query"])
            delta = paired_delta(
                [system["quality"]["per_query"][q] for q in qids],
                [ref["quality"]["per_query"][q] for q in qids],
            )
            comparison["ndcg@10_delta"] = delta.to_json()
        system["vs_reference"] = comparison
    all_pairs = sum(len(q) for q in lengths)
    all_tokens = sum(sum(q) for q in lengths)
    max_length = max((max(q) for q in lengths if q), default=0)
    return {
        "data": {
            "label": data.label,
            "queries": len(data.requests),
            "pairs": all_pairs,
            "mean_tokens_per_pair": all_tokens / all_pairs if all_pairs else 0.0,
            "pairs_at_max_length": sum(1 for q in lengths for n in q if n == max_length) / max(all_pairs, 1),
        },
        "bm25": _bm25(data),
        "gemm": {
            "status": gemm.get("status"),
            "error": gemm.get("error"),
            "peaks": gemm_peaks,
            "fp32_peak_gflops_per_second": peaks["fp32"],
            "int8_peak_gops_per_second": peaks["int8"],
        },
        "reference": ref_name,
        "systems": systems,
        "targets": evaluate_targets(systems),
    }
