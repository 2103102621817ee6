"""Bi-encoder bundles: the packaged all-MiniLM-L6-v2 (a sentence-transformers folder) exported to fp32
and int8 bundles, served by the runtime like sentence-transformers scores it, and without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import minilm_path, small_parity
from typer.testing import CliRunner

from rrdistill.checkpoint_names import TRAINING_RECORD
from rrdistill.cli import app
from rrdistill.export import ExportError
from rrdistill.export.bi_encoder import read_sentence_transformer
from rrdistill.export.pipeline import ExportConfig, export_bundle
from rrdistill.io import read_beir
from rrdistill.runtime import BiEncoderReranker, BundleError, Chunking, CrossEncoderReranker, Reranker
from rrdistill.runtime.bundle import MANIFEST_NAME, EmbeddingSpec, Manifest, load_manifest, write_manifest
from rrdistill.types import Passage

MAX_LENGTH = 64
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM with max_seq_length 64 (fast, and most SciFact abstracts get cut) and a
    training record, as rrdistill's trainers leave one."""
    folder = tmp_path_factory.mktemp("st") / "minilm"
    shutil.copytree(minilm_path(), folder)
    settings = folder / "sentence_bert_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "max_seq_length": MAX_LENGTH}))
    (folder / TRAINING_RECORD).write_text(json.dumps({"run": "bi-encoder-test", "loss": "kl"}))
    return folder


@pytest.fixture(scope="module")
def fp32_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Exported by the command line, as a user would."""
    bundle = tmp_path_factory.mktemp("bundles") / "minilm-fp32"
    args = ["export", str(checkpoint), str(bundle), "--precision", "fp32", "--parity-queries", "4"]
    args += ["--parity-passages", "10", "--parity-data", str(data_dir / "scifact")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bi-encoder" in result.output and "mean pooling, cosine" in result.output
    return bundle


@pytest.fixture(scope="module")
def int8_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ExportConfig(precision="int8", parity=small_parity())
    return export_bundle(checkpoint, tmp_path_factory.mktemp("bundles") / "minilm-int8", config).bundle


@pytest.fixture(scope="module")
def groups(data_dir: Path) -> list[tuple[str, list[Passage]]]:
    """Seeded SciFact queries, each with 8 random passages: long abstracts (cut at 64 tokens), a few
    title-only ones (not cut), one passage shared by two lists and one repeated within a list; the
    last query is itself an abstract, so it is cut too."""
    dataset = read_beir(data_dir / "scifact", "test")
    rng = np.random.default_rng(7)
    corpus = list(dataset.corpus.values())
    queries = list(dataset.split_queries())
    out = []
    for i in rng.choice(len(queries), size=3, replace=False):
        passages = [corpus[j] for j in rng.choice(len(corpus), size=6, replace=False)]
        passages += [Passage(f"t{i}", corpus[int(i)].title), Passage(f"u{i}", corpus[int(i) + 1].title)]
        out.append((queries[i].text, passages))
    out[1][1][0] = out[0][1][0]
    out[2][1][7] = out[2][1][3]
    out.append((corpus[11].text, out[0][1][:4]))
    return out


def reference_scores(checkpoint: Path, groups: list[tuple[str, list[Passage]]]) -> list[np.ndarray]:
    """sentence-transformers' own normalised embeddings and their cosines (independent of export)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(checkpoint), device="cpu")
    assert model.max_seq_length == MAX_LENGTH
    out = []
    for query, passages in groups:
        q = model.encode(query, normalize_embeddings=True)
        p = model.encode([f"{x.title} {x.text}".strip() for x in passages], normalize_embeddings=True)
        out.append(p @ q)
    return out


def cut_at_max_length(checkpoint: Path, texts: list[str]) -> list[bool]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return [len(tokenizer(t)["input_ids"]) > MAX_LENGTH for t in texts]


