"""The listwise LM student end to end: labels → windows → SFT in both modes → bundle → runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rrdistill.distill.students.label import (
    bundle_reranker,
    label_requests,
    labels_from_reasonrank,
    read_labels,
)
from rrdistill.distill.students.listwise import train_listwise_student, window_samples
from rrdistill.distill.teacher.samples import read_teacher_samples
from rrdistill.io import read_rankgpt, write_requests
from rrdistill.window import WindowConfig

REASONRANK = Path(__file__).parent / "fixtures" / "reasonrank" / "training_data_all.jsonl"


def test_windows_from_recorded_and_from_global_orders(
    tiny_bundle: Path, data_dir: Path, tmp_path: Path
) -> None:
    samples = {s.qid: s.request for s in read_teacher_samples(REASONRANK)}
    recorded = list(window_samples(labels_from_reasonrank(REASONRANK), samples))
    assert next(s.final_list for s in recorded) == ["m_c", "m_a", "m_d", "m_b"]
    assert all(s.reasoning for s in recorded)

    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:2]
    write_requests(tmp_path / "r.jsonl", requests)
    label_requests(tmp_path / "r.jsonl", tmp_path / "labels.jsonl", bundle_reranker(tiny_bundle))
    labels = list(read_labels(tmp_path / "labels.jsonl"))
    derived = list(window_samples(labels, {r.qid: r for r in requests}, WindowConfig(10, 5, top_k=20)))
    assert len(derived) == 2 * 3
    first = derived[0]
    rank = {d: i for i, d in enumerate(labels[0].docids)}
    assert first.initial_list == requests[0].docids[10:20]  # the first-stage order, back window first
    assert first.final_list == sorted(first.initial_list, key=rank.__getitem__)
    assert first.reasoning is None

    explained = list(
        window_samples(labels, {r.qid: r for r in requests}, WindowConfig(10, 5, top_k=20), rationale=True)
    )
    assert [s.final_list for s in explained] == [s.final_list for s in derived]
    assert all(s.reasoning and s.provenance["reasoning_source"] == "evidence-rationale" for s in explained)
    head = explained[0].request.docids.index(explained[0].final_list[0]) + 1
    assert f"Most relevant: [{head}]" in explained[0].reasoning


def test_train_both_modes_export_and_rerank(tiny_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    from rrdistill.config import load_config
    from rrdistill.distill.teacher.config import TeacherConfig
    from rrdistill.export.causal_lm import ListwiseExportConfig, export_listwise_lm
    from rrdistill.runtime import Reranker

    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:3]
    write_requests(tmp_path / "r.jsonl", requests)
    label_requests(tmp_path / "r.jsonl", tmp_path / "labels.jsonl", bundle_reranker(tiny_bundle))
    labels = [*read_labels(tmp_path / "labels.jsonl"), *labels_from_reasonrank(REASONRANK)]
    texts = {r.qid: r for r in requests} | {s.qid: s.request for s in read_teacher_samples(REASONRANK)}

    config = load_config(TeacherConfig, Path("configs/students/listwise-tiny.yaml"))
    tiny = replace(
        config.model.tiny,
        corpus=str(data_dir / "scifact"),
        max_documents=200,
        vocab_size=800,
        hidden_size=32,
        intermediate_size=64,
    )
    config = replace(
        config,
        output_dir=str(tmp_path / "student"),
        model=replace(config.model, tiny=tiny),
        data=replace(config.data, heldout=1, max_passage_tokens=12),
        sft=replace(config.sft, num_train_epochs=1, max_length=1024, save_steps=1000),
        evaluation=replace(config.evaluation, max_new_tokens=8),
    )
    summary = train_listwise_student(config, labels, texts)
    assert summary["windows"]["with_reasoning"] == 3
    assert summary["sft"]["modes"] == ["reasoning", "fast"]
    reasoned_in_train = {"math_1/w0", "math_2/w0", "bio_7/w0"} - set(summary["heldout_qids"])
    # every training window once in the fast mode, the reasoned ones again in the reasoning mode
    assert summary["sft"]["rows"] == summary["sft"]["samples"] + len(reasoned_in_train)
    bundle = export_listwise_lm(
        summary["checkpoint"],
        tmp_path / "bundle",
        ListwiseExportConfig(passage_max_tokens=12, max_new_tokens_fast=8, max_new_tokens_reasoning=8),
    )
    reranker = Reranker.load(bundle)
    assert reranker.engine.settings.first_token_ids is not None  # whole-token identifiers: FIRST
    passages = [c.passage for c in requests[0].candidates]
    fast = reranker.rerank(requests[0].query.text, passages)
    explained = reranker.rerank(requests[0].query.text, passages, reasoning=True)
    assert sorted(r.index for r in fast) == sorted(r.index for r in explained) == list(range(20))
    assert all(w.text is None for w in fast.windows)  # FIRST: no generation in the fast mode


def test_reasoning_mode_needs_reasoning(tiny_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    from rrdistill.config import load_config
    from rrdistill.distill.teacher.config import TeacherConfig

    requests = read_rankgpt(data_dir / "noveleval" / "data.json")[:1]
    write_requests(tmp_path / "r.jsonl", requests)
    label_requests(tmp_path / "r.jsonl", tmp_path / "labels.jsonl", bundle_reranker(tiny_bundle))
    config = load_config(TeacherConfig, Path("configs/students/listwise-tiny.yaml"))
    config = replace(config, output_dir=str(tmp_path / "student"))
    with pytest.raises(ValueError, match="carry no teacher reasoning"):
        train_listwise_student(
            config, list(read_labels(tmp_path / "labels.jsonl")), {r.qid: r for r in requests}
        )


def test_the_export_command_recognises_a_listwise_lm_and_enforces_parity(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Parity is enforced (a miss writes nothing), --accept-drift writes it with the drift recorded,
    and --max-length, --int8-scheme dynamic, --isa, --per-tensor reach the bundle."""
    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.runtime.bundle import load_manifest

    out = tmp_path / "listwise-int8"
    args = [
        "export", str(tiny_model_dir), str(out), "--precision", "int8", "--int8-scheme", "dynamic",
        "--isa", "avx2", "--per-tensor",
        "--max-length", "3400", "--parity-queries", "2", "--parity-passages", "4", "--max-abs-diff", "0",
    ]  # fmt: skip
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "parity check failed" in refused.output
    assert "next-token logit" in refused.output and not out.exists()

    result = CliRunner().invoke(app, [*args, "--accept-drift"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert (manifest.kind, manifest.precision) == ("listwise-lm", "int8")
    parity = manifest.parity
    assert parity["drift_accepted"] and not parity["passed"] and parity["thresholds"]["max_logit_diff"] == 0
    assert any("next-token logit" in v for v in parity["violations"])
    assert parity["windows"] == 2 and parity["pairs"] == 2 * 4 and "greedy_token_agreement" in parity
    export = manifest.extra["export"]
    assert (export["quantization"]["isa"], export["quantization"]["per_channel"]) == ("avx2", False)
    # the output projection stays fp32, and it is the only MatMul that does
    import onnx

    (excluded,) = export["quantization"]["excluded_nodes"]
    nodes = {n.name: n for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert nodes[excluded].op_type == "MatMul" and "logits" in nodes[excluded].output
    assert sum(n.op_type == "MatMul" for n in nodes.values()) == 1
    assert manifest.inputs.max_length == 3400
    budget, listwise = export["length_budget"], manifest.extra["listwise"]
    assert budget["capped"] and listwise["max_new_tokens_reasoning"] < 1024
    assert budget["prompt_tokens"]["reasoning"] + listwise["max_new_tokens_reasoning"] == 3400

    again = CliRunner().invoke(app, ["export", str(tiny_model_dir), str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    too_long = CliRunner().invoke(
        app, ["export", str(tiny_model_dir), str(tmp_path / "x"), "--max-length", "99999"]
    )
    assert too_long.exit_code == 2 and "max_position_embeddings" in too_long.output
    too_short = CliRunner().invoke(
        app, ["export", str(tiny_model_dir), str(tmp_path / "x"), "--max-length", "1000"]
    )
    assert too_short.exit_code == 2 and "cannot hold a full" in too_short.output
    assert not (tmp_path / "x").exists()


def test_int8_of_a_listwise_lm_is_weight_only_by_default_and_keeps_parity(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The default int8 of a decoder stores int8 weights in blocks (MatMulNBits) and passes the
    int8 parity thresholds; the dynamic scheme is what --int8-scheme dynamic asks for."""
    import onnx
    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.bundle import load_manifest

    out = tmp_path / "int8"
    args = ["export", str(tiny_model_dir), str(out), "--precision", "int8", "--parity-queries", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "weight-only, int8 blocks of 32" in result.output
    manifest = load_manifest(out)
    quantization = manifest.extra["export"]["quantization"]
    assert (quantization["mode"], quantization["block_size"], quantization["isa"]) == (
        "weight-only",
        32,
        None,
    )
    assert manifest.parity["passed"] and not manifest.parity["violations"]
    nodes = onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node
    ops = [n.op_type for n in nodes]
    (head,) = quantization["excluded_nodes"]
    assert ops.count("MatMulNBits") >= 4 and ops.count("MatMul") >= 1
    assert any(n.name == head and n.op_type == "MatMul" for n in nodes)  # the logits stay fp32
    assert not any(op in ("MatMulInteger", "DynamicQuantizeLinear") for op in ops)
    passages = ["cats purr", "dogs bark", "the moon", "tides"]
    ranked = Reranker.load(out).rerank("what causes tides?", passages)
    assert sorted(r.index for r in ranked) == [0, 1, 2, 3]
    refused = CliRunner().invoke(
        app, [*args[:2], str(tmp_path / "x"), "--precision", "int8", "--isa", "avx2"]
    )
    assert refused.exit_code == 2 and "tune dynamic int8" in " ".join(
        refused.output.replace("│", " ").split()
    )


def test_end_of_sequence_and_padding_come_from_the_checkpoint(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rrdistill.export import ExportError
    from rrdistill.export.causal_lm import special_token_ids

    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [7, 3], "pad_token_id": 5}')
    tokenizer = SimpleNamespace(eos_token_id=3, pad_token_id=None)
    assert special_token_ids(tmp_path, tokenizer) == ([3, 7], 5)
    assert special_token_ids(tmp_path, SimpleNamespace(eos_token_id=9, pad_token_id=1)) == ([3, 7, 9], 1)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 4}')
    assert special_token_ids(tmp_path, SimpleNamespace(eos_token_id=None, pad_token_id=None)) == ([4], 4)
    (tmp_path / "generation_config.json").unlink()
    with pytest.raises(ExportError, match="no end-of-sequence token"):
        special_token_ids(tmp_path, SimpleNamespace(eos_token_id=None, pad_token_id=None))
