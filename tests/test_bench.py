"""The benchmark's measuring parts: percentiles, throughput, FLOP counts, GEMM graphs, timing
wrappers, the operator profile, peak RSS and the target checks."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import minilm_path

from rrdistill.bench.flops import EncoderShape
from rrdistill.bench.gemm import ENGINES, GemmConfig, measure_peaks, peak_gflops
from rrdistill.bench.instrument import Stopwatch, TimedSession, TimedTokenizer, operator_seconds
from rrdistill.bench.stats import paired_delta, percentile, summarize
from rrdistill.bench.targets import evaluate_targets

# -- percentiles, throughput, paired differences -----------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 20, 101])
def test_percentiles_match_the_standard_library(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(20):
        values = list(rng.lognormal(0, 1, size=size))
        if size == 1:
            assert percentile(values, 50) == percentile(values, 99) == values[0]
            continue
        cuts = statistics.quantiles(values, n=100, method="inclusive")  # cut q is the q-th percentile
        for q in (50, 90, 99):
            assert percentile(values, q) == pytest.approx(cuts[q - 1], rel=1e-12)


def test_summary_throughput_is_documents_over_wall_time() -> None:
    rng = np.random.default_rng(0)
    latencies = list(rng.uniform(0.01, 0.5, size=40))
    docs = list(rng.integers(50, 101, size=40))
    summary = summarize(latencies, docs)
    assert summary.calls == 40
    assert summary.docs == sum(docs)
    assert summary.total == pytest.approx(sum(latencies))
    assert summary.docs_per_second == pytest.approx(sum(docs) / sum(latencies))
    assert summary.mean == pytest.approx(np.mean(latencies))
    assert summary.min <= summary.p50 <= summary.p90 <= summary.p99 <= summary.max
    assert summary.p50 == pytest.approx(np.median(latencies))
    # a skewed workload: throughput is not the mean of per-call rates
    skewed = summarize([1.0, 0.1], [100, 100])
    assert skewed.docs_per_second == pytest.approx(200 / 1.1)
    assert skewed.docs_per_second != pytest.approx(np.mean([100 / 1.0, 100 / 0.1]))


@pytest.mark.parametrize(
    ("latencies", "docs"), [([], []), ([0.1, 0.2], [10]), ([0.1, 0.0], [1, 1]), ([-1.0], [3])]
)
def test_summary_refuses_what_it_cannot_summarise(latencies: list[float], docs: list[int]) -> None:
    with pytest.raises(ValueError):
        summarize(latencies, docs)


def test_paired_delta_mean_and_interval() -> None:
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 1, size=300)
    candidate = np.clip(reference + rng.normal(-0.01, 0.05, size=300), 0, 1)
    delta = paired_delta(candidate, reference)
    diff = candidate - reference
    assert delta.mean == pytest.approx(diff.mean())
    assert delta.low < delta.mean < delta.high
    # with 300 pairs the bootstrap interval is close to the normal-theory one
    half_width = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert delta.high - delta.low == pytest.approx(2 * half_width, rel=0.1)
    same = paired_delta(reference + 0.25, reference)
    assert same.low == pytest.approx(0.25) and same.high == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_delta([0.1, 0.2], [0.1])


# -- FLOPs ---------------------------------------------------------------------------------------


def test_flops_equal_torch_flop_counter(tiny_checkpoint: Path) -> None:
    """The count from config.json equals what torch counts for the eager model, padded or not."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint, attn_implementation="eager"
    ).eval()
    shape = EncoderShape.from_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(0)
    for batch, width in [
        (1, 1),
        (1, 17),
        (3, 9),
        (5, 64),
        *[tuple(rng.integers(1, 40, size=2)) for _ in range(4)],
    ]:
        ids = torch.randint(1000, 2000, (int(batch), int(width)))
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert shape.batch_flops(int(batch), int(width)) == counter.get_total_flops()
        assert shape.executed_flops([(int(batch), int(width))]) == counter.get_total_flops()


