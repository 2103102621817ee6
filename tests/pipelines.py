"""A small pipeline context for the stage tests: a few SciFact queries, shallow lists."""

from __future__ import annotations

from pathlib import Path

from rrdistill.pipeline import PipelineConfig, PipelineContext
from rrdistill.pipeline.config import DevSettings, EvalSettings, LabelSettings


def small_context(tmp_path: Path, data_dir: Path, **sections: object) -> PipelineContext:
    """6 evaluated and 12 dev SciFact queries; `sections` override or add config sections."""
    config = PipelineConfig(
        run_dir=str(tmp_path / "run"),
        data=str(data_dir / "scifact"),
        eval=EvalSettings(max_queries=6, top_k=20, generative_queries=3, generative_depth=10),
        dev=DevSettings(queries=12, top_k=10, generative_queries=4),
        labels=LabelSettings(top_k=5, max_queries=None),
        **sections,  # type: ignore[arg-type]
    )
    return PipelineContext(config)
