"""A real language model behind the local llama.cpp server: SmolLM2-135M-Instruct labels windows.

The model is fetched once (checksum-pinned, see :mod:`rrdistill.models`) into the user's model
cache; everything else runs here: llama.cpp's OpenAI-compatible server, the one chat client, the
sliding window, parsing and repair. A 135M model follows the answer format only sometimes — the
point is that whatever it writes is parsed, repaired and *counted*, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from rrdistill.distill.backends import OpenAIBackend, SamplingParams
from rrdistill.distill.llama_server import LlamaServer, LlamaServerConfig
from rrdistill.distill.students.label import label_requests, read_labels
from rrdistill.distill.students.listwise import train_listwise_student
from rrdistill.distill.teacher.rerank import window_batch_reranker
from rrdistill.distill.window_ranker import GenerativeRanker
from rrdistill.io import read_rankgpt, read_requests, write_requests
from rrdistill.models import fetch_model
from rrdistill.types import Request
from rrdistill.window import WindowConfig

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    fetch_model(MODEL)
    with LlamaServer(LlamaServerConfig(MODEL, context=2048, threads=2)) as running:
        yield running


@pytest.fixture(scope="module")
def requests_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    requests = [
        Request(r.query, r.candidates[:6], r.extra)
        for r in read_rankgpt(data_dir / "noveleval" / "data.json")[:3]
    ]
    path = tmp_path_factory.mktemp("real-lm") / "requests.jsonl"
    write_requests(path, requests)
    return path


def test_a_real_model_labels_windows_and_every_repair_is_counted(
    server: LlamaServer, requests_file: Path, tmp_path: Path
) -> None:
    backend = OpenAIBackend(server.url, server.model_name, concurrency=1, timeout=300)
    ranker = GenerativeRanker(
        backend, SamplingParams(max_new_tokens=48), reasoning=False, max_passage_tokens=40
    )
    labels_path = tmp_path / "labels.jsonl"
    summary = label_requests(
        requests_file, labels_path, window_batch_reranker(ranker, WindowConfig(6, 3, top_k=6)), chunk_size=3
    )
    assert summary.labels == 3 and ranker.stats.windows == 3 and ranker.stats.failed == 0
    labels = list(read_labels(labels_path))
    for label, request in zip(labels, read_requests(requests_file), strict=True):
        assert sorted(label.docids) == sorted(request.docids)  # a full permutation, whatever was said
        (window,) = label.windows
        assert window["text"]  # the model's own words are kept with the label
        assert label.teacher["model"] == server.model_name
    # per-window repairs add up to the job's totals, and the strict/repaired split covers every window
    per_window = [sum(w.get("repairs", {}).values()) for label in labels for w in label.windows]
    assert sum(per_window) == sum(summary.repairs.to_dict().values())
    assert ranker.stats.format_ok + ranker.stats.repaired >= ranker.stats.windows


def test_the_server_keeps_llama_cpp_request_logs_off_the_terminal(
    server: LlamaServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp logs every slot event at INFO on the process's stderr; a pipeline stage that
    serves a labeller would bury its own progress under them: the server logs warnings only."""
    import time

    backend = OpenAIBackend(server.url, server.model_name, concurrency=1, timeout=300)
    (result,) = backend.generate([[{"role": "user", "content": "Say hi."}]], SamplingParams(max_new_tokens=4))
    assert result.ok
    time.sleep(0.5)  # llama.cpp's logger writes from its own thread
    assert "launch_slot_" not in capfd.readouterr().err


