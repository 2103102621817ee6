"""Export: Optimum ONNX bundles (fp32/fp16/int8, optimisation levels), parity checks, refusals,
staging, TensorRT guards, and the `rrdistill export` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from models import onnx_bundle_from_checkpoint, small_parity
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.export import ExportError
from rrdistill.export.onnx import OnnxModel, default_max_length, fused_operators
from rrdistill.export.pipeline import ExportConfig, ParityError, export_bundle
from rrdistill.export.quantize import detect_isa, quantization_config
from rrdistill.export.validate import (
    DEFAULT_THRESHOLDS,
    ParityThresholds,
    compare,
    parity_data,
    passage_text,
    violations,
)
from rrdistill.runtime import Reranker
from rrdistill.runtime.bundle import load_manifest
from rrdistill.types import Candidate, Passage, Query, Request

runner = CliRunner()


def torch_reference(checkpoint: Path, requests: list[Request], max_length: int) -> list[np.ndarray]:
    """The source model's scores, computed independently of export/validate.py (one query at a time)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    out = []
    for request in requests:
        texts = [passage_text("{title} {text}", c.passage) for c in request.candidates]
        batch = tokenizer(
            [request.query.text] * len(texts),
            texts,
            padding=True,
            truncation="only_second",
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            out.append(model(**batch).logits[:, 0].numpy())
    return out


@pytest.fixture(scope="module")
def int8_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """int8 of the tiny *random* model: its near-constant scores make τ meaningless, so drift is accepted."""
    return onnx_bundle_from_checkpoint(
        tiny_checkpoint, tmp_path_factory.mktemp("int8") / "tiny-int8", precision="int8", accept_drift=True
    )


def test_fp32_bundle_is_the_source_model(tiny_bundle: Path, tiny_checkpoint: Path) -> None:
    manifest = load_manifest(tiny_bundle)
    assert sorted(manifest.files) == ["model.onnx", "tokenizer.json"]
    assert (manifest.kind, manifest.precision, manifest.model.engine) == (
        "cross-encoder",
        "fp32",
        "onnxruntime",
    )
    assert manifest.model.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.inputs.max_length == 128
    parity = manifest.parity
    assert parity["passed"] and not parity["drift_accepted"] and parity["violations"] == []
    assert parity["max_abs_diff"] < 1e-5
    assert parity["kendall_tau_min"] == pytest.approx(1.0)
    assert parity["ndcg@10_delta"] == 0.0
    assert parity["pairs"] == 40 and len(parity["qids"]) == 4
    assert manifest.providers_validated == ["CPUExecutionProvider"]
    provenance = manifest.provenance
    assert provenance["source"]["path"] == str(tiny_checkpoint.resolve())
    assert len(provenance["source"]["config_sha256"]) == 64
    assert set(provenance["source"]["weights_sha256"]) == {"model.safetensors"}
    assert {"optimum", "onnxruntime", "transformers", "torch"} <= set(provenance["libraries"])
    assert provenance["rrdistill"] and provenance["created"].endswith("+00:00")
    assert provenance["training"] is None


def test_int8_parity_figures_are_what_they_claim(int8_bundle: Path, tiny_checkpoint: Path) -> None:
    """Recompute every figure of the manifest: torch scores, runtime scores, scipy τ, pytrec_eval nDCG."""
    import pytrec_eval
    from scipy.stats import kendalltau

    manifest = load_manifest(int8_bundle)
    requests, qrels = parity_data(small_parity())
    assert [r.qid for r in requests] == manifest.parity["qids"]
    reference = torch_reference(tiny_checkpoint, requests, manifest.inputs.max_length)
    exported = Reranker.load(int8_bundle).score(
        [(r.query.text, [c.passage for c in r.candidates]) for r in requests]
    )
    diffs = np.concatenate([np.abs(a - b) for a, b in zip(reference, exported, strict=True)])
    parity = manifest.parity
    assert 0 < parity["max_abs_diff"] == pytest.approx(diffs.max(), abs=1e-6)
    assert parity["mean_abs_diff"] == pytest.approx(diffs.mean(), abs=1e-6)
    taus = [kendalltau(a, b).statistic for a, b in zip(reference, exported, strict=True)]
    assert parity["kendall_tau_mean"] == pytest.approx(np.mean(taus), abs=1e-6)
    for side, scores in (("source", reference), ("exported", exported)):
        run = {
            r.qid: {c.docid: float(s) for c, s in zip(r.candidates, row, strict=True)}
            for r, row in zip(requests, scores, strict=True)
        }
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
        expected = np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()])
        assert parity[f"ndcg@10_{side}"] == pytest.approx(expected, abs=1e-9)
    # the drift of a random model's int8 was accepted, and the manifest says so
    assert not parity["passed"] and parity["drift_accepted"] and parity["violations"]
    assert parity["thresholds"] == DEFAULT_THRESHOLDS["int8"].to_json()


