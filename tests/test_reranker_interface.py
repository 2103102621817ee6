"""One reranker interface: every implementation answers the same calls, scores mean what they say,
listwise batch sizes are honoured and the pad id comes from the bundle, not from a token's name."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from test_reasoning import script_generation

from rrdistill.io import read_rankgpt
from rrdistill.runtime import BundleError, CrossEncoderReranker, RankedList, Reranker
from rrdistill.runtime.bundle import MANIFEST_NAME, Manifest, write_manifest
from rrdistill.runtime.reasoning import ListwiseReranker
from rrdistill.runtime.reranker import sigmoid
from rrdistill.window import WindowConfig, window_spans


@pytest.fixture(scope="module")
def noveleval(data_dir: Path):
    return read_rankgpt(data_dir / "noveleval" / "data.json")


@pytest.fixture(scope="module")
def cross_encoder(tiny_bundle: Path) -> Reranker:
    return Reranker.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def listwise(lm_bundles: dict[str, Path]) -> Reranker:
    return Reranker.load(lm_bundles["plain"], threads=1)


def test_every_bundle_loads_as_the_one_interface(
    cross_encoder: Reranker, listwise: Reranker, tiny_bundle: Path, lm_bundles: dict[str, Path]
) -> None:
    for reranker, bundle, kind, reasons in (
        (cross_encoder, tiny_bundle, "cross-encoder", False),
        (listwise, lm_bundles["plain"], "listwise-lm", True),
    ):
        assert isinstance(reranker, Reranker)
        assert reranker.kind == kind and reranker.supports_reasoning is reasons
        assert reranker.bundle == bundle and reranker.name == bundle.name
        assert reranker.manifest is not None and reranker.manifest.kind == kind
        assert reranker.providers == ["CPUExecutionProvider"]
        ranked = reranker.rerank("cats", ["Cats purr.", "Dogs bark.", "Mice squeak."], top_k=2)
        assert isinstance(ranked, RankedList) and len(ranked) == 2 and ranked.explanation is None
        assert isinstance(reranker.stats.to_dict(), dict) and reranker.stats.to_dict()
    assert isinstance(cross_encoder, CrossEncoderReranker)
    assert cross_encoder.rerank("cats", ["Cats purr."]).windows == []
    with pytest.raises(BundleError, match="not a cross-encoder bundle"):
        CrossEncoderReranker.load(lm_bundles["plain"])
    with pytest.raises(BundleError, match="not a listwise-lm bundle"):
        ListwiseReranker.load(tiny_bundle)
    # the base class is abstract: the one way in is `load`, or an implementation's constructor
    with pytest.raises(TypeError):
        Reranker()  # type: ignore[abstract]
    own = CrossEncoderReranker(
        cross_encoder.bundle, cross_encoder.manifest, cross_encoder.session, cross_encoder.tokenizer
    )
    assert own.rerank("cats", ["Cats purr.", "Dogs bark."]) == cross_encoder.rerank(
        "cats", ["Cats purr.", "Dogs bark."]
    )


def test_a_cross_encoder_refuses_to_reason(cross_encoder: Reranker) -> None:
    for mode in (True, "auto"):
        with pytest.raises(ValueError, match="cross-encoder cannot reason"):
            cross_encoder.rerank("cats", ["Cats purr."], reasoning=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reasoning must be True, False or 'auto'"):
        cross_encoder.rerank("cats", ["Cats purr."], reasoning="yes")  # type: ignore[arg-type]


def test_sigmoid_scores_are_float64_expit_of_the_logits_and_keep_the_ranking(
    cross_encoder: Reranker, tiny_bundle: Path, noveleval
) -> None:
    rng = random.Random(7)
    squashed = Reranker.load(tiny_bundle, threads=1, activation="sigmoid")
    for _ in range(6):
        request = rng.choice(noveleval)
        passages = rng.sample([c.passage for c in request.candidates], rng.randint(1, 20))
        raw = cross_encoder.rerank(request.query.text, passages)
        for ranked in (
            cross_encoder.rerank(request.query.text, passages, activation="sigmoid"),
            squashed.rerank(request.query.text, passages),
        ):
            assert [r.index for r in ranked] == [r.index for r in raw]
            assert [r.score for r in ranked] == pytest.approx(
                expit(np.array([r.score for r in raw], dtype=np.float64)), rel=1e-12, abs=0
            )
            assert all(0 < r.score < 1 for r in ranked)
        identity = squashed.rerank(request.query.text, passages, activation="identity")
        assert [r.score for r in identity] == [r.score for r in raw]
    logits = np.array([-40.0, -20.0, 0.0, 20.0, 30.0], dtype=np.float32)
    assert sigmoid(logits) == pytest.approx(expit(logits.astype(np.float64)), rel=1e-15, abs=0)
    assert sigmoid(logits)[-1] < 1.0  # float32 rounds this to exactly 1.0
    with pytest.raises(ValueError, match="activation 'softmax' is not one of"):
        Reranker.load(tiny_bundle, activation="softmax")


def test_listwise_scores_are_ranks_and_refuse_a_sigmoid(
    listwise: Reranker, lm_bundles: dict[str, Path]
) -> None:
    ranked = listwise.rerank("cats", ["a", "b", "c", "d"])
    assert [r.score for r in ranked] == [4.0, 3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"ranks \(n − rank\)"):
        listwise.rerank("cats", ["a", "b"], activation="sigmoid")
    with pytest.raises(ValueError, match=r"ranks \(n − rank\)"):
        Reranker.load(lm_bundles["plain"], activation="sigmoid")


@pytest.mark.parametrize(("batch_size", "expected"), [(None, [3] * 4), (2, [2, 1] * 4), (1, [1] * 12)])
def test_listwise_batch_size_is_windows_per_model_call(
    lm_bundles: dict[str, Path], noveleval, batch_size: int | None, expected: list[int]
) -> None:
    reranker = Reranker.load(lm_bundles["plain"], threads=1)
    assert isinstance(reranker, ListwiseReranker)
    reranker.window = WindowConfig(window_size=8, step=4, top_k=100)
    calls = script_generation(reranker)
    # 3 queries of 20 passages: 4 sliding-window steps, each with one window per query
    reranker.rerank_many(noveleval[:3], batch_size=batch_size, reasoning=True)
    assert [len(call) for call in calls] == expected
    stats = reranker.stats.to_dict()
    assert stats["queries"] == 3 and stats["windows"] == stats["reasoning_windows"] == 12
    assert stats["model_calls"] == len(expected) and stats["generated_tokens"] > 0


def test_listwise_stats_count_windows_and_repairs(lm_bundles: dict[str, Path], noveleval) -> None:
    reranker = Reranker.load(lm_bundles["plain"], threads=1)
    assert isinstance(reranker, ListwiseReranker)
    reranker.window = WindowConfig(window_size=8, step=4, top_k=100)
    ranked = reranker.rerank(noveleval[0].query.text, [c.passage for c in noveleval[0].candidates])
    stats = reranker.stats.to_dict()
    assert stats["windows"] == len(ranked.windows) == 4 and stats["reasoning_windows"] == 0
    assert stats["repaired_windows"] == sum(1 for w in ranked.windows if w.repairs.any)
    assert stats["generated_tokens"] == sum(w.generated_tokens for w in ranked.windows) > 0


class _RecordingSession:
    """Passes calls through to the real session and keeps the padded positions' token ids."""

    def __init__(self, session) -> None:
        self.session, self.pad_ids = session, set()

    def get_inputs(self):
        return self.session.get_inputs()

    def get_providers(self):
        return self.session.get_providers()

    def run(self, names, feeds):
        self.pad_ids |= set(feeds["input_ids"][feeds["attention_mask"] == 0].tolist())
        return self.session.run(names, feeds)


