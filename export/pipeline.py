"""``export_bundle``: checkpoint → ONNX (→ optimised → fp16/int8) (→ TensorRT) → validated bundle.

The bundle is assembled in a hidden staging folder beside its destination and renamed into place
only once it is complete and its parity passed (or drift was explicitly accepted): a failed or
refused export leaves nothing behind, and readers never see half a bundle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrdistill import __version__
from rrdistill.checkpoint_names import TRAINING_RECORD
from rrdistill.export import ExportError
from rrdistill.export.bi_encoder import TASK as BI_ENCODER_TASK
from rrdistill.export.bi_encoder import embedding_source_scores, read_sentence_transformer
from rrdistill.export.onnx import (
    OPTIMIZATION_LEVELS,
    TRT_COMPATIBLE_LEVELS,
    checkpoint_fingerprint,
    default_max_length,
    export_onnx,
    fused_operators,
    load_cross_encoder_config,
    load_model_config,
    optimize_onnx,
)
from rrdistill.export.quantize import INT8_GRAPHS
from rrdistill.export.validate import (
    DEFAULT_THRESHOLDS,
    ParityConfig,
    ParityReport,
    ParityThresholds,
    compare,
    measure_parity,
    parity_data,
    source_scores,
    violations,
)
from rrdistill.extras import package_versions, require
from rrdistill.io import atomic_directory
from rrdistill.runtime.bundle import (
    PRECISIONS,
    InputSpec,
    Manifest,
    ModelSpec,
    ScoreSpec,
    load_manifest,
    write_manifest,
)

TRAINING_PROVENANCE = TRAINING_RECORD
"""Written next to a checkpoint by rrdistill's trainers; copied into the bundle's provenance."""
PASSAGE_TEMPLATE = "{title} {text}"
LIBRARIES = ("optimum", "optimum-onnx", "onnxruntime", "onnx", "transformers", "tokenizers", "torch")


class ParityError(ExportError):
    """The exported model drifted beyond the thresholds; nothing was written."""

    def __init__(self, report: ParityReport, found: list[str], thresholds: ParityThresholds):
        self.report, self.violations, self.thresholds = report, found, thresholds
        super().__init__(
            "parity check failed: " + "; ".join(found) + " — no bundle written "
            "(pass --accept-drift to write it anyway, recorded in its manifest, or loosen the thresholds)"
        )


@dataclass
class ExportConfig:
    precision: str = "fp32"
    optimize: str | None = None
    """Optimum level O1..O4; fp16 defaults to O4 (O3 fusions + fp16), or to plain fp16 for TensorRT."""
    trt: bool = False
    max_length: int | None = None
    """Tokens per (query, passage) pair; default: the model's positions, at most 512 and at most the
    length the checkpoint's tokenizer declares (a CrossEncoder's training length)."""
    accept_drift: bool = False
    per_channel: bool = True
    """int8: one scale per output channel of each weight matrix (see the README for the measurement)."""
    isa: str | None = None
    """int8: the instruction set to tune for (default: this CPU's, see ``quantize.detect_isa``)."""
    int8_graph: str = "fused"
    """int8: ``fused`` quantizes after onnxruntime's transformer fusions (O2 unless --optimize says
    O3): QAttention, fused layer norms, s8 weights; ``plain`` quantizes the export as it is with
    Optimum's preset for the ISA (the graph the peers ship). See ``export/quantize.py``."""
    thresholds: ParityThresholds | None = None
    """Default: :data:`~rrdistill.export.validate.DEFAULT_THRESHOLDS` for the precision."""
    parity: ParityConfig = field(default_factory=ParityConfig)
    providers: list[str] | None = None
    """onnxruntime providers to validate on (default: the runtime's own choice)."""
    opset: int | None = None
    overwrite: bool = False

    def level(self) -> str | None:
        if self.optimize is None and self.precision == "fp16" and not self.trt:
            return "O4"
        if self.optimize is None and self.precision == "int8" and self.int8_graph == "fused":
            return "O2"
        return self.optimize

    def check(self) -> None:
        """Refuse impossible combinations before any work is done."""
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        level = self.level()
        if level is not None and level not in OPTIMIZATION_LEVELS:
            raise ExportError(f"optimisation level {level!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}")
        if level == "O4" and self.precision != "fp16":
            raise ExportError("O4 is mixed precision fp16: use --precision fp16 (or O1..O3 for fp32/int8)")
        if self.int8_graph not in INT8_GRAPHS:
            raise ExportError(f"int8 graph {self.int8_graph!r} is not one of {', '.join(INT8_GRAPHS)}")
        if self.precision == "int8" and self.int8_graph == "fused" and level not in ("O2", "O3"):
            raise ExportError(
                f"the fused int8 graph quantizes after the transformer fusions of O2/O3, not {level}; "
                "use --int8-graph plain to quantize an O1 or unoptimised graph"
            )
        if self.max_length is not None and self.max_length < 8:
            raise ExportError(f"max_length {self.max_length} is too small")
        if self.trt:
            if self.precision == "int8":
                raise ExportError(
                    "TensorRT int8 needs a statically calibrated Q/DQ graph; the int8 export here is "
                    "onnxruntime's dynamic quantization (CPU). Use --trt with fp16 or fp32"
                )
            if level not in TRT_COMPATIBLE_LEVELS:
                raise ExportError(
                    f"--optimize {level} fuses into onnxruntime-only operators that TensorRT cannot parse; "
                    "use no --optimize or O1 with --trt (TensorRT fuses the graph itself)"
                )
            from rrdistill.export.tensorrt import require_tensorrt

            require_tensorrt()


@dataclass
class ExportResult:
    bundle: Path
    manifest: Manifest
    parity: ParityReport
    violations: list[str]
    thresholds: ParityThresholds
    timings: dict[str, float]

    @property
    def size_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest.files.values())