def test_int8_is_the_fused_graph_quantized_for_this_cpu(int8_bundle: Path, tiny_bundle: Path) -> None:
    """The default int8 is quantized after the transformer fusions: one QAttention per layer (no
    activation × activation product quantized), s8 weights, 7-bit where the CPU lacks VNNI."""
    import onnx

    manifest = load_manifest(int8_bundle)
    export = manifest.extra["export"]
    settings = export["quantization"]
    assert settings["isa"] == detect_isa() and settings["mode"] == "dynamic" and settings["per_channel"]
    assert settings["graph"] == "fused" and export["optimize"] == "O2"
    assert settings["weights"] == "QInt8" and settings["reduce_range"] == (detect_isa() in ("avx2", "avx512"))
    nodes = onnx.load(str(int8_bundle / "model.onnx")).graph.node
    ops = [node.op_type for node in nodes]
    assert ops.count("QAttention") == 2  # the tiny model's two layers
    assert "Attention" not in ops and "MatMulInteger" in ops and "SkipLayerNormalization" in ops
    weights = {i.name: i for i in onnx.load(str(int8_bundle / "model.onnx")).graph.initializer}
    matmul_weights = [weights[n.input[1]] for n in nodes if n.op_type in ("MatMulInteger", "QAttention")]
    assert len(matmul_weights) == 2 * 4 + 2  # per layer QKV, attention output, FFN in and out; pooler, head
    assert all(w.data_type == onnx.TensorProto.INT8 for w in matmul_weights)
    fp32_size = load_manifest(tiny_bundle).files["model.onnx"]["bytes"]
    assert manifest.files["model.onnx"]["bytes"] < 0.5 * fp32_size


