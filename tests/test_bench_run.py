"""`rrdistill bench` end to end on the tiny cross-encoder: every system in its own interpreter,
the report's schema, and failures that are reported instead of hidden."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rrdistill.bench.flops import EncoderShape
from rrdistill.bench.prepare import flashrank_cache
from rrdistill.bench.runner import run_worker
from rrdistill.bench.systems import SystemSpec
from rrdistill.cli import app
from rrdistill.export import ExportError

runner = CliRunner()
SMALL = [
    "--queries", "3",
    "--passages", "10",
    "--batch-queries", "2",
    "--repeats", "3",
    "--warmup", "1",
    "--import-repeats", "1",
    "--gemm-size", "128",
    "--threads", "1",
]  # fmt: skip


def _bench(args: list[str], out: Path) -> dict:
    result = runner.invoke(
        app, ["bench", *SMALL, "--work-dir", str(out / "work"), "--json", str(out / "bench.json"), *args]
    )
    assert result.exit_code == 0, result.output
    for title in ("rerankers side by side", "start-up and memory", "where the time goes", "targets"):
        assert title in result.output
    return json.loads((out / "bench.json").read_text())


def _check_system(system: dict, shape: EncoderShape) -> None:
    assert system["status"] == "ok", system.get("error")
    assert system["import_seconds"] > 0 and system["load_seconds"] > 0
    assert len(system["import_samples"]) == 1
    rss = system["rss_mb"]
    assert (
        0 < rss["start"] <= rss["after_import"] <= rss["after_load"] <= rss["peak"] == system["peak_rss_mb"]
    )
    single, batch = system["workloads"]["single"], system["workloads"]["batch"]
    assert single["latency"]["calls"] == 3 and single["latency"]["docs"] == 30
    # 3 queries in batches of 2: one full (timed) batch, one smaller batch scored for nDCG only
    assert batch["latency"]["calls"] == 1 and batch["latency"]["docs"] == 20
    for workload in (single, batch):
        latency, parts, flops = workload["latency"], workload["breakdown"], workload["flops"]
        assert latency["docs_per_second"] == pytest.approx(latency["docs"] / latency["total"])
        assert latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert parts["tokenize_seconds"] + parts["model_seconds"] <= latency["total"] * 1.001
        assert parts["model_seconds"] > 0 and parts["model_calls"] >= 1
        tokens = workload["tokens"]
        assert 0 < tokens["padding_efficiency"] <= 1
        assert flops["executed"] >= flops["useful"] > 0
        assert flops["useful_gflops_per_second"] == pytest.approx(flops["useful"] / latency["total"] / 1e9)
        assert flops["fraction_of_peak"] == pytest.approx(
            flops["executed_gflops_per_second"] / flops["peak_gflops_per_second"]
        )
        assert tokens["executed"] >= tokens["real"]
        # no model call is wider than max_length (128): per token, a width-w row costs at most
        # what a row of 128 does (attention grows with w)
        assert flops["executed"] <= tokens["executed"] * shape.sequence_flops(128) / 128
    assert 0 <= system["quality"]["ndcg@10"] <= 1
    assert len(system["quality"]["per_query"]) == 3


def test_bench_runs_each_system_in_its_own_process(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    payload = _bench(
        [
            "--model", str(tiny_checkpoint),
            "--bundle", f"fp32={tiny_bundle}",
            "--systems", "rrdistill-fp32,flashrank-fp32,st-torch",
            "--plot", str(tmp_path / "bench.png"),
        ],
        tmp_path,
    )  # fmt: skip
    assert payload["schema"] == "rrdistill-bench/1"
    assert payload["reference"] == "st-torch"
    assert payload["data"]["queries"] == 3 and payload["data"]["pairs"] == 30
    assert payload["config"]["threads"] == 1 and payload["machine"]["threads"] == 1
    assert 0 <= payload["bm25"]["ndcg@10"] <= 1
    gemm = payload["gemm"]
    assert gemm["status"] == "ok"
    assert {(p["engine"], p["dtype"]) for p in gemm["peaks"] if p["square"]} == {
        ("numpy", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    model_shape = [p for p in gemm["peaks"] if not p["square"]]
    assert {(p["m"], p["k"], p["n"]) for p in model_shape} == {
        (32 * 128, 32, 64)  # the runtime's 32 pairs x max_length, hidden, ffn
    }

    shape = EncoderShape.from_checkpoint(tiny_checkpoint)
    systems = {s["name"]: s for s in payload["systems"]}
    assert list(systems) == ["rrdistill-fp32", "flashrank-fp32", "st-torch"]  # as asked
    for system in systems.values():
        _check_system(system, shape)
    runtime, flashrank, torch = systems["rrdistill-fp32"], systems["flashrank-fp32"], systems["st-torch"]
    # the same model three ways: the same rankings (FlashRank reports sigmoid(logit), torch ~1e-6 apart)
    for other in (flashrank, torch):
        for qid, value in runtime["quality"]["per_query"].items():
            assert other["quality"]["per_query"][qid] == pytest.approx(value, abs=1e-9)
    assert runtime["vs_reference"]["ndcg@10_delta"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert runtime["vs_reference"]["speedup_batch"] == pytest.approx(
        runtime["workloads"]["batch"]["latency"]["docs_per_second"]
        / torch["workloads"]["batch"]["latency"]["docs_per_second"]
    )
    # FlashRank scores one query in one padded call; the runtime in length-bucketed batches of 32
    assert flashrank["workloads"]["single"]["breakdown"]["model_calls"] == 3
    assert runtime["extra"]["runtime_stats"]["pairs"] == 10 + 30 + 30  # warm-up, single, batch
    assert runtime["op_profile"]["model_runs"] >= 1 and "MatMul" in runtime["op_profile"]["operators"]
    assert torch["op_profile"] is None
    # the torch process's memory is not the runtime's
    assert runtime["peak_rss_mb"] < torch["rss_mb"]["after_import"]

    targets = {(t["target"], t["workload"]): t for t in payload["targets"]}
    assert targets[("fp32 >= 1.3x sentence-transformers torch", "batch")]["met"] in (True, False)
    assert targets[("fp32 >= 1.3x FlashRank-fp32", "batch")]["met"] in (True, False)
    int8 = targets[("int8 >= 1.5x FlashRank-int8", "single")]
    assert int8["met"] is None and "system missing" in int8["note"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_systems_are_refused_before_any_work(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        ["bench", "--model", str(tiny_checkpoint), "--bundle", f"fp32={tiny_bundle}", "--systems", "nope",
         "--work-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown system(s) nope" in result.output and "rrdistill-fp32" in result.output
    assert not (tmp_path / "requests.jsonl").exists()
    result = runner.invoke(app, ["bench", "--bundle", "no-equals-sign"])
    assert result.exit_code == 2 and "LABEL=DIR" in result.output


def test_a_system_that_cannot_load_is_reported_with_the_reason(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        '{"query": {"qid": "q", "text": "t"}, "candidates": [{"docid": "d", "doc": {"text": "x"}}]}\n'
    )
    spec = SystemSpec("rrdistill-x", "rrdistill", str(tmp_path / "missing-bundle"), "fp32", 64)
    result = run_worker(
        {"task": "system", "system": spec.to_json(), "requests": str(requests), "warmup": 0, "repeats": 1, "batch_queries": 1},
        threads=1,
        timeout=120,
    )  # fmt: skip
    assert result["status"] == "failed"
    assert "missing-bundle" in result["error"] and "not a bundle directory" in result["error"]
    assert "Traceback" in result["log_tail"]


def test_flashrank_layout_says_which_file_it_lacks(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    (checkpoint / "special_tokens_map.json").unlink()
    with pytest.raises(ExportError, match=r"FlashRank cannot load this model: .*special_tokens_map\.json"):
        flashrank_cache(tiny_bundle, checkpoint, tmp_path / "cache", "m")
    assert not (tmp_path / "cache" / "m").exists()
    folder = flashrank_cache(tiny_bundle, tiny_checkpoint, tmp_path / "cache", "m")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json"]
    )
    assert (folder / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()


@pytest.mark.slow
def test_bench_every_peer_with_int8(tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """All eight systems, sentence-transformers' own ONNX export and int8 quantization included; the
    runtime's int8 bundle holds the fused graph, and the peers' int8 graph runs as its own bundle."""
    from models import onnx_bundle_from_checkpoint

    int8 = onnx_bundle_from_checkpoint(
        tiny_checkpoint, tmp_path / "int8", precision="int8", accept_drift=True
    )
    payload = _bench(
        ["--model", str(tiny_checkpoint), "--bundle", f"fp32={tiny_bundle}", "--bundle", f"int8={int8}",
         "--plot", str(tmp_path / "bench.png")],
        tmp_path,
    )  # fmt: skip
    shape = EncoderShape.from_checkpoint(tiny_checkpoint)
    systems = {s["name"]: s for s in payload["systems"]}
    assert set(systems) == {
        "rrdistill-fp32", "rrdistill-int8", "rrdistill-int8-plain", "st-torch", "st-onnx", "st-onnx-int8",
        "flashrank-fp32", "flashrank-int8",
    }  # fmt: skip
    for system in systems.values():
        _check_system(system, shape)
    fp32 = systems["rrdistill-fp32"]["quality"]["per_query"]
    assert systems["st-onnx"]["quality"]["per_query"] == pytest.approx(fp32, abs=1e-9)
    fused, plain = systems["rrdistill-int8"], systems["rrdistill-int8-plain"]
    assert "QAttention" in fused["op_profile"]["operators"]
    assert "QAttention" not in plain["op_profile"]["operators"]
    assert "peers' int8 graph" in systems["flashrank-int8"]["description"]
    for target in payload["targets"]:  # 3 queries: only the quality target is left unjudged
        assert (target["met"] is None) == ("nDCG" in target["target"]), target


def test_bench_at_several_thread_counts_reports_each_and_the_targets_side_by_side(
    tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    small = SMALL[: SMALL.index("--threads")]
    result = runner.invoke(
        app,
        ["bench", *small, "--threads", "1", "--threads", "2", "--model", str(tiny_checkpoint),
         "--bundle", f"fp32={tiny_bundle}", "--systems", "rrdistill-fp32,flashrank-fp32",
         "--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "bench.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "targets at each thread count" in result.output and "2 threads" in result.output
    sweep = json.loads((tmp_path / "bench.json").read_text())
    assert sweep["schema"] == "rrdistill-bench-sweep/1" and sweep["threads"] == [1, 2]
    assert [run["config"]["threads"] for run in sweep["runs"]] == [1, 2]
    for run in sweep["runs"]:
        assert run["schema"] == "rrdistill-bench/1"
        assert [s["name"] for s in run["systems"]] == ["rrdistill-fp32", "flashrank-fp32"]
        assert all(s["status"] == "ok" for s in run["systems"])
    rows = [(t["target"], t["workload"], t["threads"]) for t in sweep["targets"]]
    assert ("fp32 >= 1.3x FlashRank-fp32", "batch", 2) in rows and len(rows) == len(set(rows))
    assert len(rows) == sum(len(run["targets"]) for run in sweep["runs"])
