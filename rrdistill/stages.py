"""Run a chain of stages in one run folder, skipping the ones whose work is already done.

Each stage declares its inputs (files or folders), its parameters and its outputs. Its *key* is
a hash of the parameters and of the content of its inputs; after a stage succeeds, the key and
the hashes of its outputs are recorded in ``stages.json``. A rerun skips a stage when the key is
unchanged and its outputs are still there with the recorded content, so editing a config or
replacing an upstream artifact reruns exactly the stages it affects; ``from_stage`` forces a
stage and everything after it. A stage interrupted half-way is not recorded, so it runs again
(stages themselves resume their partial output where they can).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrdistill.hashing import sha256_json, sha256_tree
from rrdistill.io import atomic_writer

STATE_FILE = "stages.json"


@dataclass
class Stage:
    name: str
    run: Callable[[], Mapping[str, Any] | None]
    """Does the work; may return a small summary (figures shown in the table and the state file)."""
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    name: str
    status: str
    """``ran``, ``skipped`` (up to date) or ``failed``."""
    seconds: float
    summary: Mapping[str, Any] = field(default_factory=dict)


content_hash = sha256_tree
"""sha256 over a file, or over every file of a folder (relative names and contents)."""


def stage_key(stage: Stage) -> str:
    payload = {
        "params": stage.params,
        "inputs": {str(p): content_hash(Path(p)) for p in stage.inputs},
    }
    return sha256_json(payload)


class StageRunner:
    def __init__(self, run_dir: Path, *, create: bool = True) -> None:
        """`create=False` only reads the recorded state (``--list``): a missing folder stays missing."""
        self.run_dir = Path(run_dir)
        if create:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.run_dir / STATE_FILE
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )

    def _save(self) -> None:
        with atomic_writer(self.state_path) as handle:
            json.dump(self.state, handle, indent=2, default=str)

    def up_to_date(self, stage: Stage) -> bool:
        record = self.state.get(stage.name)
        if not record or record.get("key") != stage_key(stage):
            return False
        return all(content_hash(Path(p)) == record["outputs"].get(str(p)) for p in stage.outputs)

    def run(
        self,
        stages: Sequence[Stage],
        *,
        from_stage: str | None = None,
        on_start: Callable[[Stage], None] | None = None,
    ) -> list[StageResult]:
        names = [s.name for s in stages]
        if from_stage is not None and from_stage not in names:
            raise ValueError(f"unknown stage {from_stage!r}; stages: {', '.join(names)}")
        forced = False
        results = []
        for stage in stages:
            forced = forced or stage.name == from_stage
            if not forced and self.up_to_date(stage):
                record = self.state[stage.name]
                results.append(StageResult(stage.name, "skipped", 0.0, record.get("summary", {})))
                continue
            if on_start is not None:
                on_start(stage)
            self.state.pop(stage.name, None)
            self._save()
            started = time.perf_counter()
            summary = dict(stage.run() or {})
            seconds = time.perf_counter() - started
            missing = [str(p) for p in stage.outputs if not Path(p).exists()]
            if missing:
                raise RuntimeError(f"stage {stage.name!r} finished without writing {', '.join(missing)}")
            self.state[stage.name] = {
                "key": stage_key(stage),
                "outputs": {str(p): content_hash(Path(p)) for p in stage.outputs},
                "seconds": round(seconds, 2),
                "summary": summary,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self._save()
            results.append(StageResult(stage.name, "ran", seconds, summary))
        return results
