"""A real language model behind the local llama.cpp server: SmolLM2-135M-Instruct labels windows.

The model is fetched once (checksum-pinned, see :mod:`rrdistill.models`) into the user's model
cache; everything else runs here: llama.cpp's OpenAI-compatible server, the one chat client, the
sliding window, parsing and repair. A 135M model follows the answer format only sometimes — the
point is that whatever it writes is parsed, repaired and *counted*, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rrdistill.distill.backends import OpenAIBackend, SamplingParams
from rrdistill.distill.llama_server import LlamaServer, LlamaServerConfig
from rrdistill.distill.students.label import label_requests, read_labels
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