@pytest.mark.slow
def test_train_teacher_from_a_real_gguf_checkpoint(tmp_path: Path) -> None:
    """`train-teacher` on SmolLM2 from its GGUF: the real tokenizer and chat template, LoRA on the
    Llama projections, SFT then GRPO (fast mode, whose reward judges the answer-only format)."""
    import json

    from test_teacher import toy_samples

    from rrdistill.config import load_config
    from rrdistill.distill.checkpoints import checkpoint_source
    from rrdistill.distill.teacher.config import TeacherConfig
    from rrdistill.distill.teacher.train import TeacherTrainer

    samples = toy_samples(tmp_path / "samples.jsonl", count=6, n=4)
    config = {
        "output_dir": str(tmp_path / "teacher"),
        "seed": 0,
        "precision": "fp32",
        "reasoning": False,
        "model": {"name_or_path": MODEL, "dtype": "float32"},
        "data": {"train": str(samples), "heldout": 2, "max_passage_tokens": 8},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "sft": {
            "learning_rate": 1e-3,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 4,
            "max_length": 512,
            "logging_steps": 1,
            "save_steps": 1,
            "warmup_ratio": 0.0,
            "extra": {"max_steps": 1},
        },
        "grpo": {
            "learning_rate": 1e-4,
            "max_steps": 1,
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_completion_length": 16,
            "logging_steps": 1,
            "save_steps": 1,
        },
        "evaluation": {"batch_size": 2, "samples_per_window": 1},
    }
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(config))
    summary = TeacherTrainer(load_config(TeacherConfig, path)).run()
    final = tmp_path / "teacher" / "final"
    manifest = json.loads((final / "rrdistill_teacher.json").read_text())
    assert manifest["stages"] == ["sft", "grpo"] and manifest["reasoning"] is False
    assert manifest["base_source"]["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert checkpoint_source(manifest["base_model"])["sha256"] == manifest["base_source"]["sha256"]
    assert "<|im_start|>assistant" in (final / "chat_template.jinja").read_text()
    for stage in ("reward_before_grpo", "reward_after_grpo"):  # held-out reward, format failures included
        assert (
            summary[stage]["greedy"]["count"] == 2 and 0 <= summary[stage]["greedy"]["format_failures"] <= 1
        )


# -- the listwise LM student from SmolLM2 -------------------------------------------------------

UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

SERVE_WITHOUT_TORCH = """
import json, sys
from rrdistill.io import read_rankgpt
from rrdistill.runtime import Reranker

bundle, data, n, chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
request = read_rankgpt(data)[0]
passages = [c.passage.text[:chars] for c in request.candidates[:n]]
reranker = Reranker.load(bundle, threads=2)
out = {}
for mode in (False, True):
    ranked = reranker.rerank(request.query.text, passages, reasoning=mode)
    out[str(mode)] = {
        "indices": [r.index for r in ranked],
        "explanation": ranked.explanation,
        "texts": [w.text for w in ranked.windows],
        "tokens": [w.generated_tokens for w in ranked.windows],
    }
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
assert not heavy, heavy
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def smollm2_checkpoint() -> Path:
    """SmolLM2's GGUF dequantized once into an fp32 checkpoint (cached beside the GGUF)."""
    from rrdistill.distill.checkpoints import materialize_checkpoint

    fetch_model(MODEL)
    return materialize_checkpoint(MODEL)


def serve_in_subprocess(bundle: Path, data_dir: Path, passages: int, chars: int) -> dict:
    """Rerank NovelEval's first query in both modes in a fresh interpreter that must not import
    torch or transformers (the runtime contract), and return what it ranked."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(bundle), str(data_dir / "noveleval" / "data.json"),
         str(passages), str(chars)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_smollm2_splits_identifiers_so_the_fast_mode_generates(smollm2_checkpoint: Path) -> None:
    """SmolLM2 spells numbers digit by digit: ``[10]`` is ``[``, ``1``, ``0``, ``]``, so FIRST cannot
    read identifiers 10..20 from one token and a default window of 20 falls back to a short greedy
    answer; windows of up to 9 may use FIRST. Its ChatML template renders by slot replacement, eos
    and pad are ``<|im_end|>`` (id 2) as the GGUF declares, not ``<|endoftext|>`` (id 0)."""
    from transformers import AutoTokenizer

    from rrdistill.export.causal_lm import (
        chat_template_slots,
        check_chat_template,
        first_identifier_tokens,
        special_token_ids,
    )
    from rrdistill.prompts import build_messages
    from rrdistill.types import Passage

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    template = chat_template_slots(tokenizer)
    assert template == (
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    check_chat_template(tokenizer, template)  # both modes' real prompts, as apply_chat_template renders them
    messages = build_messages("q", [Passage("a", "x")], reasoning=True)
    assert template.replace("{system}", messages[0]["content"]).replace(
        "{user}", messages[1]["content"]
    ) == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # without a system message SmolLM2's template injects its own: the prompt always sends one
    bare = tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
    assert "You are a helpful AI assistant named SmolLM" in bare

    assert first_identifier_tokens(tokenizer, template, 20) is None
    nine = first_identifier_tokens(tokenizer, template, 9)
    assert nine is not None and [tokenizer.decode([t]) for t in nine] == [str(k) for k in range(1, 10)]
    assert special_token_ids(smollm2_checkpoint, tokenizer) == ([2], 2)
    assert tokenizer.convert_ids_to_tokens([0, 2]) == ["<|endoftext|>", "<|im_end|>"]


def test_distill_takes_a_registry_name_as_the_base_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--base-model smollm2-135m-instruct`` reaches the TeacherConfig's model (which the trainer
    materializes from the GGUF), replacing the config's tiny model."""
    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.distill.students import listwise

    seen = []

    def train(config, labels, requests, **options):  # type: ignore[no-untyped-def]
        seen.append(config)
        return {"checkpoint": "c", "windows": {"windows": 0, "with_reasoning": 0}, "seconds": 0.0}

    monkeypatch.setattr(listwise, "train_listwise_student", train)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = ["distill", "--student", "listwise-lm", "--labels", str(empty), "--requests", str(empty)]
    args += [
        "--config",
        "configs/students/listwise-tiny.yaml",
        "--base-model",
        MODEL,
        "-o",
        str(tmp_path / "a"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen[-1].model.name_or_path, seen[-1].model.tiny) == (MODEL, None)


def test_smollm2_exports_with_its_kv_cache_and_serves_without_torch(
    smollm2_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The untrained SmolLM2 checkpoint (real Llama graph: 3 KV heads of 9, position ids, tied
    embeddings; real tokenizer and template) exported fp32 with parity enforced against
    transformers, then served by the torch-free runtime in both modes."""
    from rrdistill.export.causal_lm import ListwiseExportConfig, export_listwise_lm
    from rrdistill.export.validate import ParityConfig
    from rrdistill.runtime import Reranker
    from rrdistill.runtime.bundle import load_manifest

    config = ListwiseExportConfig(
        passage_max_tokens=16,
        max_new_tokens_fast=24,
        max_new_tokens_reasoning=16,
        parity=ParityConfig(data=data_dir / "scifact", queries=1, passages=4),
        parity_new_tokens=4,
    )
    bundle = export_listwise_lm(smollm2_checkpoint, tmp_path / "bundle", config)
    manifest = load_manifest(bundle)
    parity, listwise = manifest.parity, manifest.extra["listwise"]
    assert parity["passed"] and not parity["drift_accepted"] and parity["windows"] == 1
    assert parity["greedy_token_agreement"] >= 0.95 and parity["max_abs_logit_diff"] <= 1e-3
    assert parity["ranking_mode"] == "greedy answer (parsed)"
    assert (listwise["eos_token_ids"], listwise["pad_token_id"], listwise["first_token_ids"]) == (
        [2],
        2,
        None,
    )
    base = manifest.provenance["base_checkpoint"]
    assert (base["upstream"], base["sha256"]) == (UPSTREAM, SHA256)

    # stop on text: SmolLM2 spells " </answer>" with a "Ġ</" token, not the standalone "</" one
    engine = Reranker.load(bundle).engine
    spaced = engine.tokenizer.encode("[2] > [1] </answer>", add_special_tokens=False).ids
    alone = engine.tokenizer.encode("</answer>", add_special_tokens=False).ids
    assert spaced[-len(alone) :] != alone and engine._stopped(spaced)
    assert not engine._stopped(spaced[:-1])

    served = serve_in_subprocess(bundle, data_dir, passages=6, chars=160)
    for mode in ("False", "True"):
        assert sorted(served[mode]["indices"]) == list(range(6))
        assert served[mode]["texts"][0] and 0 < served[mode]["tokens"][0] <= (24 if mode == "False" else 16)


@pytest.mark.slow
def test_listwise_student_from_smollm2_trains_both_modes_exports_and_serves(
    smollm2_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A few SFT steps (LoRA on the Llama projections) from the GGUF base in both modes on NovelEval
    windows ordered by their judgments (evidence rationales as the reasoning), then fp32 and int8
    bundles (int8 parity may miss: then the drift must be recorded, never silent), each served
    torch-free: full permutations in both modes, an explanation in the reasoning mode."""
    from rrdistill.config import load_config
    from rrdistill.distill.students.label import PermutationLabel
    from rrdistill.distill.teacher.config import TeacherConfig
    from rrdistill.export.causal_lm import ListwiseExportConfig, export_listwise_lm
    from rrdistill.export.validate import ParityConfig
    from rrdistill.io import read_qrels
    from rrdistill.runtime.bundle import load_manifest

    requests = [
        Request(r.query, r.candidates[:6]) for r in read_rankgpt(data_dir / "noveleval" / "data.json")[:4]
    ]
    qrels = read_qrels(data_dir / "noveleval" / "qrels.txt")
    labels = [
        PermutationLabel(
            r.qid,
            r.query.text,
            sorted(r.docids, key=lambda d: -qrels.get(r.qid, {}).get(d, 0)),
            teacher={"source": "qrels"},
        )
        for r in requests
    ]
    config = load_config(TeacherConfig, Path("configs/students/listwise-smollm2.yaml"))
    config = replace(
        config,
        output_dir=str(tmp_path / "student"),
        data=replace(config.data, heldout=1, max_passage_tokens=12),
        lora=replace(config.lora, r=8, alpha=16),
        sft=replace(
            config.sft,
            learning_rate=2e-3,  # a handful of steps must teach the format's first tokens
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            max_length=512,
            save_steps=1000,
            extra={"max_steps": 6},
        ),
        evaluation=replace(config.evaluation, max_new_tokens=8, batch_size=1),
    )
    summary = train_listwise_student(
        config, labels, {r.qid: r for r in requests}, rationale=True, window=WindowConfig(6, 3, top_k=6)
    )
    assert summary["sft"]["modes"] == ["reasoning", "fast"] and summary["windows"]["with_reasoning"] == 4
    checkpoint = Path(summary["checkpoint"])
    teacher = json.loads((checkpoint / "rrdistill_teacher.json").read_text())
    assert teacher["base_source"]["sha256"] == SHA256

    explanations = []
    for precision in ("fp32", "int8"):
        bundle = export_listwise_lm(
            checkpoint,
            tmp_path / precision,
            ListwiseExportConfig(
                precision=precision,
                passage_max_tokens=12,
                max_new_tokens_fast=32,
                max_new_tokens_reasoning=24,
                parity=ParityConfig(data=data_dir / "scifact", queries=1, passages=4),
                parity_new_tokens=4,
                accept_drift=precision == "int8",
            ),
        )
        manifest = load_manifest(bundle)
        parity = manifest.parity
        if precision == "fp32":
            assert parity["passed"] and not parity["drift_accepted"]
        else:  # passes, or the drift is written down with its reasons
            assert parity["passed"] or (parity["drift_accepted"] and parity["violations"])
        base = manifest.provenance["base_checkpoint"]
        assert (base["upstream"], base["sha256"]) == (UPSTREAM, SHA256)
        assert manifest.provenance["training"]["modes"] == ["reasoning", "fast"]
        served = serve_in_subprocess(bundle, data_dir, passages=6, chars=120)
        assert sorted(served["False"]["indices"]) == sorted(served["True"]["indices"]) == list(range(6))
        # the format is learned (the think block opens and the runtime returns it as the explanation);
        # what six CPU steps put inside it is not asserted
        (text,) = served["True"]["texts"]
        assert text.startswith("<think>") and served["True"]["explanation"] is not None, text
        explanations.append({"precision": precision, "text": text, "parity": parity})
    (tmp_path / "served.json").write_text(json.dumps(explanations, indent=1))


def test_the_pipeline_serves_a_gguf_labeller_for_synthesis(tmp_path: Path, data_dir: Path) -> None:
    """`teacher.synthesis.labeller: <GGUF>`: the stage starts llama.cpp, synthesizes through it, stops it."""
    from rrdistill.pipeline import PipelineConfig, PipelineContext
    from rrdistill.pipeline.config import (
        DevSettings,
        EvalSettings,
        LabelSettings,
        SynthesisSettings,
        TeacherSettings,
    )
    from rrdistill.pipeline.heldout import write_split
    from rrdistill.pipeline.teacher_steps import synthesize

    fetch_model(MODEL)
    synthesis = SynthesisSettings(
        labeller=MODEL,
        context=1024,
        parallel=1,
        max_queries=2,
        list_size=4,
        max_new_tokens=24,
        max_passage_tokens=16,
    )
    config = PipelineConfig(
        run_dir=str(tmp_path / "run"),
        data=str(data_dir / "scifact"),
        eval=EvalSettings(max_queries=4, top_k=10),
        dev=DevSettings(queries=8, top_k=10, generative_queries=2),
        labels=LabelSettings(top_k=5),
        teacher=TeacherSettings(config="configs/teacher/smollm2-135m-cpu.yaml", synthesis=synthesis),
    )
    ctx = PipelineContext(config)
    write_split(ctx)
    summary = synthesize(ctx)
    assert summary["total"] == 2 and summary["failed"] == 0
    assert summary["labeller"]["server"] == "llama.cpp (xllamacpp)" and summary["labeller"]["model"] == MODEL
    written = [json.loads(line) for line in ctx.layout.samples.open()] + [
        json.loads(line) for line in ctx.layout.samples.with_suffix(".rejected.jsonl").open()
    ]
    assert len(written) == 2 and all(s["provenance"]["labeller"] == MODEL for s in written)
    assert not (ctx.layout.labeller / "config.json").exists()  # no tiny model was built


def test_a_trained_real_teacher_is_scored_at_every_step_of_its_recipe(tmp_path: Path, data_dir: Path) -> None:
    from rrdistill.pipeline import PipelineConfig, PipelineContext
    from rrdistill.pipeline.config import TeacherSettings
    from rrdistill.pipeline.teacher_steps import teacher_stages

    real = PipelineContext(
        PipelineConfig(
            run_dir=str(tmp_path / "a"),
            data=str(data_dir / "scifact"),
            teacher=TeacherSettings(config="configs/teacher/smollm2-135m-cpu.yaml"),
        )
    )
    systems = teacher_stages(real)
    assert [s for s, _, _ in systems] == ["teacher-zero-shot", "teacher-sft", "teacher"]
    assert systems[0][1] == MODEL and all(MODEL in description for _, _, description in systems)
    assert systems[1][1].endswith("sft/final") and systems[2][1] == real.teacher
    tiny = PipelineContext(PipelineConfig(run_dir=str(tmp_path / "b"), data=str(data_dir / "scifact")))
    assert [s for s, _, _ in teacher_stages(tiny)] == ["teacher"]  # a random base has no zero-shot row