PASSAGES = ["short", "a much longer passage " * 5]


def _padded_ids(reranker: Reranker) -> tuple[set[int], RankedList]:
    assert isinstance(reranker, CrossEncoderReranker)
    recorder = _RecordingSession(reranker.session)
    reranker.session = recorder  # type: ignore[assignment]
    ranked = reranker.rerank("q", PASSAGES, batch_size=2)  # one batch: the short pair is padded
    return recorder.pad_ids, ranked


def test_the_pad_id_comes_from_the_bundle_not_a_token_name(
    tiny_bundle: Path, cross_encoder: Reranker, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "pad")
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    assert tokenizer["padding"]["pad_id"] == 0
    tokenizer["padding"]["pad_id"] = 100
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    manifest = Manifest.from_json(json.loads((copy / MANIFEST_NAME).read_text()))
    assert manifest.inputs.pad_token_id == 0  # export records the tokenizer's pad id
    manifest.inputs.pad_token_id = None  # a bundle without one falls back to tokenizer.json's padding
    write_manifest(copy, manifest)
    reranker = Reranker.load(copy, threads=1, warmup=False)
    pads, scores = _padded_ids(reranker)
    assert pads == {100}
    # masked positions do not change a score, whatever id they hold
    expected = cross_encoder.rerank("q", PASSAGES)
    assert [r.score for r in scores] == pytest.approx([r.score for r in expected], abs=1e-5)
    manifest.inputs.pad_token_id = 7  # a recorded id wins over the tokenizer's
    write_manifest(copy, manifest)
    pads, _ = _padded_ids(Reranker.load(copy, threads=1, warmup=False))
    assert pads == {7}


def test_the_rerank_command_takes_any_bundle_through_the_interface(
    tiny_bundle: Path, lm_bundles: dict[str, Path], noveleval, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from rrdistill.cli import app
    from rrdistill.io import read_requests, write_requests

    requests = tmp_path / "requests.jsonl"
    write_requests(requests, noveleval[:2])
    runner = CliRunner()
    out = tmp_path / "listwise.jsonl"
    result = runner.invoke(
        app,
        [
            *("rerank", str(requests), "--bundle", str(lm_bundles["plain"]), "-o", str(out)),
            *("--reasoning", "--batch-size", "2", "--json", str(tmp_path / "listwise.json")),
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "listwise.json").read_text())["runtime_stats"]
    settings = json.loads((lm_bundles["plain"] / MANIFEST_NAME).read_text())["extra"]["listwise"]
    windows = len(window_spans(20, settings["window_size"], settings["step"]))
    assert stats["queries"] == 2 and stats["windows"] == stats["reasoning_windows"] == 2 * windows
    assert [sorted(r.docids) for r in read_requests(out)] == [sorted(r.docids) for r in noveleval[:2]]
    out = tmp_path / "sigmoid.jsonl"
    result = runner.invoke(
        app,
        ["rerank", str(requests), "--bundle", str(tiny_bundle), "-o", str(out), "--activation", "sigmoid"],
    )
    assert result.exit_code == 0, result.output
    assert all(0 < c.score < 1 for r in read_requests(out) for c in r.candidates)
    for arguments, message in (
        (["--bundle", str(tiny_bundle), "--reasoning"], "cannot reason"),
        (["--bundle", str(lm_bundles["plain"]), "--activation", "sigmoid"], "ranks"),
        (["--bundle", str(tiny_bundle), "--activation", "tanh"], "not one of identity, sigmoid"),
    ):
        result = runner.invoke(app, ["rerank", str(requests), "-o", str(tmp_path / "x.jsonl"), *arguments])
        assert result.exit_code != 0 and message in result.output, result.output