def test_int8_plain_graph_is_optimums_preset(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``int8_graph="plain"``: the unfused export with Optimum's preset, the graph the peers ship."""
    import onnx

    bundle = onnx_bundle_from_checkpoint(
        tiny_checkpoint, tmp_path / "plain", precision="int8", int8_graph="plain", accept_drift=True
    )
    manifest = load_manifest(bundle)
    settings = manifest.extra["export"]["quantization"]
    assert settings["graph"] == "plain" and manifest.extra["export"]["optimize"] is None
    expected = quantization_config(detect_isa(), per_channel=True).weights_dtype.name
    assert settings["weights"] == expected
    ops = {node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QAttention" not in ops


def test_fused_int8_needs_the_fusions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"fused int8 graph quantizes after the transformer fusions.*O1"):
        export_bundle(tiny_checkpoint, tmp_path / "b", ExportConfig(precision="int8", optimize="O1"))
    with pytest.raises(ExportError, match="int8 graph 'folded' is not one of fused, plain"):
        export_bundle(tiny_checkpoint, tmp_path / "b", ExportConfig(precision="int8", int8_graph="folded"))
    assert not (tmp_path / "b").exists()


def test_drift_beyond_the_thresholds_is_refused_and_leaves_nothing(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ParityError, match=r"mean Kendall τ .* < 0\.8500.*--accept-drift") as refused:
        onnx_bundle_from_checkpoint(tiny_checkpoint, tmp_path / "bundle", precision="int8")
    assert refused.value.report.pairs == 40 and refused.value.violations
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_no_half_bundle(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed while measuring parity")

    monkeypatch.setattr("rrdistill.export.pipeline.measure_parity", crash)
    with pytest.raises(RuntimeError, match="killed"):
        onnx_bundle_from_checkpoint(tiny_checkpoint, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_bundle_is_refused_before_any_work(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep.txt").write_text("mine")
    monkeypatch.setattr("rrdistill.export.pipeline.export_onnx", pytest.fail)
    with pytest.raises(FileExistsError, match="already exists"):
        onnx_bundle_from_checkpoint(tiny_checkpoint, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trt": True}, r"needs .*CUDA GPU"),
        ({"trt": True, "precision": "int8"}, r"statically calibrated Q/DQ"),
        ({"trt": True, "optimize": "O2"}, r"O2 fuses into onnxruntime-only operators"),
        ({"optimize": "O4"}, r"O4 is mixed precision fp16"),
        ({"optimize": "O7"}, r"not one of O1, O2, O3, O4"),
        ({"precision": "bf16"}, r"precision 'bf16'"),
    ],
)
def test_impossible_exports_fail_at_once(
    settings: dict, message: str, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rrdistill.export.pipeline.export_onnx", pytest.fail)  # nothing may start
    monkeypatch.setattr("rrdistill.export.tensorrt._cuda_available", lambda: False)
    with pytest.raises(ExportError, match=message):
        export_bundle(tiny_checkpoint, tmp_path / "bundle", ExportConfig(**settings))
    assert list(tmp_path.iterdir()) == []


def test_trt_without_gpu_fails_clearly_on_the_command_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["export", str(tiny_checkpoint), str(tmp_path / "b"), "--trt"])
    assert result.exit_code == 2
    assert "--trt builds a TensorRT engine" in result.output and "CUDA GPU" in result.output
    assert not (tmp_path / "b").exists()


def test_optimisation_levels(tiny_checkpoint: Path, tmp_path: Path) -> None:
    fused = {}
    for level, precision in (("O1", "fp32"), ("O2", "fp32"), ("O3", "fp32"), ("O4", "fp16")):
        bundle = onnx_bundle_from_checkpoint(
            tiny_checkpoint, tmp_path / level, precision=precision, optimize=level, accept_drift=True
        )
        manifest = load_manifest(bundle)
        assert manifest.extra["export"]["optimize"] == level
        fused[level] = manifest.extra["export"]["fused_operators"]
        if (
            precision == "fp32"
        ):  # graph rewrites, not approximations beyond float rounding / GELU approximation
            assert manifest.parity["max_abs_diff"] < 1e-3 and manifest.parity["passed"]
        else:
            assert manifest.parity["max_abs_diff"] < 1e-2
    assert fused["O1"] == {}  # standard ONNX ops only
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= set(fused["O2"])
    assert "FastGelu" in fused["O3"] and "BiasGelu" not in fused["O3"]
    assert fused["O4"] == fused["O3"]
    import onnx

    fp16 = onnx.load(str(tmp_path / "O4" / "model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64  # io kept as is


def test_the_fp16_graph_tensorrt_builds_from_runs_on_cpu(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """--trt --precision fp16 bakes fp16 into a graph of standard ONNX ops (TensorRT 11 is strongly typed)."""
    import onnx
    import onnxruntime as ort
    from transformers import AutoConfig

    from rrdistill.export.onnx import export_onnx, optimize_onnx

    plain = export_onnx(tiny_checkpoint, tmp_path / "onnx")
    fp16 = optimize_onnx(
        plain, AutoConfig.from_pretrained(tiny_checkpoint), tmp_path / "fp16", None, fp16=True
    )
    assert fused_operators(fp16) == {}
    graph = onnx.load(str(fp16.path)).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    requests, _ = parity_data(small_parity(queries=2, passages=6))
    reference = torch_reference(tiny_checkpoint, requests, 128)
    session = ort.InferenceSession(str(fp16.path), providers=["CPUExecutionProvider"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    for request, expected in zip(requests, reference, strict=True):
        texts = [passage_text("{title} {text}", c.passage) for c in request.candidates]
        feeds = tokenizer(
            [request.query.text] * len(texts),
            texts,
            padding=True,
            truncation="only_second",
            max_length=128,
            return_tensors="np",
        )
        (logits,) = session.run(["logits"], {name: feeds[name] for name in fp16.inputs})
        assert np.abs(logits[:, 0] - expected).max() < 1e-2


def test_default_max_length_comes_from_the_model_capped_at_512() -> None:
    from transformers import BertConfig, RobertaConfig

    assert default_max_length(BertConfig(max_position_embeddings=128)) == 128
    assert default_max_length(BertConfig(max_position_embeddings=2048)) == 512
    assert default_max_length(RobertaConfig(max_position_embeddings=514)) == 512

    class Tokenizer:
        model_max_length = 96

    assert default_max_length(BertConfig(max_position_embeddings=512), Tokenizer()) == 96
    Tokenizer.model_max_length = int(1e30)  # transformers' "not set"
    assert default_max_length(BertConfig(max_position_embeddings=512), Tokenizer()) == 512


def test_a_checkpoint_without_one_logit_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="num_labels=2"):
        export_bundle(tmp_path / "ck", tmp_path / "bundle")
    with pytest.raises(ExportError, match="no config.json"):
        export_bundle(tmp_path, tmp_path / "bundle")


def test_isa_detection_and_presets() -> None:
    from optimum.onnxruntime.configuration import QuantType

    assert detect_isa("aarch64") == "arm64"
    assert detect_isa("x86_64", {"avx2", "avx512f", "avx512bw", "avx512_vnni"}) == "avx512_vnni"
    assert detect_isa("x86_64", {"avx2", "avx512f", "avx512bw"}) == "avx512"
    assert detect_isa("x86_64", {"avx2"}) == "avx2"
    assert detect_isa("x86_64", set()) == "avx2"
    vnni = quantization_config("avx512_vnni", per_channel=False)
    assert (vnni.weights_dtype, vnni.activations_dtype, vnni.per_channel) == (
        QuantType.QInt8,
        QuantType.QUInt8,
        False,
    )
    assert not vnni.is_static
    assert quantization_config("avx512", per_channel=True).reduce_range  # no VNNI: avoid u8·s8 saturation
    assert quantization_config("avx2", per_channel=True).weights_dtype == QuantType.QUInt8
    with pytest.raises(ExportError, match="unknown instruction set"):
        quantization_config("sse2", per_channel=True)


def _request(qid: str, n: int) -> Request:
    return Request(Query(qid, "q"), [Candidate(Passage(f"{qid}-d{i}", "t")) for i in range(n)])


def test_compare_and_thresholds_on_known_cases() -> None:
    requests = [_request("a", 4), _request("b", 4)]
    qrels = {"a": {"a-d0": 1}, "b": {"b-d3": 1}}
    reference = [np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0, 4.0])]
    same = compare(requests, qrels, reference, [r.copy() for r in reference])
    assert (same.max_abs_diff, same.kendall_tau_mean, same.top1_agreement, same.ndcg_delta) == (
        0.0,
        1.0,
        1.0,
        0.0,
    )
    assert same.ndcg_source == 1.0 and violations(same, DEFAULT_THRESHOLDS["fp32"]) == []
    flipped = compare(requests, qrels, reference, [reference[0], reference[1][::-1].copy()])
    assert flipped.kendall_tau_min == pytest.approx(-1.0) and flipped.kendall_tau_mean == pytest.approx(0.0)
    assert flipped.top1_agreement == 0.5 and flipped.max_abs_diff == 3.0
    assert flipped.ndcg_exported == pytest.approx((1.0 + 1 / np.log2(5)) / 2)
    found = violations(flipped, ParityThresholds(max_abs_diff=1.0, min_mean_tau=0.5, max_ndcg_delta=0.1))
    assert len(found) == 3 and found[0].startswith("max |Δscore| 3")
    assert violations(flipped, ParityThresholds()) == []  # no bound, no verdict
    constant = compare([_request("c", 3)], {}, [np.zeros(3)], [np.zeros(3)])
    assert constant.kendall_tau_mean == 1.0  # both constant: they agree (scipy's τ is NaN here)
    with pytest.raises(ValueError, match="do not match"):
        compare(requests, qrels, reference, [reference[0], reference[1][:2]])


def test_export_command_end_to_end(tiny_checkpoint: Path, tmp_path: Path, data_dir: Path) -> None:
    bundle, report = tmp_path / "bundle", tmp_path / "export.json"
    common = ["--parity-queries", "3", "--parity-passages", "8", "--parity-data", str(data_dir / "scifact")]
    refused = runner.invoke(
        app, ["export", str(tiny_checkpoint), str(bundle), "--precision", "int8", *common]
    )
    assert refused.exit_code == 2, refused.output
    assert "parity (refused)" in refused.output and "parity check failed" in refused.output
    assert not bundle.exists()

    args = [
        "export",
        str(tiny_checkpoint),
        str(bundle),
        "--precision",
        "int8",
        "--per-tensor",
        "--accept-drift",
    ]
    result = runner.invoke(app, [*args, "--max-length", "96", *common, "--json", str(report)])
    assert result.exit_code == 0, result.output
    for row in (
        "max |Δscore|",
        "Kendall τ per query",
        "nDCG@10 source → exported",
        "DRIFT ACCEPTED",
        "bundle size",
    ):
        assert row in result.output
    manifest = load_manifest(bundle)
    assert manifest.inputs.max_length == 96 and manifest.parity["drift_accepted"]
    assert manifest.extra["export"]["quantization"]["per_channel"] is False
    assert json.loads(report.read_text())["manifest"]["parity"] == manifest.parity

    again = runner.invoke(app, ["export", str(tiny_checkpoint), str(bundle), *common])
    assert again.exit_code == 2 and "already exists" in again.output
    replaced = runner.invoke(app, ["export", str(tiny_checkpoint), str(bundle), "--overwrite", *common])
    assert replaced.exit_code == 0, replaced.output
    assert load_manifest(bundle).precision == "fp32"


@pytest.mark.gpu
def test_tensorrt_engine_bundle(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    for precision in ("fp32", "fp16"):
        bundle = onnx_bundle_from_checkpoint(
            tiny_checkpoint, tmp_path / precision, precision=precision, trt=True
        )
        manifest = load_manifest(bundle)
        assert (manifest.model.engine, manifest.model.file, manifest.model.onnx_file) == (
            "tensorrt",
            "model.plan",
            "model.onnx",
        )
        assert sorted(manifest.files) == ["model.onnx", "model.plan", "tokenizer.json"]
        assert manifest.providers_validated == ["TensorRTEngine"]
        assert manifest.parity["passed"], manifest.parity["violations"]
        assert "engine_vs_onnx" in manifest.parity
        profile = manifest.extra["tensorrt"]["profile"]
        assert profile["max_length"] == profile["opt_length"] == 128
        assert profile["max_batch"] >= profile["opt_batch"]
        assert manifest.extra["tensorrt"]["inputs"].keys() == set(manifest.model.inputs)
        assert manifest.provenance["tensorrt"]["device"]["compute_capability"]


def test_onnx_model_reads_io_names(tiny_bundle: Path) -> None:
    model = OnnxModel.read(tiny_bundle / "model.onnx")
    assert model.inputs == ["input_ids", "attention_mask", "token_type_ids"] and model.output == "logits"


def test_the_reference_caps_long_queries_exactly_as_the_runtime(
    tiny_bundle: Path, tiny_checkpoint: Path
) -> None:
    from transformers import AutoTokenizer

    from rrdistill.export.validate import capped_query

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    reranker = Reranker.load(tiny_bundle, warmup=False)
    words = [
        "cells",
        "proteins",
        "(mRNA)",
        "up-regulate",
        "3.5-fold",
        "dopaminergic",
        "neurons",
        "in",
        "vivo,",
        "Alzheimer's",
    ]
    rng = np.random.default_rng(0)
    for n in (1, 10, 60, 64, 65, 80, 200):
        query = " ".join(rng.choice(words, size=n))
        assert capped_query(tokenizer, query, reranker.max_length) == reranker._cap_query(query)
