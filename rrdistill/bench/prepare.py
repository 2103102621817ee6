"""Everything the workers load, made once in the parent: data, bundles, and the peers' model files.

- the data: BM25 top-`passages` candidate lists of judged queries of a BEIR split (the same
  selection the export parity check uses), written as request JSONL for the workers;
- bundles: exported with :func:`rrdistill.export.pipeline.export_bundle` when none are given
  (drift accepted and recorded: the int8 quality cost is what the benchmark reports);
- sentence-transformers' ONNX model: made by sentence-transformers itself
  (``CrossEncoder(path, backend="onnx")`` exports with Optimum, ``save_pretrained`` writes
  ``onnx/model.onnx``; ``export_dynamic_quantized_onnx_model`` adds its int8 variant), cached per
  checkpoint fingerprint so later runs load it without exporting again;
- FlashRank's cache layout: FlashRank loads ``<cache_dir>/<model_name>/<model_file>`` with
  ``config.json`` (``pad_token_id``), ``tokenizer.json``, ``tokenizer_config.json``
  (``model_max_length``, ``pad_token``) and ``special_tokens_map.json`` beside it, and only for
  names in its model map (the worker registers ours). We lay out each bundle's own
  ``model.onnx`` that way, so FlashRank runs the very same graph as the runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rrdistill.export import ExportError
from rrdistill.io import atomic_directory, write_requests
from rrdistill.types import Qrels, Request

if TYPE_CHECKING:
    from rrdistill.export.pipeline import ExportConfig

FLASHRANK_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json")
"""What FlashRank reads besides the model and tokenizer.json (from the source checkpoint)."""


@dataclass(frozen=True)
class BenchData:
    requests: list[Request]
    qrels: Qrels
    path: Path
    """The request JSONL the workers read."""
    label: str


def bench_data(
    data: str | os.PathLike[str], split: str, queries: int, passages: int, seed: int, work_dir: Path
) -> BenchData:
    """BM25 top-`passages` for `queries` judged queries of `split` (all of them when fewer)."""
    from rrdistill.export.validate import ParityConfig, parity_data

    requests, qrels = parity_data(
        ParityConfig(data=Path(data), split=split, queries=queries, passages=passages, seed=seed)
    )
    path = work_dir / "requests.jsonl"
    write_requests(path, requests)
    label = f"{Path(data).name}/{split}: {len(requests)} queries x BM25 top-{passages}"
    return BenchData(requests, qrels, path, label)


def checkpoint_key(checkpoint: str | os.PathLike[str]) -> str:
    """A short hash of the checkpoint's config and weights: cached conversions follow the model."""
    from rrdistill.export.onnx import checkpoint_fingerprint

    fingerprint = checkpoint_fingerprint(checkpoint)
    canonical = json.dumps(
        {k: fingerprint[k] for k in ("config_sha256", "weights_sha256")}, sort_keys=True
    ).encode()
    return hashlib.sha256(canonical).hexdigest()[:12]


