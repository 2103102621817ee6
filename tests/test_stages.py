"""The stage runner: content-hash skipping, invalidation downstream, --from, interrupted stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrdistill.stages import Stage, StageRunner


def chain(tmp: Path, calls: list[str], params: dict | None = None, fail_in: str | None = None) -> list[Stage]:
    source, middle, final = tmp / "source.txt", tmp / "middle.txt", tmp / "out"

    def make_middle() -> dict:
        calls.append("middle")
        if fail_in == "middle":
            raise RuntimeError("crash")
        middle.write_text(source.read_text().upper() + str((params or {}).get("suffix", "")))
        return {"chars": len(middle.read_text())}

    def make_final() -> None:
        calls.append("final")
        final.mkdir(exist_ok=True)
        (final / "a.txt").write_text(middle.read_text()[::-1])

    return [
        Stage("middle", make_middle, inputs=[source], outputs=[middle], params=params or {}),
        Stage("final", make_final, inputs=[middle], outputs=[final]),
    ]


def test_skips_finished_work_and_reruns_what_changed(tmp_path: Path) -> None:
    (tmp_path / "source.txt").write_text("abc")
    calls: list[str] = []
    runner = StageRunner(tmp_path / "run")
    assert [r.status for r in runner.run(chain(tmp_path, calls))] == ["ran", "ran"]
    results = StageRunner(tmp_path / "run").run(chain(tmp_path, calls))
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert results[0].summary == {"chars": 3}
    assert calls == ["middle", "final"]

    (tmp_path / "source.txt").write_text("abd")  # an input changed: both stages are stale
    StageRunner(tmp_path / "run").run(chain(tmp_path, calls))
    assert calls[2:] == ["middle", "final"]

    StageRunner(tmp_path / "run").run(chain(tmp_path, calls, params={"suffix": "!"}))  # a parameter changed
    assert calls[4:] == ["middle", "final"]

    (tmp_path / "out" / "a.txt").write_text("tampered")  # an output changed: only its stage reruns
    StageRunner(tmp_path / "run").run(chain(tmp_path, calls, params={"suffix": "!"}))
    assert calls[6:] == ["final"]

    StageRunner(tmp_path / "run").run(chain(tmp_path, calls, params={"suffix": "!"}), from_stage="final")
    assert calls[7:] == ["final"]


def test_an_interrupted_stage_runs_again(tmp_path: Path) -> None:
    (tmp_path / "source.txt").write_text("abc")
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="crash"):
        StageRunner(tmp_path / "run").run(chain(tmp_path, calls, fail_in="middle"))
    results = StageRunner(tmp_path / "run").run(chain(tmp_path, calls))
    assert [r.status for r in results] == ["ran", "ran"]


def test_unknown_from_stage_and_missing_outputs(tmp_path: Path) -> None:
    runner = StageRunner(tmp_path)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        runner.run([Stage("a", lambda: None)], from_stage="nope")
    with pytest.raises(RuntimeError, match="without writing"):
        runner.run([Stage("a", lambda: None, outputs=[tmp_path / "never"])])
