"""The pipeline's settings: one dataclass per stage, loaded from YAML (``configs/pipeline/``).

Every figure in the report traces back to a field here; the file is hashed into each stage's
key, so editing a section reruns exactly the stages that read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalSettings:
    split: str = "test"
    top_k: int = 100
    """BM25 candidates per query; cross-encoders rerank all of them."""
    max_queries: int | None = None
    """The first N judged queries of the split (None: all)."""
    generative_queries: int = 30
    """Listwise models (teacher, listwise student) rerank only the first N queries: they generate."""
    generative_depth: int = 20
    """…and only each query's top-N candidates, with the window below."""
    window: int = 10
    step: int = 5
    precisions: list[str] = field(default_factory=list)
    """Cross-encoder precisions the evaluation scores (every bundle of them, in and out of domain);
    empty: every exported precision. The labeller's bundle is scored whatever this says."""


@dataclass
class DevSettings:
    """Held-out queries carved from the labelling split: every tuned value is chosen on them.

    Test queries are scored once and never choose anything. The dev queries are taken out of the
    labelling split before anything trains on it (reference, teacher synthesis, labels, students),
    so a value chosen on them is chosen on queries no model has seen.
    """

    queries: int = 60
    """How many judged queries of ``labels.split`` form the dev split."""
    salt: str = "rrdistill-dev"
    """The dev split is the first `queries` judged queries ordered by sha256(salt:qid): stable
    under reordering of the files, and another salt draws another split."""
    top_k: int = 100
    """BM25 candidates per dev query the cross-encoders rerank (fusion weight, int8 parity)."""
    generative_queries: int = 20
    """Dev queries the listwise student reranks to calibrate the cascade (it generates: fewer)."""


@dataclass
class SynthesisSettings:
    labeller: str = "tiny"
    """Who writes the training lists: ``tiny`` (a random model built from the teacher config's
    ``model.tiny``: unit tests), a GGUF model (registry name or file, served by llama.cpp for the
    stage), or an OpenAI-compatible URL (with `model`)."""
    model: str | None = None
    """Model name the URL labeller serves."""
    context: int = 2048
    """llama.cpp: context tokens per concurrent request (prompt + answer)."""
    parallel: int = 2
    """llama.cpp: requests decoded concurrently (continuous batching)."""
    max_queries: int = 96
    list_size: int = 10
    alpha: float = 0.4
    temperature: float = 1.0
    max_new_tokens: int = 64
    max_passage_tokens: int = 16
    require_reasoning: bool = False
    """An untrained tiny labeller writes no ``<think>`` block; a real one should (set true)."""
    seed: int = 0


@dataclass
class TeacherSettings:
    source: str = "train"
    """``train``: synthesize and train the listwise teacher here (SFT → GRPO) from `config`;
    otherwise a trained teacher to use as is: checkpoint directory or OpenAI-compatible URL."""
    config: str = "configs/teacher/tiny-cpu.yaml"
    model: str | None = None
    """Model name the server serves (a URL teacher)."""
    max_new_tokens: int = 64
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)


