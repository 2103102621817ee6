"""The torch-free runtime: parity with transformers, truncation accounting, batching, threads, bundles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rrdistill.io import read_rankgpt
from rrdistill.runtime import BundleError, Reranker
from rrdistill.types import Passage


@pytest.fixture(scope="module")
def reranker(tiny_bundle: Path) -> Reranker:
    return Reranker.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def noveleval(data_dir: Path):
    return read_rankgpt(data_dir / "noveleval" / "data.json")


def torch_scores(checkpoint: Path, query: str, texts: list[str], max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = tokenizer(
        [query] * len(texts),
        texts,
        padding=True,
        truncation="only_second",
        max_length=max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy()


def test_scores_match_transformers(reranker: Reranker, tiny_checkpoint: Path, noveleval) -> None:
    for request in noveleval[:4]:
        texts = [c.passage.text for c in request.candidates]
        expected = torch_scores(tiny_checkpoint, request.query.text, texts, reranker.max_length)
        (got,) = reranker.score([(request.query.text, [c.passage for c in request.candidates])])
        assert np.max(np.abs(got - expected)) < 1e-4


def test_truncation_is_counted_exactly(tiny_bundle: Path, tiny_checkpoint: Path, noveleval) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    reranker = Reranker.load(tiny_bundle)
    expected = 0
    for request in noveleval:
        for c in request.candidates:
            expected += len(tokenizer(request.query.text, c.passage.text)["input_ids"]) > reranker.max_length
    reranker.rerank_many(noveleval)
    assert expected > 0
    assert reranker.stats.truncated_passages == expected
    assert reranker.stats.pairs == 21 * 20
    assert reranker.stats.tokens <= reranker.stats.padded_tokens


def test_result_shape_ids_and_order(reranker: Reranker) -> None:
    passages = [
        "cats purr",
        Passage("doc-9", "dogs bark", "Dogs"),
        {"id": "m", "text": "mice squeak"},
        {"text": "birds"},
    ]
    results = reranker.rerank("which animal purrs?", passages)
    assert sorted(r.index for r in results) == [0, 1, 2, 3]
    assert {r.index: r.id for r in results} == {0: "0", 1: "doc-9", 2: "m", 3: "3"}
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    top = reranker.rerank("which animal purrs?", passages, top_k=2)
    assert top == results[:2]
    assert reranker.rerank("anything", []) == []
    assert reranker.rerank_many([]) == []
    many = reranker.rerank_many([("q", []), ("which animal purrs?", passages)])
    assert many[0] == [] and [r.index for r in many[1]] == [r.index for r in results]


def test_bucketed_batches_equal_one_query_at_a_time(reranker: Reranker, noveleval) -> None:
    together = reranker.rerank_many(noveleval[:6], batch_size=7)
    for request, batched in zip(noveleval[:6], together, strict=True):
        alone = reranker.rerank(request.query.text, [c.passage for c in request.candidates], batch_size=3)
        assert [r.index for r in alone] == [r.index for r in batched]
        assert np.allclose([r.score for r in alone], [r.score for r in batched], atol=1e-5)


def test_deterministic_and_thread_safe(reranker: Reranker, noveleval) -> None:
    jobs = [(r.query.text, [c.passage for c in r.candidates]) for r in noveleval[:8]]
    sequential = [reranker.rerank(q, ps) for q, ps in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda job: reranker.rerank(*job), jobs * 3))
    assert concurrent == sequential * 3


def test_a_tampered_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx fails its sha256 check"):
        Reranker.load(copy)


def test_base_install_alone_reranks_with_the_bundle(
    repo: Path, tiny_bundle: Path, reranker: Reranker, tmp_path: Path
) -> None:
    """A fresh venv with only the base dependencies (no torch, no transformers) serves the bundle."""
    env = {**os.environ, "UV_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", "")}
    env.pop("VIRTUAL_ENV", None)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", str(python), str(repo)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    code = (
        "import importlib.util, json, sys\n"
        "from rrdistill.runtime import Reranker\n"
        f"r = Reranker.load({str(tiny_bundle)!r}, threads=1)\n"
        "res = r.rerank('which animal purrs?', ['cats purr', 'dogs bark', 'mice squeak'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'optimum') if importlib.util.find_spec(m)]\n"
        "print(json.dumps({'heavy_installed': heavy, 'results': [[x.index, x.score] for x in res]}))\n"
    )
    out = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, text=True, capture_output=True, check=True, env=env
    )
    payload = json.loads(out.stdout)
    assert payload["heavy_installed"] == []
    expected = reranker.rerank("which animal purrs?", ["cats purr", "dogs bark", "mice squeak"])
    assert [i for i, _ in payload["results"]] == [r.index for r in expected]
    assert np.allclose([s for _, s in payload["results"]], [r.score for r in expected], atol=1e-6)
