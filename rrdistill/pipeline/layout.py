"""Where every artifact of a pipeline run lives, relative to its run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    # the held-out split
    @property
    def data_view(self) -> Path:
        """A BEIR folder of this run: the data with the dev queries moved out of the training split."""
        return self.root / "data"

    @property
    def split_file(self) -> Path:
        """Which queries are dev, train and evaluated (and how the dev split was drawn)."""
        return self.data_view / "split.json"

    @property
    def dev_requests(self) -> Path:
        """BM25 candidates of the dev queries: every tuned value is chosen on them."""
        return self.root / "bm25" / "dev.jsonl"

    @property
    def dev_subset_requests(self) -> Path:
        """The dev queries (and depth) the generative systems rerank (cascade calibration)."""
        return self.root / "bm25" / "dev-subset.jsonl"

    @property
    def fusion_choice(self) -> Path:
        return self.root / "choices" / "fusion.json"

    @property
    def student_choice(self) -> Path:
        """The cross-encoder student's settings and the dev figures they were chosen by."""
        return self.root / "choices" / "student.json"

    # first stage
    @property
    def eval_requests(self) -> Path:
        return self.root / "bm25" / "eval.jsonl"

    @property
    def eval_trec(self) -> Path:
        return self.root / "bm25" / "eval.trec"

    @property
    def subset_requests(self) -> Path:
        """The queries (and depth) the generative systems rerank."""
        return self.root / "bm25" / "eval-subset.jsonl"

    @property
    def label_requests(self) -> Path:
        return self.root / "bm25" / "label.jsonl"

    # teacher
    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def labeller(self) -> Path:
        return self.teacher_dir / "labeller"

    @property
    def samples(self) -> Path:
        return self.teacher_dir / "samples.jsonl"

    @property
    def teacher_run(self) -> Path:
        return self.teacher_dir / "train"

    @property
    def teacher_checkpoint(self) -> Path:
        return self.teacher_run / "final"

    # students and their labels
    @property
    def reference_dir(self) -> Path:
        return self.root / "models" / "reference"

    @property
    def labels(self) -> Path:
        return self.root / "labels" / "train.jsonl"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def bundle(self, name: str) -> Path:
        return self.root / "bundles" / name

    # out-of-domain sets
    def ood_requests(self, name: str) -> Path:
        """The candidates every system reranks on out-of-domain set `name` (BM25-ordered)."""
        return self.root / "bm25" / "ood" / f"{name}.jsonl"

    def ood_trec(self, name: str) -> Path:
        return self.root / "bm25" / "ood" / f"{name}.trec"

    # evaluation and report
    def eval_dir(self, out_of_domain: str | None = None) -> Path:
        """Rows and runs of the in-domain evaluation (``eval/``), or of an out-of-domain set (``eval/<name>/``)."""
        folder = self.root / "eval"
        return folder / out_of_domain if out_of_domain else folder

    def system_file(self, system: str, out_of_domain: str | None = None) -> Path:
        return self.eval_dir(out_of_domain) / f"{system}.json"

    def run_file(self, system: str, suffix: str, out_of_domain: str | None = None) -> Path:
        return self.eval_dir(out_of_domain) / f"{system}{suffix}"

    @property
    def cascade(self) -> Path:
        return self.root / "cascade.json"

    @property
    def bench(self) -> Path:
        return self.root / "bench.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"