def export_bundles(
    checkpoint: Path,
    work_dir: Path,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Bundles of `checkpoint` under ``work_dir/bundles/<key>-<precision>``, exported once.

    Drift beyond the export's parity thresholds is accepted (and recorded in the manifest): the
    benchmark measures what quantization costs, so it must not refuse to measure it."""
    from rrdistill.export.pipeline import ExportConfig

    key = checkpoint_key(checkpoint)
    return {
        precision: _export_once(
            checkpoint,
            work_dir / "bundles" / f"{key}-{precision}",
            ExportConfig(precision=precision, overwrite=True, accept_drift=True),
            progress,
            f"exporting a {precision} bundle of {checkpoint.name}",
        )
        for precision in precisions
    }


def _export_once(
    checkpoint: Path,
    target: Path,
    config: ExportConfig,
    progress: Callable[[str], None] | None,
    message: str,
) -> Path:
    """`target`, exported from `checkpoint` with `config` unless a bundle is already there."""
    from rrdistill.export.pipeline import export_bundle
    from rrdistill.runtime.bundle import BundleError, load_manifest

    try:
        load_manifest(target)
    except BundleError:
        if progress:
            progress(message)
        export_bundle(checkpoint, target, config)
    return target


PEER_GRAPHS = {
    "fp32": "the unfused export (what sentence-transformers' ONNX backend and FlashRank run)",
    "int8": "Optimum's dynamic preset for this CPU on the unfused export (sentence-transformers' "
    "export_dynamic_quantized_onnx_model, FlashRank's quantized models)",
}
"""The graph the peers ship, per precision: what FlashRank runs in the bench."""


def bundle_graph(bundle: Path) -> tuple[str | None, str | None]:
    """(optimisation level, int8 graph) of `bundle` as its export recorded them (None: unfused / not int8)."""
    from rrdistill.runtime.bundle import load_manifest

    export = load_manifest(bundle, verify_files=False).extra.get("export", {})
    quantization = export.get("quantization")
    return export.get("optimize"), quantization.get("graph", "plain") if quantization else None


def is_peer_graph(bundle: Path) -> bool:
    """Whether `bundle` holds the peers' graph of its precision (unfused; int8 with the preset)."""
    level, int8_graph = bundle_graph(bundle)
    return level is None and int8_graph in (None, "plain")


def peer_bundle(
    checkpoint: Path,
    work_dir: Path,
    precision: str,
    max_length: int,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The peers' graph of `precision` (:data:`PEER_GRAPHS`), as a bundle exported once at the
    `max_length` of the bundles it is compared with. FlashRank runs it, and so does the runtime as
    ``rrdistill-<precision>-plain``: the runtime's own gain and its graph's gain are measured apart."""
    from rrdistill.export.pipeline import ExportConfig

    graph = {"int8_graph": "plain"} if precision == "int8" else {}
    return _export_once(
        checkpoint,
        work_dir / "bundles" / f"{checkpoint_key(checkpoint)}-{precision}-plain-{max_length}",
        ExportConfig(precision=precision, max_length=max_length, overwrite=True, accept_drift=True, **graph),
        progress,
        f"exporting the peers' {precision} graph of {checkpoint.name}",
    )


def st_onnx_model(checkpoint: Path, work_dir: Path, int8_isa: str | None = None) -> tuple[Path, str]:
    """sentence-transformers' own ONNX export of `checkpoint` (and, with `int8_isa`, its int8
    dynamic quantization); returns the model folder and the ``file_name`` to load."""
    from rrdistill.extras import require

    st = require("sentence_transformers", "bench", "the sentence-transformers ONNX peer")
    folder = work_dir / "st-onnx" / checkpoint_key(checkpoint)
    if not (folder / "onnx" / "model.onnx").is_file():
        model = st.CrossEncoder(
            str(checkpoint), backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"}
        )
        with atomic_directory(folder, overwrite=True) as staging:
            model.save_pretrained(str(staging))
    if int8_isa is None:
        return folder, "onnx/model.onnx"
    from rrdistill.export.quantize import quantization_config

    # sentence-transformers names the file after the preset's weight type (avx2: quint8): named here
    suffix = f"{quantization_config(int8_isa, per_channel=True).weights_dtype.name.lower()}_{int8_isa}"
    file_name = f"onnx/model_{suffix}.onnx"
    if not (folder / file_name).is_file():
        model = st.CrossEncoder(
            str(folder), backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"}
        )
        st.export_dynamic_quantized_onnx_model(model, int8_isa, str(folder), file_suffix=suffix)
    if not (folder / file_name).is_file():
        raise ExportError(f"sentence-transformers did not write {folder / file_name}")
    return folder, file_name


def flashrank_cache(bundle: Path, checkpoint: Path, cache_dir: Path, model_name: str) -> Path:
    """Lay `bundle`'s model and tokenizer out as FlashRank's cache expects; returns the model folder.

    Raises :class:`ExportError` naming the file FlashRank needs when the checkpoint lacks it.
    """
    from rrdistill.runtime.bundle import load_manifest

    manifest = load_manifest(bundle)
    missing = [name for name in FLASHRANK_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise ExportError(
            f"FlashRank cannot load this model: its tokenizer setup reads {', '.join(missing)}, "
            f"which {checkpoint} does not have"
        )
    target = cache_dir / model_name
    with atomic_directory(target, overwrite=True) as staging:
        shutil.copyfile(bundle / manifest.model.file, staging / "model.onnx")
        shutil.copyfile(bundle / manifest.tokenizer_file, staging / "tokenizer.json")
        for name in FLASHRANK_FILES:
            shutil.copyfile(checkpoint / name, staging / name)
    return target
