"""Which int8 graph of a cross-encoder is cheapest, lever by lever, measured side by side in one run.

Each variant is built from the same checkpoint with the export's own functions and run by
onnxruntime on the same padded batches (the runtime's batching: 32 pairs, length-sorted):

- ``fp32`` / ``fp32-O2``: the plain export and the transformer-fused one (the reference);
- ``int8-plain-u8``: Optimum's preset for this CPU on the plain graph (what the peers ship);
- ``int8-plain-s8``: the same graph with s8 weights (7-bit where u8 × s8 could saturate), constant-weight
  MatMuls only (attention's own products stay fp32);
- ``int8-fused-s8``: quantized after the fusions (QAttention; the export's default, ``--int8-graph fused``);
- ``int8-fused-u8``: the fused graph with the preset's u8 weights (separates the two levers);
- ``int8-weight-only``: MatMulNBits int8 blocks of 32 (the listwise LMs' scheme) on the fused graph.

Reported per variant and thread count: docs/s, the ratio to the plain int8 graph, and agreement
with fp32 (max |Δ logit|, mean Kendall τ per query, nDCG@10 of both on the qrels). Queries come
from the split given (default ``dev`` of a pipeline's data folder: a graph is a choice, chosen on dev).

    python benchmarks/int8_graphs.py CHECKPOINT DATA --split dev --queries 8 --threads 1 2 --json out.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from rrdistill.export.onnx import OnnxModel, export_onnx, load_cross_encoder_config, optimize_onnx
from rrdistill.export.quantize import (
    detect_isa,
    quantization_config,
    quantize_dynamic_int8,
    quantize_fused_int8,
    quantize_weight_only_int8,
)
from rrdistill.export.validate import ParityConfig, parity_data, passage_text
from rrdistill.metrics import evaluate
from rrdistill.reporting import table, write_json

BATCH = 32


def build_variants(checkpoint: Path, work: Path, isa: str) -> dict[str, OnnxModel]:
    """Every graph of the comparison, made by the export's own steps."""
    config = load_cross_encoder_config(checkpoint)
    plain = export_onnx(checkpoint, work / "plain")
    fused = optimize_onnx(plain, config, work / "fused", "O2")
    variants = {"fp32": plain, "fp32-O2": fused}
    variants["int8-plain-u8"], _ = quantize_dynamic_int8(plain, work / "plain-u8", isa=isa)
    variants["int8-fused-s8"], _ = quantize_fused_int8(fused, work / "fused-s8", isa=isa)
    # the two levers apart: the fused graph with the preset's weights, the plain graph with s8 weights
    preset = (quantization_config(isa, per_channel=True).weights_dtype, False)
    variants["int8-fused-u8"], _ = quantize_fused_int8(fused, work / "fused-u8", isa=isa, weights=preset)
    variants["int8-plain-s8"], _ = quantize_fused_int8(plain, work / "plain-s8", isa=isa)
    variants["int8-weight-only"], _ = quantize_weight_only_int8(fused, work / "weight-only")
    return variants


def encode(
    checkpoint: Path, requests: list[Any], max_length: int
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """The runtime's feeds: pairs tokenized with truncation of the passage, sorted by length, batched."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.enable_truncation(max_length, strategy="only_second")
    tokenizer.no_padding()
    pairs = [
        (r.query.text, passage_text("{title} {text}", c.passage)) for r in requests for c in r.candidates
    ]
    encodings = tokenizer.encode_batch(pairs)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    batches = []
    for start in range(0, len(order), BATCH):
        chunk = [encodings[i] for i in order[start : start + BATCH]]
        width = max(len(e.ids) for e in chunk)
        feeds = {
            k: np.zeros((len(chunk), width), np.int64)
            for k in ("input_ids", "attention_mask", "token_type_ids")
        }
        for row, e in enumerate(chunk):
            feeds["input_ids"][row, : len(e.ids)] = e.ids
            feeds["attention_mask"][row, : len(e.ids)] = 1
            feeds["token_type_ids"][row, : len(e.ids)] = e.type_ids
        batches.append(feeds)
    return batches, order


def scorer(model: OnnxModel, threads: int) -> Callable[[list[dict[str, np.ndarray]]], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(batches: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([session.run(["logits"], {n: b[n] for n in names})[0][:, 0] for b in batches])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="BEIR folder (a pipeline run's data/ has the dev split)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isa", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from scipy.stats import kendalltau

    isa = args.isa or detect_isa()
    requests, qrels = parity_data(ParityConfig(args.data, args.split, args.queries, args.passages))
    batches, order = encode(args.checkpoint, requests, args.max_length)
    sizes = [len(r.candidates) for r in requests]
    with tempfile.TemporaryDirectory(prefix="int8-graphs-") as work:
        variants = build_variants(args.checkpoint, Path(work), isa)
        rows: list[dict[str, Any]] = []
        reference: list[np.ndarray] | None = None
        for name, model in variants.items():
            for threads in args.threads:
                run = scorer(model, threads)
                run(batches)  # warm-up
                best = min(_timed(run, batches) for _ in range(args.repeats))
                flat = np.empty(len(order), np.float32)
                flat[order] = run(batches)
                per_query = np.split(flat, np.cumsum(sizes)[:-1])
                if reference is None:
                    reference = per_query
                run_scores = {
                    r.qid: {c.docid: float(s) for c, s in zip(r.candidates, scores, strict=True)}
                    for r, scores in zip(requests, per_query, strict=True)
                }
                rows.append(
                    {
                        "variant": name,
                        "threads": threads,
                        "docs_per_second": len(order) / best,
                        "max_abs_diff": float(
                            max(np.abs(a - b).max() for a, b in zip(reference, per_query, strict=True))
                        ),
                        "kendall_tau_mean": float(
                            np.mean(
                                [
                                    kendalltau(a, b).statistic
                                    for a, b in zip(reference, per_query, strict=True)
                                ]
                            )
                        ),
                        "ndcg@10": evaluate(run_scores, qrels, ["ndcg@10"], only_run_queries=True).means[
                            "ndcg@10"
                        ],
                        "bytes": model.path.stat().st_size,
                    }
                )
                print(f"{name} @ {threads} threads: {rows[-1]['docs_per_second']:.1f} docs/s", flush=True)
    base = {r["threads"]: r["docs_per_second"] for r in rows if r["variant"] == "int8-plain-u8"}
    for row in rows:
        row["vs_int8_plain"] = row["docs_per_second"] / base[row["threads"]]
    Console(stderr=True, width=200).print(
        table(
            f"int8 graphs ({isa}; {args.data.name}/{args.split}: {len(requests)} queries x {args.passages})",
            ["variant", "threads", "docs/s", "× plain int8", "max |Δ|", "τ vs fp32", "nDCG@10", "MB"],
            [
                (
                    r["variant"],
                    str(r["threads"]),
                    f"{r['docs_per_second']:.1f}",
                    f"{r['vs_int8_plain']:.2f}",
                    f"{r['max_abs_diff']:.3f}",
                    f"{r['kendall_tau_mean']:.3f}",
                    f"{r['ndcg@10']:.4f}",
                    f"{r['bytes'] / 1e6:.1f}",
                )
                for r in rows
            ],
        )
    )
    if args.json:
        write_json(args.json, {"isa": isa, "queries": len(requests), "passages": args.passages, "rows": rows})


def _timed(run: Callable[[Any], Any], batches: Any) -> float:
    started = time.perf_counter()
    run(batches)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
