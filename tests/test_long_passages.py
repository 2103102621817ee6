"""Long passages scored whole (MaxP) by the cross-encoder runtime, checked against transformers.

The reference is built independently: the Hugging Face tokenizer's own overflow windows
(``return_overflowing_tokens`` with the same stride), scored by the torch model, best window kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrdistill.io import read_rankgpt
from rrdistill.runtime import Chunking, CrossEncoderReranker, Reranker


@pytest.fixture(scope="module")
def noveleval(data_dir: Path):
    return read_rankgpt(data_dir / "noveleval" / "data.json")


def maxp_reference(
    checkpoint: Path, query: str, texts: list[str], max_length: int, stride: int
) -> np.ndarray:
    """Each passage's best window score, windows cut by the transformers tokenizer itself."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = tokenizer(
        [query] * len(texts),
        texts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="pt",
    )
    owners = batch.pop("overflow_to_sample_mapping").numpy()
    with torch.no_grad():
        logits = model(**batch).logits[:, 0].numpy()
    best = np.full(len(texts), -np.inf, dtype=np.float32)
    np.maximum.at(best, owners, logits)
    return best, np.bincount(owners, minlength=len(texts))


@pytest.mark.parametrize("stride", [0, 5])
def test_maxp_scores_equal_the_best_transformers_window(
    tiny_bundle: Path, tiny_checkpoint: Path, noveleval, stride: int
) -> None:
    reranker = Reranker.load(tiny_bundle, chunking=Chunking("max", stride=stride, max_chunks=100))
    chunked = extra = 0
    for request in noveleval[:5]:
        passages = [c.passage for c in request.candidates]
        texts = [p.text for p in passages]
        expected, windows = maxp_reference(
            tiny_checkpoint, request.query.text, texts, reranker.max_length, stride
        )
        assert windows.max() > 1  # the check must involve passages longer than one window
        (got,) = reranker.score([(request.query.text, passages)])
        assert np.max(np.abs(got - expected)) < 1e-4
        chunked += int((windows > 1).sum())
        extra += int((windows - 1).sum())
    assert reranker.stats.chunked_passages == chunked
    assert reranker.stats.extra_chunks == extra
    assert reranker.stats.truncated_passages == 0
    assert reranker.stats.pairs == sum(len(r.candidates) for r in noveleval[:5])


def test_maxp_leaves_short_passages_as_firstp_scores_them(tiny_bundle: Path) -> None:
    first = Reranker.load(tiny_bundle)
    maxp = Reranker.load(tiny_bundle, chunking=Chunking("max"))
    passages = ["cats purr when content", "dogs bark", "mice squeak at night"]
    a = first.rerank("which animal purrs?", passages)
    b = maxp.rerank("which animal purrs?", passages)
    assert [r.index for r in a] == [r.index for r in b]
    assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-6)
    assert maxp.stats.chunked_passages == 0 and maxp.stats.extra_chunks == 0


def test_maxp_never_scores_a_long_passage_below_its_first_window(tiny_bundle: Path, noveleval) -> None:
    first = Reranker.load(tiny_bundle)
    maxp = Reranker.load(tiny_bundle, chunking=Chunking("max", max_chunks=3))
    groups = [(r.query.text, [c.passage for c in r.candidates]) for r in noveleval[:4]]
    for a, b in zip(first.score(groups), maxp.score(groups), strict=True):
        assert np.all(b >= a - 1e-7)
        assert np.any(b > a + 1e-7)  # a later window scored higher (the tiny model's logits are close)
    # windows past the third are dropped and counted as truncation, with the remedy logged
    assert maxp.stats.truncated_passages > 0
    assert maxp.stats.truncated_passages <= maxp.stats.chunked_passages


def test_chunking_settings_are_checked(tiny_bundle: Path) -> None:
    with pytest.raises(ValueError, match="not 'first'"):
        Chunking("mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chunks"):
        Chunking("max", max_chunks=0)
    with pytest.raises(ValueError, match="must be below"):
        CrossEncoderReranker.load(tiny_bundle, chunking=Chunking("max", stride=10_000))


def test_rerank_command_scores_long_passages_whole(tiny_bundle: Path, tmp_path: Path, noveleval) -> None:
    import json

    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.io import read_requests, write_requests

    requests = tmp_path / "requests.jsonl"
    write_requests(requests, noveleval[:3])
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = ["rerank", str(requests), "--bundle", str(tiny_bundle), "-o", str(out), "--json", str(summary)]
    result = CliRunner().invoke(app, [*args, "--long-passages", "max", "--stride", "5"])
    assert result.exit_code == 0, result.output
    assert "passages scored in chunks (MaxP)" in result.output
    stats = json.loads(summary.read_text())["runtime_stats"]
    assert stats["chunked_passages"] > 0 and stats["truncated_passages"] == 0
    library = Reranker.load(tiny_bundle, chunking=Chunking("max", stride=5)).rerank_many(noveleval[:3])
    for got, expected in zip(read_requests(out), library, strict=True):
        assert got.docids == [r.id for r in expected]
    refused = CliRunner().invoke(app, [*args, "--stride", "5"])
    assert refused.exit_code == 2 and "--long-passages max" in refused.output
    refused = CliRunner().invoke(app, [*args, "--long-passages", "mean"])
    assert refused.exit_code == 2 and "not 'first'" in refused.output


def _texts_around_the_cut(budget: int, noveleval) -> list[str]:
    """Passages whose pre-tokenization cut falls in every awkward place."""
    real = [c.passage.text for request in noveleval[:3] for c in request.candidates]
    word = "immunohistochemically"
    return [
        *real,
        "a " * (budget // 2 - 3) + word * 4 + " tail words",  # a long word straddling the cut
        "x" * (budget * 3),  # no whitespace at all
        ("ünïcödé wörds, mixed—punctuation; " * 60),
        "\n".join(["line"] * budget),  # newlines only
        "short passage",
        " " * (budget + 5) + "late words",  # whitespace up to the cut
        ("12345678901234567890 " * 80),  # long number tokens
    ]


@pytest.mark.parametrize("max_length", [24, 128])
def test_first_windows_are_those_of_the_whole_passages(tiny_bundle: Path, noveleval, max_length: int) -> None:
    """Cutting long passages before tokenizing them changes no window, truncation flag or count."""
    from tokenizers import Tokenizer

    from rrdistill.runtime.reranker import CHARS_PER_TOKEN

    reranker = Reranker.load(tiny_bundle)
    reranker.max_length = max_length
    reranker.tokenizer.enable_truncation(max_length, strategy="only_second")
    reference = Tokenizer.from_str(reranker.tokenizer.to_str())
    texts = _texts_around_the_cut(CHARS_PER_TOKEN * max_length, noveleval)
    pairs = [("what do the passages say about proteins?", text) for text in texts]
    rows = reranker._encode_first_windows(pairs)
    expected = reference.encode_batch(pairs)
    assert len(rows) == len(expected)
    for text, row, encoding in zip(texts, rows, expected, strict=True):
        assert row.ids.tolist() == encoding.ids, text[:60]
        assert row.type_ids.tolist() == encoding.type_ids
        assert row.truncated == bool(encoding.overflowing)
    assert sum(row.truncated for row in rows) > len(rows) // 2
    # the cut text held the window for real passages; the awkward ones were tokenized again whole
    assert 0 < reranker.stats.passages_tokenized_whole < len(rows) // 2