def provenance(checkpoint: Path, *, extra_libraries: tuple[str, ...] = ()) -> dict[str, Any]:
    """Where the bundle came from: the source checkpoint, libraries, time, and its training run."""
    training_file = checkpoint / TRAINING_PROVENANCE
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else None
    return {
        "source": {"path": str(checkpoint.resolve()), **checkpoint_fingerprint(checkpoint)},
        "training": training,
        "libraries": package_versions((*LIBRARIES, *extra_libraries)),
        "rrdistill": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


class _Steps:
    """Times each step and reports it to the caller's progress callback."""

    def __init__(self, progress: Callable[[str], None] | None):
        self.progress = progress or (lambda message: None)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, message: str) -> Iterator[None]:
        self.progress(message)
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 2)


def export_bundle(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ExportConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a cross-encoder checkpoint, or a sentence-transformers folder (a ``bi-encoder`` bundle:
    its transformer, pooled and scored by the runtime as the manifest's ``embedding`` says), to a
    validated bundle at `out_dir`.

    Raises :class:`ParityError` (nothing written) when parity misses the thresholds and drift
    was not accepted, :class:`~rrdistill.export.ExportError` for anything else that cannot work.
    """
    config = config or ExportConfig()
    config.check()
    source = Path(checkpoint)
    encoder = read_sentence_transformer(source)
    if encoder is not None and config.trt:
        raise ExportError(
            f"{source}: TensorRT engines are built for cross-encoders; export a bi-encoder without --trt"
        )
    model_dir = source if encoder is None else encoder.transformer
    model_config = load_cross_encoder_config(source) if encoder is None else load_model_config(model_dir)
    transformers = require("transformers", "export", "ONNX export")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ExportError(f"{source}: the runtime needs a fast (Rust) tokenizer, and this one is not")
    cap = (encoder.max_seq_length if encoder is not None else None) or 512
    max_length = config.max_length or default_max_length(model_config, tokenizer, cap=cap)
    # beyond LIBRARIES: what built the engine, or what scored the bi-encoder's parity reference
    libraries = ("tensorrt",) if config.trt else ("sentence-transformers",) if encoder is not None else ()
    thresholds = config.thresholds or DEFAULT_THRESHOLDS[config.precision]
    level = config.level()
    steps = _Steps(progress)
    details: dict[str, Any] = {"optimize": level, "opset": config.opset}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="rrdistill-export-") as work_dir,
        atomic_directory(out_dir, overwrite=config.overwrite) as staging,
    ):
        work = Path(work_dir)
        with steps("onnx", f"exporting {source.name} to ONNX with Optimum"):
            task = "text-classification" if encoder is None else BI_ENCODER_TASK
            model = export_onnx(model_dir, work / "onnx", opset=config.opset, task=task)
        if level is not None or config.precision == "fp16":
            fp16 = config.precision == "fp16"
            with steps(
                "optimize", f"optimising ({level or 'O1 rules'}{', fp16' if fp16 else ''}) with ORTOptimizer"
            ):
                model = optimize_onnx(model, model_config, work / "optimized", level, fp16=fp16)
            details["fused_operators"] = fused_operators(model)
        if config.precision == "int8":
            from rrdistill.export.quantize import quantize_dynamic_int8, quantize_fused_int8

            quantize = quantize_fused_int8 if config.int8_graph == "fused" else quantize_dynamic_int8
            with steps("quantize", f"quantizing the {config.int8_graph} graph to int8 (dynamic)"):
                model, settings = quantize(
                    model, work / "quantized", isa=config.isa, per_channel=config.per_channel
                )
            details["quantization"] = settings.to_json()
        shutil.copyfile(model.path, staging / "model.onnx")
        tokenizer.save_pretrained(work / "tokenizer")
        shutil.copyfile(work / "tokenizer" / "tokenizer.json", staging / "tokenizer.json")
        spec = ModelSpec(file="model.onnx", inputs=model.inputs, output=model.output)
        engine: dict[str, Any] | None = None
        if config.trt:
            from rrdistill.export.tensorrt import ShapeProfile, build_engine

            with steps("tensorrt", "building the TensorRT engine"):
                engine = build_engine(
                    staging / "model.onnx",
                    staging / "model.plan",
                    model.inputs,
                    model.output,
                    ShapeProfile(max_length),
                )
        manifest = Manifest(
            kind="cross-encoder" if encoder is None else "bi-encoder",
            precision=config.precision,
            model=spec,
            inputs=InputSpec(
                max_length=max_length,
                passage_template=PASSAGE_TEMPLATE,
                truncation="only_second" if encoder is None else "end",
                pad_token_id=tokenizer.pad_token_id,
            ),
            score=ScoreSpec(logit_index=0, activation="identity"),
            provenance=provenance(source, extra_libraries=libraries),
            extra={"export": details},
            embedding=None if encoder is None else encoder.embedding,
        )
        if engine is not None:
            with_engine(manifest, engine)
        write_manifest(staging, manifest)  # provisional: the runtime verifies what it loads
        with steps("parity", "measuring parity with the source model"):
            reranker = _serving_reranker(staging, config)
            report = measure_parity(
                source,
                lambda groups: reranker.score(groups, config.parity.batch_size),
                config.parity,
                max_length=max_length,
                passage_template=PASSAGE_TEMPLATE,
                reference_scores=source_scores if encoder is None else embedding_source_scores,
            )
        found = violations(report, thresholds)
        if found and not config.accept_drift:
            raise ParityError(report, found, thresholds)
        manifest.providers_validated = list(reranker.providers)
        manifest.parity = {
            **report.to_json(),
            "thresholds": thresholds.to_json(),
            "passed": not found,
            "violations": found,
            "drift_accepted": bool(found) and config.accept_drift,
        }
        if engine is not None:
            with steps("parity_onnx", "comparing the engine with the ONNX it was built from"):
                manifest.parity["engine_vs_onnx"] = engine_vs_onnx(staging, reranker, config.parity)
        steps.timings["total"] = round(time.perf_counter() - started, 2)
        details["timings"] = steps.timings
        write_manifest(staging, manifest)
        manifest = load_manifest(staging)
    return ExportResult(Path(out_dir), manifest, report, found, thresholds, steps.timings)


def _serving_reranker(bundle: Path, config: ExportConfig) -> Any:
    """The runtime reranker over the staged bundle, as it will serve: onnxruntime or the engine."""
    from rrdistill.runtime import Reranker

    return Reranker.load(bundle, providers=None if config.trt else config.providers)


def with_engine(manifest: Manifest, engine: dict[str, Any]) -> Manifest:
    """Point `manifest` at the TensorRT engine (``model.plan``, built from ``model.onnx``).

    The engine contract goes where the runtime's runner reads it (``extra["tensorrt"]``:
    I/O names and dtypes, profile); the TensorRT version and GPU also go into the provenance,
    which the runner quotes when an engine does not load on another version or GPU.
    """
    from rrdistill.runtime.tensorrt import CONTRACT_KEY

    manifest.model = ModelSpec(
        file="model.plan",
        engine="tensorrt",
        inputs=list(manifest.model.inputs),
        output=manifest.model.output,
        onnx_file=manifest.model.file,
    )
    manifest.extra[CONTRACT_KEY] = engine
    manifest.provenance["tensorrt"] = {"version": engine["version"], "device": engine["device"]}
    return manifest


def engine_vs_onnx(bundle: Path, engine_reranker: Any, parity: ParityConfig) -> dict[str, Any]:
    """Parity of the engine with its source ONNX on onnxruntime (CPU), on the parity data.

    Kept beside the parity with the torch source: it separates what TensorRT changed (kernel
    choice, fp16 accumulation) from what the ONNX export already changed.
    """
    import dataclasses

    import onnxruntime as ort

    from rrdistill.runtime.reranker import CrossEncoderReranker

    manifest = engine_reranker.manifest
    onnx_manifest = dataclasses.replace(
        manifest,
        model=dataclasses.replace(manifest.model, file=manifest.model.onnx_file, engine="onnxruntime"),
    )
    session = ort.InferenceSession(str(bundle / manifest.model.onnx_file), providers=["CPUExecutionProvider"])
    onnx_reranker = CrossEncoderReranker(bundle, onnx_manifest, session, engine_reranker.tokenizer)
    requests, qrels = parity_data(parity)
    groups = [(r.query.text, [c.passage for c in r.candidates]) for r in requests]
    batch = parity.batch_size
    report = compare(
        requests, qrels, onnx_reranker.score(groups, batch), engine_reranker.score(groups, batch)
    )
    keys = ("max_abs_diff", "mean_abs_diff", "kendall_tau_mean", "kendall_tau_min", "top1_agreement", "pairs")
    return {key: report.to_json()[key] for key in keys}