def test_fp32_scores_are_sentence_transformers_cosines_and_cuts_are_counted(
    fp32_bundle: Path, checkpoint: Path, groups: list[tuple[str, list[Passage]]]
) -> None:
    reranker = Reranker.load(fp32_bundle, threads=2)
    assert isinstance(reranker, BiEncoderReranker) and reranker.kind == "bi-encoder"
    assert reranker.stats.to_dict()["pairs"] == 0  # the warm-up is not counted
    scores = reranker.score(groups, batch_size=5)
    reference = reference_scores(checkpoint, groups)
    for got, expected in zip(scores, reference, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4)
    texts = [f"{p.title} {p.text}".strip() for _, ps in groups for p in ps]
    cut = cut_at_max_length(checkpoint, texts)
    stats = reranker.stats.to_dict()
    assert 0 < sum(cut) < len(texts)
    assert stats["pairs"] == len(texts) == 28 and stats["truncated_passages"] == sum(cut)
    assert stats["truncated_queries"] == sum(cut_at_max_length(checkpoint, [q for q, _ in groups])) >= 1
    assert stats["embedded"] == len({*texts, *(q for q, _ in groups)}) == 4 + 28 - 2 - 4
    assert stats["batches"] == -(-stats["embedded"] // 5) and stats["tokens"] < stats["padded_tokens"]
    # ranked best first by the cosine, with ids; the same texts rank the same under any batch size
    ranked = reranker.rerank_many(groups, top_k=3, batch_size=64)
    for (_, passages), result, expected in zip(groups, ranked, reference, strict=True):
        assert [r.index for r in result] == list(np.argsort(-expected, kind="stable")[:3])
        assert [r.id for r in result] == [passages[r.index].docid for r in result]
        np.testing.assert_allclose([r.score for r in result], np.sort(expected)[::-1][:3], atol=1e-4)


def test_ties_empty_lists_activations_and_reasoning(fp32_bundle: Path) -> None:
    reranker = Reranker.load(fp32_bundle, threads=2)
    tied = reranker.rerank("tides", ["the moon", {"id": "b", "text": "cats"}, "the moon"])
    assert [r.index for r in tied][-1] == 1 and [r.id for r in tied] == ["0", "2", "b"]
    assert tied[0].score == tied[1].score
    assert reranker.rerank("q", []) == [] and [len(r) for r in reranker.rerank_many([("q", [])])] == [0]
    identity = reranker.rerank("tides", ["the moon", "cats"], activation="identity")
    assert [r.score for r in identity] == [r.score for r in reranker.rerank("tides", ["the moon", "cats"])]
    for mode in (True, "auto"):
        with pytest.raises(ValueError, match="cannot reason"):
            reranker.rerank("q", ["p"], reasoning=mode)
    with pytest.raises(ValueError, match="not logits"):
        reranker.rerank("q", ["p"], activation="sigmoid")
    with pytest.raises(ValueError, match="not logits"):
        Reranker.load(fp32_bundle, activation="sigmoid")
    with pytest.raises(ValueError, match="chunking applies to cross-encoders"):
        Reranker.load(fp32_bundle, chunking=Chunking("max"))
    with pytest.raises(BundleError, match="not a cross-encoder bundle"):
        CrossEncoderReranker.load(fp32_bundle)


def test_fp32_manifest_says_how_to_pool_and_where_it_came_from(fp32_bundle: Path) -> None:
    manifest = load_manifest(fp32_bundle)
    assert (manifest.kind, manifest.precision) == ("bi-encoder", "fp32")
    assert manifest.embedding == EmbeddingSpec(pooling="mean", normalize=True, dimension=384)
    assert manifest.model.output == "last_hidden_state" and "token_type_ids" in manifest.model.inputs
    assert manifest.inputs.max_length == MAX_LENGTH and sorted(manifest.files) == [
        "model.onnx",
        "tokenizer.json",
    ]
    parity = manifest.parity
    assert parity["passed"] and parity["pairs"] == 40 and parity["max_abs_diff"] < 1e-4
    assert parity["kendall_tau_min"] == pytest.approx(1.0) and parity["ndcg@10_delta"] == 0.0
    assert manifest.provenance["training"] == {"run": "bi-encoder-test", "loss": "kl"}
    assert "sentence-transformers" in manifest.provenance["libraries"]


def test_int8_ranks_like_fp32_and_records_its_parity(
    int8_bundle: Path, fp32_bundle: Path, groups: list[tuple[str, list[Passage]]]
) -> None:
    from scipy.stats import kendalltau

    manifest = load_manifest(int8_bundle)
    assert (manifest.kind, manifest.precision) == ("bi-encoder", "int8")
    assert manifest.extra["export"]["quantization"]["graph"] == "fused"  # QAttention applies to encoders
    assert manifest.parity["passed"] and manifest.parity["kendall_tau_mean"] >= 0.85
    assert manifest.files["model.onnx"]["bytes"] < load_manifest(fp32_bundle).files["model.onnx"]["bytes"] / 3
    int8 = Reranker.load(int8_bundle, threads=2).score(groups)
    fp32 = Reranker.load(fp32_bundle, threads=2).score(groups)
    taus = [kendalltau(a, b).statistic for a, b in zip(int8, fp32, strict=True)]
    assert np.mean(taus) > 0.8, taus
    assert max(np.abs(a - b).max() for a, b in zip(int8, fp32, strict=True)) < 0.1


def test_an_edited_embedding_section_is_refused(fp32_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["embedding"]["pooling"] = "cls"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        Reranker.load(bundle)
    # re-checksummed, a bi-encoder still needs an embedding section the runtime knows
    manifest = Manifest.from_json(
        {k: v for k, v in data.items() if k != "embedding"} | {"kind": "cross-encoder"}
    )
    manifest.kind = "bi-encoder"
    with pytest.raises(BundleError, match="embedding section"):
        write_manifest(bundle, manifest)
    manifest.embedding = EmbeddingSpec(pooling="max")
    with pytest.raises(BundleError, match="pooling 'max'"):
        write_manifest(bundle, manifest)


def test_manifests_of_other_kinds_keep_their_layout() -> None:
    """Old manifests have no embedding section: they load, and are written back without one."""
    manifest = Manifest.from_json({"kind": "cross-encoder", "precision": "fp32"})
    assert manifest.embedding is None and "embedding" not in manifest.to_json()
    with pytest.raises(BundleError, match="embedding section"):
        Manifest.from_json({"kind": "cross-encoder", "precision": "fp32", "embedding": {"pooling": "mean"}})


def _folder(tmp_path: Path, modules: list[str], pooling: dict, **files: dict) -> Path:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    paths = {"Transformer": "", "Pooling": "1_Pooling"}
    listing = [
        {
            "idx": i,
            "name": str(i),
            "path": paths.get(m, f"{i}_{m}"),
            "type": f"sentence_transformers.models.{m}",
        }
        for i, m in enumerate(modules)
    ]
    (tmp_path / "modules.json").write_text(json.dumps(listing))
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    return tmp_path


@pytest.mark.parametrize(
    ("modules", "pooling", "files", "expected"),
    [
        (["Transformer", "Pooling"], {"pooling_mode": "cls"}, {}, EmbeddingSpec("cls", True)),
        (
            ["Transformer", "Pooling"],
            {
                "pooling_mode_mean_tokens": True,
                "pooling_mode_cls_token": False,
                "word_embedding_dimension": 8,
            },
            {"config_sentence_transformers": {"similarity_fn_name": "dot"}},
            EmbeddingSpec("mean", False, 8),
        ),
        (["Transformer", "Pooling", "Dense"], {"pooling_mode": "mean"}, {}, "Dense"),
        (["Transformer", "Pooling"], {"pooling_mode": "max"}, {}, "exactly one of mean or cls"),
        (
            ["Transformer", "Pooling"],
            {"pooling_mode": "mean"},
            {"sentence_bert_config": {"do_lower_case": True}},
            "lowercases",
        ),
        (
            ["Transformer", "Pooling"],
            {"pooling_mode": "mean"},
            {"config_sentence_transformers": {"similarity_fn_name": "euclidean"}},
            "cosine or dot",
        ),
    ],
)
def test_sentence_transformer_folders_are_read_or_refused(
    tmp_path: Path, modules: list[str], pooling: dict, files: dict, expected: EmbeddingSpec | str
) -> None:
    folder = _folder(tmp_path, modules, pooling, **files)
    if isinstance(expected, str):
        with pytest.raises(ExportError, match=expected):
            read_sentence_transformer(folder)
    else:
        read = read_sentence_transformer(folder)
        assert read is not None and read.embedding == expected and read.transformer == folder


def test_a_folder_saved_by_this_sentence_transformers_is_read_alike(checkpoint: Path, tmp_path: Path) -> None:
    """5.x writes other module type paths, ``pooling_mode`` and the length into the tokenizer's config."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from rrdistill.export.onnx import default_max_length, load_model_config

    SentenceTransformer(str(checkpoint), device="cpu").save(str(tmp_path))
    assert "sentence_transformer.modules.pooling" in (tmp_path / "modules.json").read_text()
    read = read_sentence_transformer(tmp_path)
    assert read is not None and read.embedding == EmbeddingSpec("mean", True, 384)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        default_max_length(load_model_config(tmp_path), tokenizer, cap=read.max_seq_length or 512)
        == MAX_LENGTH
    )


def test_a_cross_encoder_folder_is_no_bi_encoder(tiny_checkpoint: Path) -> None:
    assert read_sentence_transformer(tiny_checkpoint) is None


SERVE_WITHOUT_TORCH = """
import json, sys
from rrdistill.runtime import Reranker
reranker = Reranker.load(sys.argv[1], threads=1)
ranked = reranker.rerank("vitamin D and bone fractures", json.loads(sys.argv[2]))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sentence_transformers"))
print(json.dumps({"ranked": [[r.index, r.score] for r in ranked], "heavy": heavy, "kind": reranker.kind}))
"""


def test_served_without_torch(fp32_bundle: Path) -> None:
    passages = [
        "Wing flutter at supersonic speeds",
        "Vitamin D supplements reduce fractures",
        "A trial of calcium",
    ]
    out = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(fp32_bundle), json.dumps(passages)],
        capture_output=True,
        text=True,
        check=True,
    )
    served = json.loads(out.stdout)
    assert served["heavy"] == [] and served["kind"] == "bi-encoder"
    here = Reranker.load(fp32_bundle).rerank("vitamin D and bone fractures", passages)
    assert [i for i, _ in served["ranked"]] == [r.index for r in here] and here[0].index == 1
    np.testing.assert_allclose([s for _, s in served["ranked"]], [r.score for r in here], atol=1e-6)


def test_rerank_command_serves_a_bi_encoder_bundle(fp32_bundle: Path, tmp_path: Path) -> None:
    from rrdistill.io import read_requests, write_requests
    from rrdistill.types import Candidate, Query, Request

    texts = ["Wing flutter at supersonic speeds", "Vitamin D supplements reduce fractures"]
    request = Request(
        Query("q1", "vitamin D"), [Candidate(Passage(f"d{i}", t), 1.0) for i, t in enumerate(texts)]
    )
    write_requests(tmp_path / "in.jsonl", [request])
    args = [
        "rerank",
        str(tmp_path / "in.jsonl"),
        "--bundle",
        str(fp32_bundle),
        "-o",
        str(tmp_path / "out.jsonl"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bi-encoder" in result.output and "passages truncated" in result.output
    assert next(iter(read_requests(tmp_path / "out.jsonl"))).docids == ["d1", "d0"]
    refused = runner.invoke(app, [*args, "--reasoning"])
    assert refused.exit_code != 0 and "cannot reason" in refused.output


def test_served_over_http_with_cosines_mapped_onto_0_1(fp32_bundle: Path) -> None:
    import httpx
    from test_server import RunningServer

    from rrdistill.runtime.server import ServerConfig

    reranker = Reranker.load(fp32_bundle, threads=1)
    texts = [
        "Wing flutter at supersonic speeds",
        "Vitamin D supplements reduce fractures",
        "A trial of calcium",
    ]
    expected = reranker.rerank("vitamin D", texts)
    with RunningServer(reranker, ServerConfig()) as running:
        assert httpx.get(f"{running.url}/health").json()["kind"] == "bi-encoder"
        cohere = httpx.post(
            f"{running.url}/v1/rerank", json={"query": "vitamin D", "documents": texts}, timeout=60
        )
        raw = httpx.post(
            f"{running.url}/rerank",
            json={"query": "vitamin D", "texts": texts, "raw_scores": True},
            timeout=60,
        )
        reasoning = httpx.post(
            f"{running.url}/rerank", json={"query": "q", "documents": texts, "reasoning": True}, timeout=60
        )
    assert cohere.status_code == 200 and raw.status_code == 200, (cohere.text, raw.text)
    results = cohere.json()["results"]
    assert [r["index"] for r in results] == [r.index for r in expected]
    cosines = np.array([r.score for r in expected])
    assert cosines.min() < 0.5  # the mapping is visible: not ranks, not a sigmoid
    np.testing.assert_allclose([r["relevance_score"] for r in results], (1 + cosines) / 2, atol=1e-6)
    np.testing.assert_allclose([r["score"] for r in raw.json()], cosines, atol=1e-6)
    assert reasoning.status_code == 422 and "cannot reason" in reasoning.json()["detail"]
