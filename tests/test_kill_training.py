"""Cross-encoder training killed with SIGKILL at random points: nothing half-written is ever
published, and the rerun produces exactly the checkpoint of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rrdistill.distill.students.trainer import (
    TRAINING_PROVENANCE,
    CrossEncoderTrainConfig,
    config_hash,
    train_cross_encoder,
)

pytest.importorskip("sentence_transformers")

TRAIN = """
import json, sys
from rrdistill.distill.students.trainer import CrossEncoderTrainConfig, train_cross_encoder
train_cross_encoder(CrossEncoderTrainConfig(**json.loads(sys.argv[1])), sys.argv[2])
"""


def _weights(checkpoint: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(checkpoint / "model.safetensors")


def test_training_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = CrossEncoderTrainConfig(
        base_model=str(tiny_checkpoint),
        data=str(data_dir / "scifact"),
        max_queries=16,
        negatives=2,
        negative_pool=5,
        max_length=64,
        batch_size=4,
        epochs=2.0,
        name="tiny",
    )
    clean = train_cross_encoder(config, tmp_path / "clean")
    run_dir = tmp_path / "killed"
    target = run_dir / f"tiny-{config_hash(config)}"
    rng = random.Random(5)
    kills = 0
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-c", TRAIN, json.dumps(asdict(config)), str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:  # until training has begun
            if run_dir.exists() and any(p.name.startswith(f".{target.name}") for p in run_dir.iterdir()):
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
        if not (target / TRAINING_PROVENANCE).exists():
            assert not target.exists()  # a killed run publishes nothing, not even an empty folder
    assert kills >= 1

    resumed = train_cross_encoder(config, run_dir)
    assert resumed.path == target and (target / TRAINING_PROVENANCE).exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # killed runs' staging is gone
    first, second = _weights(clean.path), _weights(resumed.path)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