def test_flops_of_the_real_minilm_config() -> None:
    config = json.loads((minilm_path() / "config.json").read_text())
    shape = EncoderShape.from_config({**config, "num_labels": 1})
    assert (shape.layers, shape.hidden, shape.intermediate, shape.heads) == (6, 384, 1536, 12)
    assert shape.matmul_parameters == 6 * (4 * 384**2 + 2 * 384 * 1536)  # 10.6 M of its 22.7 M
    # useful work grows with the real lengths; padding only adds
    assert shape.useful_flops([10, 20]) < shape.executed_flops([(2, 20)])
    assert shape.useful_flops([20, 20]) == shape.executed_flops([(2, 20)])
    assert shape.sequence_flops(0) == 0
    with pytest.raises(ValueError, match="model_type"):
        EncoderShape.from_config({**config, "model_type": "qwen2"})
    with pytest.raises(ValueError, match="intermediate_size"):
        EncoderShape.from_config({k: v for k, v in config.items() if k != "intermediate_size"})
    distil = EncoderShape.from_config(
        {"model_type": "distilbert", "n_layers": 6, "dim": 768, "hidden_dim": 3072, "n_heads": 12}
    )
    assert distil.matmul_parameters == 6 * (4 * 768**2 + 2 * 768 * 3072)


# -- GEMM peak -----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_timed_gemm_graphs_compute_the_product(engine: tuple[str, str]) -> None:
    case = ENGINES[engine](37, 19, 11, 1, np.random.default_rng(0))
    got = np.asarray(case.run(), dtype=np.float64)
    expected = case.reference()
    if engine[1] == "int8":
        np.testing.assert_array_equal(got, expected)  # integer products are exact
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_measure_peaks_covers_every_engine_and_shape() -> None:
    peaks = measure_peaks(GemmConfig(sizes=(96, 64), repeats=2, shapes=[(64, 32, 48)]), threads=1)
    assert sorted((p.engine, p.dtype, p.m, p.k, p.n) for p in peaks) == sorted(
        (e, d, *shape) for e, d in ENGINES for shape in [(96, 96, 96), (64, 64, 64), (64, 32, 48)]
    )
    for p in peaks:
        assert p.best_seconds > 0 and p.best_seconds <= p.median_seconds
        assert p.gflops == pytest.approx(2 * p.m * p.k * p.n / p.best_seconds / 1e9)
    records = [p.to_json() for p in peaks]
    for dtype in ("fp32", "int8"):  # the best of any engine on any shape
        assert peak_gflops(records, dtype) == pytest.approx(max(p.gflops for p in peaks if p.dtype == dtype))
    assert peak_gflops([], "int8") is None


# -- timing wrappers and the operator profile --------------------------------------------------


def test_wrappers_time_and_record_without_changing_results(tiny_bundle: Path) -> None:
    from rrdistill.runtime import Reranker

    plain = Reranker.load(tiny_bundle, warmup=False)
    wrapped = Reranker.load(tiny_bundle, warmup=False)
    watch = Stopwatch()
    wrapped.session = TimedSession(wrapped.session, watch)
    wrapped.tokenizer = TimedTokenizer(wrapped.tokenizer, watch)
    passages = [f"passage {i} " + "word " * (3 * i) for i in range(10)]
    expected = plain.rerank("a query", passages, batch_size=4)
    assert wrapped.rerank("a query", passages, batch_size=4) == expected
    assert [b for b, _ in watch.shapes] == [4, 4, 2]  # 10 pairs in batches of 4, length-bucketed
    assert sum(b * w for b, w in watch.shapes) == wrapped.stats.padded_tokens
    assert watch.seconds["model"] > 0 and watch.seconds["tokenize"] > 0
    assert wrapped.providers == plain.providers  # everything else is delegated
    watch.reset()
    assert watch.seconds == {} and watch.shapes == []


