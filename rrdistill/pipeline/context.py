"""What every pipeline stage gets: the config, the run's layout, data access and a progress hook."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rrdistill.chat import is_url
from rrdistill.pipeline.config import PipelineConfig
from rrdistill.pipeline.layout import RunLayout
from rrdistill.types import Qrels

ProgressHook = Callable[[str], Callable[[int, int], None]]
"""``hook(description)`` → a ``(done, total)`` callback for one progress bar."""


def _no_progress(description: str) -> Callable[[int, int], None]:
    return lambda done, total: None


@dataclass
class PipelineContext:
    config: PipelineConfig
    progress: ProgressHook = _no_progress
    config_dir: Path = field(default_factory=Path.cwd)
    """Relative paths in the config (data, nested configs) are resolved from here."""

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.path(self.config.run_dir))

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.config_dir / path

    @property
    def data(self) -> Path:
        return self.path(self.config.data)

    @property
    def dataset(self) -> str:
        """The in-domain collection's name (its data folder's), written in every in-domain row."""
        return self.data.name

    @cached_property
    def eval_qrels(self) -> Qrels:
        from rrdistill.io import read_beir

        return read_beir(self.data, self.config.eval.split).qrels

    @property
    def train_data(self) -> Path:
        """The BEIR folder training reads: the data without the dev queries in the labelling split."""
        return self.layout.data_view

    @property
    def reference_name(self) -> str:
        return self.config.reference.name

    @property
    def labeller_bundle(self) -> Path:
        """The reference bundle that labels (and is fused with BM25): fp32 when exported."""
        precisions = self.config.export.precisions
        precision = "fp32" if "fp32" in precisions else precisions[0]
        return self.layout.bundle(f"{self.reference_name}-{precision}")

    @property
    def labeller_system(self) -> str:
        """The report row of the system that labelled the students' training queries (from the config)."""
        labels = self.config.labels
        if labels.labeller == "teacher":
            return "teacher"
        name = self.labeller_bundle.name
        if labels.dense is not None:
            from rrdistill.pipeline.dense import ensemble_system

            name = ensemble_system(self)
        return name + ("+bm25" if labels.fusion is not None else "")

    @property
    def teacher_is_trained_here(self) -> bool:
        return self.config.teacher.source == "train"

    @property
    def teacher(self) -> str:
        """The listwise teacher to rerank and label with: the one trained here, a dir or a URL."""
        if self.teacher_is_trained_here:
            return str(self.layout.teacher_checkpoint)
        source = self.config.teacher.source
        return source if is_url(source) else str(self.path(source))

    def teacher_config(self) -> Any:
        from rrdistill.config import load_config
        from rrdistill.distill.teacher.config import TeacherConfig

        return load_config(TeacherConfig, self.path(self.config.teacher.config))

    def config_snapshot(self) -> dict[str, Any]:
        from rrdistill.config import to_dict

        return to_dict(self.config)

    def resume_or_clear(self, name: str, outputs: Sequence[Path], identity: Mapping[str, Any]) -> bool:
        """Whether `outputs` hold partial work of this same job (so resume it); otherwise remove them.

        A stage that crashed half-way is resumed; a stage rerun because its inputs or settings
        changed starts clean, so no output mixes the work of two configurations.
        """
        from rrdistill.stages import content_hash

        payload = {
            key: content_hash(value) if isinstance(value, Path) else value for key, value in identity.items()
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        marker = self.layout.root / ".partial" / f"{name}.sha256"
        if marker.exists() and marker.read_text().strip() == digest:
            return any(p.exists() for p in outputs)
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest + "\n")
        return False