@dataclass
class ReferenceSettings:
    """The best ranker available offline: a cross-encoder fine-tuned on the qrels (the fixture)."""

    base_model: str | None = None
    """HF encoder folder; None: the packaged all-MiniLM-L6-v2."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """CrossEncoderTrainConfig fields (epochs, max_length, …)."""
    name: str = "reference"
    """System name of its bundles and report rows (``<name>-fp32`` …)."""


@dataclass
class LabelSettings:
    labeller: str = "reference"
    """Who labels the students' training queries: ``reference`` (the offline cross-encoder) or
    ``teacher`` (the listwise teacher through the sliding window)."""
    split: str = "train"
    top_k: int = 30
    max_queries: int | None = None
    fusion: float | None = 0.5
    """``reference`` labeller: rank by ``(1−w)·z(BM25) + w·z(cross-encoder)`` with this w (None:
    the cross-encoder alone). A cross-encoder trained for minutes on CPU ranks worse than BM25 on
    SciFact; fused with it, it ranks better than either (see the report's ``+bm25`` row). Used as
    is when `fusion_grid` is empty (recorded as chosen on ``config``)."""
    fusion_grid: list[float] = field(default_factory=list)
    """Candidate weights: the one with the best nDCG@10 on the dev queries is used (ties: the
    first listed). Empty: `fusion` as given."""
    dense: str | None = None
    """``reference`` labeller: a zero-shot bi-encoder mixed into the reference before fusion,
    ``a·z(reference) + (1−a)·z(cosine)``: ``all-minilm-l6-v2`` (the packaged model) or a
    sentence-transformers folder. A cross-encoder trained on the qrels knows what they know; a
    model pretrained on a billion pairs knows something else, so the mix is a teacher stronger than
    the labels (the condition for a student to beat its qrels baseline). None: the reference alone."""
    dense_max_length: int = 256
    """Tokens per text the bi-encoder reads."""
    dense_grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    """Candidate reference shares `a`: the best nDCG@10 of the mix alone on the dev queries wins
    (ties: the larger), then `fusion_grid` is searched on the mix."""

    def __post_init__(self) -> None:
        if self.dense is not None and self.labeller != "reference":
            raise ValueError(
                "labels.dense mixes a bi-encoder into the reference labeller: set labeller: reference"
            )
        if any(not 0.0 <= a <= 1.0 for a in self.dense_grid) or not self.dense_grid:
            raise ValueError(f"labels.dense_grid: weights in [0, 1], got {self.dense_grid}")


@dataclass
class CrossEncoderStudentSettings:
    enabled: bool = True
    layers: int | None = 4
    """Keep N transformer layers of the initial model (the first, the last, evenly spaced between):
    a faster student. Fewer than 4 of MiniLM's 6 did not learn in a CPU budget (see ``kept_layers``)."""
    init: str = "reference"
    """``reference``: start from `layers` of the reference cross-encoder's layers and its trained
    head (as DistilBERT starts from its teacher's layers); ``base``: from the reference's base
    encoder with a random head. The supervised baseline starts from the same weights."""
    loss: str = "listmle"
    overrides: dict[str, Any] = field(default_factory=dict)
    """Other CrossEncoderStudentConfig fields."""
    baseline: bool = True
    """Also train the same architecture on the qrels alone (the supervised baseline)."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """Settings to choose from on the dev queries, each a dict of ``layers`` and/or
    CrossEncoderStudentConfig fields (e.g. ``{layers: 3, learning_rate: 3.0e-4}``) over `layers`
    and `overrides`. Every candidate is distilled, reranks the dev queries' BM25 top-k, and the
    best nDCG@10 wins (ties: the first listed); the supervised baseline uses the winner's settings.
    Empty: `layers` and `overrides` as given, with `chosen_on` as their provenance."""
    chosen_on: str = "config"
    """Where `layers` and the learning rate came from when no `candidates` are given, as the
    report states it (e.g. ``fixed (prior sweep)``). Never ``test``: the pipeline refuses a value
    chosen on evaluated queries."""
    chosen_note: str = ""
    """One sentence on how they were chosen (the sweep, its queries), quoted in the report."""


@dataclass
class BiEncoderStudentSettings:
    """A sentence-embedding student: starts from a pretrained bi-encoder, learns the labeller's scores.

    The student study's winner out of domain: a cross-encoder student starts from the qrels-trained
    reference and never sees what a pretrained embedding model knows; this one starts from it
    (``DistillKLDivLoss`` on the labels' scores, so the labels must come from a scoring labeller).
    """

    enabled: bool = False
    base_model: str | None = None
    """A sentence-transformers folder; None: the packaged all-MiniLM-L6-v2 (the ``dev`` extra)."""
    layers: int | None = None
    """Keep N of its blocks (None: all)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Other BiEncoderStudentConfig fields (max_length, list_size, epochs, learning_rate, max_queries…);
    the baseline trains with the same ones."""
    baseline: bool = True
    """Also train the same model on the qrels alone (MNRL with BM25 hard negatives)."""
    chosen_on: str = "config"
    """Where `layers` and the learning rate came from (never the evaluated split)."""
    chosen_note: str = ""


@dataclass
class ListwiseStudentSettings:
    enabled: bool = True
    config: str = "configs/students/listwise-tiny.yaml"
    max_queries: int = 32
    top_k: int = 20
    window: int = 10
    step: int = 5
    rationale: bool = True
    """Give windows without teacher reasoning an evidence rationale (a scoring labeller), so the
    reasoning mode has something true to learn; labelled as such in the samples."""
    precisions: list[str] = field(default_factory=lambda: ["fp32"])


@dataclass
class ExportSettings:
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    """Cross-encoder bundles to export and evaluate."""
    parity_queries: int = 10
    parity_passages: int = 30
    accept_drift: bool = False
    """Write bundles whose parity misses the thresholds (recorded in the report either way)."""


@dataclass
class CascadeSettings:
    enabled: bool = True
    tolerance: float = 0.005
    """Pick the cheapest escalation share within this much nDCG@10 of the best."""


@dataclass
class BenchSettings:
    enabled: bool = True
    queries: int = 8
    repeats: int = 3
    warmup: int = 2
    import_repeats: int = 3
    """Fresh interpreters timed per system for its import cost (sentence-transformers: ~30 s each here)."""
    systems: list[str] = field(default_factory=list)
    """Empty: every system the bench knows that is installed."""


@dataclass
class OutOfDomainSettings:
    """A collection from another domain, only ever judged: no stage trains or tunes on it.

    Every cross-encoder bundle the in-domain evaluation scores reranks its candidates too, and
    its ``+bm25`` rows fuse with the weight chosen on the in-domain dev queries, so the rows
    measure how what was learned (and tuned) on one domain carries over to another.
    """

    name: str
    """Its rows' ``dataset`` and its folder under the run's ``eval/``."""
    data: str
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): BM25's top-`top_k` of
    its corpus; or a RankGPT folder (data.json, e.g. NovelEval): each query's given candidates
    (the first `top_k`), ordered by BM25, judged by its ``qrels/<split>.tsv`` or ``qrels.txt``."""
    split: str = "test"
    top_k: int = 100
    max_queries: int | None = None
    """The first N judged queries (None: all)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ValueError(f"out_of_domain name {self.name!r}: letters, digits, '.', '_' or '-' only")


@dataclass
class PipelineConfig:
    run_dir: str = "runs/demo"
    data: str = "data/scifact"
    threads: int | None = None
    """onnxruntime threads for every runtime measurement (None: all cores)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    cross_encoder: CrossEncoderStudentSettings = field(default_factory=CrossEncoderStudentSettings)
    bi_encoder: BiEncoderStudentSettings = field(default_factory=BiEncoderStudentSettings)
    listwise: ListwiseStudentSettings = field(default_factory=ListwiseStudentSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    cascade: CascadeSettings = field(default_factory=CascadeSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    out_of_domain: list[OutOfDomainSettings] = field(default_factory=list)
    """Collections judged after the in-domain evaluation (stages ``retrieve-ood``, ``evaluate-ood``);
    none by default. A section of its own, so adding one reruns no in-domain stage."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.out_of_domain]
        if len(set(names)) != len(names):
            raise ValueError(f"out_of_domain names must be unique, got {names}")
        if self.bi_encoder.enabled and self.labels.labeller != "reference":
            raise ValueError("bi_encoder students learn the labels' scores: set labels.labeller: reference")
        unexported = sorted(set(self.eval.precisions) - set(self.export.precisions))
        if unexported:
            raise ValueError(
                f"eval.precisions {unexported} are not exported (export.precisions: {self.export.precisions})"
            )