def test_operator_profile_skips_the_warm_up_runs(tiny_bundle: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "trace")
    session = ort.InferenceSession(
        str(tiny_bundle / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    feed = {
        "input_ids": np.full((2, 8), 1000, dtype=np.int64),
        "attention_mask": np.ones((2, 8), dtype=np.int64),
        "token_type_ids": np.zeros((2, 8), dtype=np.int64),
    }
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    for _ in range(3):
        session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    everything, last_two = operator_seconds(trace), operator_seconds(trace, skip_runs=1)
    assert (everything["model_runs"], last_two["model_runs"]) == (3, 2)
    assert "MatMul" in last_two["operators"]
    assert 0 < last_two["kernel_seconds"] <= last_two["model_run_seconds"]
    assert last_two["kernel_seconds"] < everything["kernel_seconds"]
    assert list(last_two["operators"].values()) == sorted(last_two["operators"].values(), reverse=True)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_peak_rss_is_its_own_not_the_parents() -> None:
    """Linux hands a parent's peak RSS to its children across fork+exec (ru_maxrss); the worker's
    figure must not include it."""
    ballast = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB resident in this process
    code = "from rrdistill.bench.worker import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ballast.sum() == ballast.size
    assert float(out.stdout) < 150


# -- targets -------------------------------------------------------------------------------------


def _system(
    name: str, kind: str, precision: str, docs_per_second: float, ndcg: float = 0.7, queries: int = 96
) -> dict:
    workload = {
        "latency": {"docs_per_second": docs_per_second, "total": 10.0},
        "breakdown": {"model_share": 0.9, "tokenize_share": 0.06, "other_share": 0.04},
        "tokens": {"padding_efficiency": 0.8},
        "flops": {
            "fraction_of_peak": 0.5,
            "model_only_fraction_of_peak": 0.55,
            "executed_gflops_per_second": 50.0,
            "peak_gflops_per_second": 100.0,
        },
    }
    per_query = {f"q{i}": ndcg + (0.01 if i % 2 else -0.01) for i in range(queries)}
    return {
        "name": name,
        "kind": kind,
        "precision": precision,
        "status": "ok",
        "peak_rss_mb": 250.0,
        "workloads": {"single": workload, "batch": workload},
        "quality": {"ndcg@10": ndcg, "per_query": per_query},
    }


def test_targets_met_missed_and_unmeasured() -> None:
    systems = [
        _system("st-torch", "st-torch", "fp32", 100.0),
        _system("rrdistill-fp32", "rrdistill", "fp32", 120.0),
        _system("rrdistill-int8", "rrdistill", "int8", 300.0, ndcg=0.696),
        _system("rrdistill-int8-plain", "rrdistill", "int8", 10.0),
        _system("flashrank-int8", "flashrank", "int8", 150.0),
        _system("st-onnx-int8", "st-onnx", "int8", 250.0),
        _system("st-onnx", "st-onnx", "fp32", 80.0),
    ]
    rows = evaluate_targets(systems)
    by = {(r["target"], r["workload"]): r for r in rows}
    flashrank = by[("int8 >= 1.5x FlashRank-int8", "single")]
    assert flashrank["measured"] == pytest.approx(2.0) and flashrank["met"] is True
    assert flashrank["system"] == "rrdistill-int8"  # not the plain-graph runtime system
    st_onnx = by[("int8 >= 1.5x sentence-transformers ONNX-int8", "batch")]
    assert st_onnx["measured"] == pytest.approx(1.2) and st_onnx["met"] is False
    assert "model 90%, tokenize 6%" in st_onnx["note"] and "padding efficiency 80%" in st_onnx["note"]
    assert by[("fp32 >= 1.3x sentence-transformers ONNX", "single")]["met"] is True  # 1.5x
    no_peer = by[("fp32 >= 1.3x FlashRank-fp32", "batch")]
    assert no_peer["met"] is None and "reference missing" in no_peer["note"]
    speed = by[("int8 >= 2.5x sentence-transformers torch", "batch")]
    assert speed["measured"] == pytest.approx(3.0) and speed["met"] is True
    fp32 = by[("fp32 >= 1.3x sentence-transformers torch", "single")]
    assert fp32["measured"] == pytest.approx(1.2) and fp32["met"] is False
    peak = by[("int8 >= 60% of GEMM peak", "batch")]
    assert peak["measured"] == pytest.approx(0.5) and peak["met"] is False
    loss = by[("int8 loses <= 0.5 nDCG@10 points vs fp32", None)]
    assert loss["measured"] == pytest.approx(0.4) and loss["met"] is True
    assert loss["reference"] == "rrdistill-fp32" and "over 96 queries" in loss["note"]
    memory = by[("int8 process peak RSS <= 300 MB", None)]
    assert memory["measured"] == 250.0 and memory["met"] is True
    # a larger quality loss misses even when the speed is there; too few queries are not judged
    systems[2] = _system("rrdistill-int8", "rrdistill", "int8", 300.0, ndcg=0.69)
    loss = next(r for r in evaluate_targets(systems) if "nDCG" in r["target"])
    assert loss["measured"] == pytest.approx(1.0) and loss["met"] is False
    few = [_system("rrdistill-fp32", "rrdistill", "fp32", 1.0, queries=8)]
    few.append(_system("rrdistill-int8", "rrdistill", "int8", 1.0, ndcg=0.69, queries=8))
    loss = next(r for r in evaluate_targets(few) if "nDCG" in r["target"])
    assert loss["measured"] == pytest.approx(1.0) and loss["met"] is None and "needs >= 96" in loss["note"]
    # a failed peer leaves its speed targets unmeasured, not passed
    systems[0] = {"name": "st-torch", "kind": "st-torch", "precision": "fp32", "status": "failed"}
    rows = evaluate_targets(systems)
    assert all(r["met"] is None for r in rows if "torch" in r["target"])
