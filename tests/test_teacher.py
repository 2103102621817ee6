"""Teacher training end to end on the tiny model (SFT → GRPO with trl, resume, summary), the
assistant-only loss mask, configs (YAML → dataclasses; accelerate launch files), and
`rrdistill rerank --teacher` on the trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted import ScriptedLabeller
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.config import ConfigError, load_config
from rrdistill.distill.teacher.config import TeacherConfig
from rrdistill.distill.teacher.data import sft_rows, split_heldout, target_text
from rrdistill.distill.teacher.eval import reward_distribution
from rrdistill.distill.teacher.samples import read_teacher_samples
from rrdistill.distill.teacher.synthesize import SynthesisConfig, Synthesizer
from rrdistill.io import read_requests, read_trec_run, write_requests
from rrdistill.prompts import TokenTruncator
from rrdistill.types import Candidate, Passage, Query, Request

pytest.importorskip("trl")
REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def toy_samples(path: Path, count: int = 10, n: int = 5) -> Path:
    requests = [
        Request(
            Query(f"q{k}", f"claim number {k}"),
            [
                Candidate(Passage(f"q{k}-{i}", f"passage {i} {'GOOD' if i == k % n else 'plain'}"))
                for i in range(n)
            ],
        )
        for k in range(count)
    ]
    qrels = {r.qid: {r.docids[int(r.qid[1:]) % n]: 1} for r in requests}
    Synthesizer(ScriptedLabeller(), SynthesisConfig()).run(requests, path, qrels)
    return path


def write_config(tmp_path: Path, model_dir: Path, samples: Path) -> Path:
    config = {
        "output_dir": str(tmp_path / "teacher"),
        "seed": 0,
        "precision": "fp32",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(samples), "heldout": 2, "max_passage_tokens": 8},
        "sft": {
            "learning_rate": 1.0e-3,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 4,
            "max_length": 512,
            "logging_steps": 1,
            "save_steps": 1,
        },
        "grpo": {
            "learning_rate": 1.0e-4,
            "max_steps": 2,
            "num_generations": 2,
            "per_device_train_batch_size": 4,
            "max_completion_length": 24,
            "logging_steps": 1,
            "save_steps": 1,
        },
        "evaluation": {"batch_size": 4, "samples_per_window": 1},
    }
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(config))
    return path


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", ["qwen2.5", "unknown chatml"])
def test_sft_loss_covers_exactly_the_assistant_turn(
    template: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Qwen2.5's template: trl's assistant masks; a template trl does not know: prompt/completion rows."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import AutoTokenizer

    from rrdistill.distill.teacher.train import assistant_only_rows

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if template != "qwen2.5":
        tokenizer.chat_template = CHATML
    samples = list(read_teacher_samples(REPO / "tests" / "fixtures" / "reasonrank"))
    rows, masks = assistant_only_rows(tokenizer, sft_rows(samples, TokenTruncator(8, tokenizer)))
    assert masks == (template == "qwen2.5")
    trainer = trl.SFTTrainer(
        model=str(tiny_model_dir),
        args=trl.SFTConfig(output_dir=str(tmp_path), assistant_only_loss=masks, bf16=False, report_to="none"),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    for sample, example in zip(samples, trainer.train_dataset, strict=True):
        labelled = list(zip(example["input_ids"], example["labels"], strict=True))
        trained = [t for t, label in labelled if label != -100]
        assert tokenizer.decode(trained).strip() == target_text(sample) + "<|im_end|>"
        assert "Search Query:" in tokenizer.decode([t for t, label in labelled if label == -100])


def test_train_teacher_sft_then_grpo_resume_and_rerank(tiny_model_dir: Path, tmp_path: Path) -> None:
    samples = toy_samples(tmp_path / "samples.jsonl")
    config = write_config(tmp_path, tiny_model_dir, samples)
    result = runner.invoke(app, ["train-teacher", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "teacher"
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["samples"] == {"train": 8, "heldout": 2}
    assert summary["sft"]["loss_mask"] == "assistant_only" and summary["sft"]["global_steps"] == 2
    assert summary["grpo"]["global_steps"] == 2 and summary["grpo"]["logged_reward_first"] is not None
    for key in ("reward_before_grpo", "reward_after_grpo"):
        greedy = summary[key]["greedy"]
        assert greedy["count"] == 2 and -1.0 <= greedy["min"] <= greedy["max"] <= 1.3
        assert set(greedy["per_window"]) == set(summary["heldout_qids"])
        assert summary[key]["sampled"]["count"] == 2
    final = out / "final"
    manifest = json.loads((final / "rrdistill_teacher.json").read_text())
    assert manifest["max_passage_tokens"] == 8 and manifest["stages"] == ["sft", "grpo"]
    assert (final / "chat_template.jinja").exists() or "chat_template" in (
        final / "tokenizer_config.json"
    ).read_text()
    assert (out / "sft" / "final" / "rrdistill_stage.json").exists()
    assert any(p.name.startswith("checkpoint-") for p in (out / "grpo").iterdir())

    # a second run refuses to overwrite; --resume skips the finished stages
    again = runner.invoke(app, ["train-teacher", "--config", str(config)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["train-teacher", "--config", str(config), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["sft"]["skipped"] == "complete" and summary["grpo"]["skipped"] == "complete"
    assert summary["reward_after_grpo"]["reused"] is True  # no generation for finished stages

    # the checkpoint is a teacher: rerank NovelEval lists with it, windows batched across queries
    from rrdistill.io import read_rankgpt

    requests = tmp_path / "requests.jsonl"
    write_requests(requests, read_rankgpt(REPO / "data" / "noveleval" / "data.json")[:1])
    output, trec, report = tmp_path / "reranked.jsonl", tmp_path / "reranked.trec", tmp_path / "rerank.json"
    args = ["rerank", str(requests), "--teacher", str(final), "-o", str(output), "--trec", str(trec)]
    args += [
        "--window",
        "10",
        "--step",
        "5",
        "--top-k",
        "20",
        "--max-new-tokens",
        "16",
        "--json",
        str(report),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(report.read_text())
    assert stats["windows"] == 3 and stats["failed"] == 0 and stats["mean_generated_tokens"] <= 16
    results = list(read_requests(output))
    originals = list(read_requests(requests))
    for original, reranked in zip(originals, results, strict=True):
        assert sorted(reranked.docids) == sorted(original.docids)
        windows = reranked.extra["teacher"]["windows"]
        assert [(w["start"], w["end"]) for w in windows] == [(10, 20), (5, 15), (0, 10)]
        assert all(1 <= w["generated_tokens"] <= 16 for w in windows)
    assert set(read_trec_run(trec)) == {r.qid for r in originals}


def test_shipped_teacher_configs_load_with_the_papers_hyper_parameters() -> None:
    seven = load_config(TeacherConfig, REPO / "configs" / "teacher" / "qwen2.5-7b.yaml")
    big = load_config(TeacherConfig, REPO / "configs" / "teacher" / "qwen2.5-32b-lora.yaml")
    for config in (seven, big):
        assert (config.sft.learning_rate, config.sft.num_train_epochs) == (5e-6, 5.0)
        assert (config.grpo.num_generations, config.grpo.learning_rate, config.grpo.beta) == (8, 1e-6, 0.001)
        assert config.grpo.use_vllm
    assert not seven.lora.enabled and seven.grpo.vllm_mode == "colocate"
    assert big.lora.enabled and (big.lora.r, big.lora.alpha) == (32, 32) and big.grpo.vllm_mode == "server"
    tiny = load_config(TeacherConfig, REPO / "configs" / "teacher" / "tiny-cpu.yaml")
    assert tiny.model.tiny is not None and tiny.precision == "fp32"
    cpu = load_config(TeacherConfig, REPO / "configs" / "teacher" / "qwen2.5-0.5b-cpu.yaml")
    assert cpu.model.name_or_path == "qwen2.5-coder-0.5b-instruct" and cpu.lora.enabled
    assert set(cpu.lora.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    # the same code path as the 7B config, on the CPU; the demo's lists carry no think block
    assert not cpu.grpo.use_vllm and not cpu.reasoning and cpu.data.train == "runs/demo/teacher/samples.jsonl"
    demo = load_config(TeacherConfig, REPO / "configs" / "teacher" / "qwen2.5-0.5b-demo.yaml")
    assert (demo.model.name_or_path, demo.lora.target_modules) == (
        cpu.model.name_or_path,
        cpu.lora.target_modules,
    )
    assert demo.lora.layers_to_transform == list(range(16, 24))  # the top 8 of Qwen2.5-0.5B's 24 blocks


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\nmodel: {name_or_path: m}\ndata: {train: t}\nsft: {learning_rte: 1e-5}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: sft.learning_rte: unknown key"):
        load_config(TeacherConfig, path)
    path.write_text("output_dir: x\nmodel: {name_or_path: m}\ndata: {train: t}\ngrpo: {beta: fast}\n")
    with pytest.raises(ConfigError, match=r"grpo.beta: expected a number, got 'fast'"):
        load_config(TeacherConfig, path)
    path.write_text("output_dir: x\nmodel: {}\ndata: {train: t}\n")
    with pytest.raises(ConfigError, match="exactly one of model.name_or_path and model.tiny"):
        load_config(TeacherConfig, path)
    path.write_text("output_dir: x\nmodel: {name_or_path: m}\ndata: {train: t}\nprecision: fp8\n")
    with pytest.raises(ConfigError, match="precision: expected one of"):
        load_config(TeacherConfig, path)


def test_accelerate_launch_files_are_valid() -> None:
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert len(files) >= 3
    kinds = set()
    for path in files:
        config = config_args.load_config_from_file(str(path))
        kinds.add(str(config.distributed_type))
        if config.deepspeed_config:
            assert config.deepspeed_config["zero_stage"] == 3
            assert config.deepspeed_config["zero3_save_16bit_model"] is True
    assert kinds == {"DistributedType.DEEPSPEED", "DistributedType.MULTI_GPU"}


def test_heldout_split_is_stable_and_disjoint(tmp_path: Path) -> None:
    samples = list(read_teacher_samples(toy_samples(tmp_path / "s.jsonl")))
    first, second = split_heldout(samples, 3), split_heldout(list(reversed(samples)), 3)
    assert {s.qid for s in first.heldout} == {s.qid for s in second.heldout}
    assert len(first.heldout) == 3 and len(first.train) == len(samples) - 3
    assert not {s.qid for s in first.heldout} & {s.qid for s in first.train}


def test_reward_distribution_quantiles() -> None:
    report = reward_distribution([-1.0, 0.0, 0.5, 1.0, 1.2])
    assert report["count"] == 5 and report["median"] == 0.5 and report["min"] == -1.0
    assert report["format_failures"] == pytest.approx(0.2) and report[
        "invalid_permutations"
    ] == pytest.approx(0.2)
    assert report["p25"] == 0.0 and report["p75"] == 1.0 and report["mean"] == pytest.approx(0.34)
    assert reward_distribution([]) == {"count": 0}


def test_lora_sft_only_merges_the_adapter_into_the_final_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from rrdistill.distill.backends import SamplingParams, TransformersBackend
    from rrdistill.distill.teacher.train import TeacherTrainer

    samples = toy_samples(tmp_path / "samples.jsonl", count=6)
    config = json.loads(write_config(tmp_path, tiny_model_dir, samples).read_text())
    config["lora"] = {
        "enabled": True,
        "r": 4,
        "alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "layers_to_transform": [1],  # the top block only: the backward pass stops there
    }
    config["grpo"]["enabled"] = False
    config["sft"].update(num_train_epochs=2, warmup_ratio=0.0)  # LoRA's B starts at 0: give it steps
    path = tmp_path / "lora.json"
    path.write_text(json.dumps(config))
    summary = TeacherTrainer(load_config(TeacherConfig, path)).run()
    final = tmp_path / "teacher" / "final"
    assert "grpo" not in summary and summary["reward_after_sft"]["greedy"]["count"] == 2
    assert (tmp_path / "teacher" / "sft" / "final-adapter" / "adapter_config.json").exists()
    assert not (final / "adapter_config.json").exists()  # merged: a plain checkpoint
    assert json.loads((final / "rrdistill_teacher.json").read_text())["stages"] == ["sft"]
    backend = TransformersBackend(final)
    base = TransformersBackend(tiny_model_dir)
    trained = dict(backend.model.named_parameters())
    changed = [n for n, p in base.model.named_parameters() if not (p == trained[n]).all()]
    assert changed and all(("q_proj" in n or "v_proj" in n) and ".layers.1." in n for n in changed)
    (result,) = backend.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert result.ok


@pytest.mark.slow
def test_train_teacher_resumes_sft_after_kill_9(tiny_model_dir: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    samples = toy_samples(tmp_path / "samples.jsonl", count=14)
    config = json.loads(write_config(tmp_path, tiny_model_dir, samples).read_text())
    config["sft"].update(num_train_epochs=4, per_device_train_batch_size=2)  # 24 steps, a checkpoint each
    config["grpo"]["enabled"] = False
    path = tmp_path / "resume.json"
    path.write_text(json.dumps(config))
    command = [str(Path(sys.executable).parent / "rrdistill"), "train-teacher", "--config", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sft = tmp_path / "teacher" / "sft"
    deadline = time.monotonic() + 300

    def newest_complete() -> int:  # only save_total_limit (2) checkpoints are kept at a time
        return max(
            (int(p.parent.name.split("-")[1]) for p in sft.glob("checkpoint-*/trainer_state.json")), default=0
        )

    while time.monotonic() < deadline and newest_complete() < 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (sft / "final").exists()
    result = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "teacher" / "training_summary.json").read_text())
    step = int(Path(summary["sft"]["resumed_from"]).name.split("-")[1])
    assert step >= 3 and summary["sft"]["global_steps"] == 24
    assert (tmp_path / "teacher" / "final" / "rrdistill_teacher.json").exists()
