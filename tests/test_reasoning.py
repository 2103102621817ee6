"""The listwise LM path: export with KV cache, numpy decoding = transformers, fast/FIRST/reasoning modes."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from rrdistill.io import read_rankgpt
from rrdistill.prompts import PROMPT_VERSION, parse_answer
from rrdistill.runtime import Reranker
from rrdistill.runtime.bundle import MANIFEST_NAME, BundleError
from rrdistill.runtime.generation import Generation
from rrdistill.runtime.reasoning import ListwiseReranker, RankedList
from rrdistill.window import WindowConfig


def script_generation(reranker: Reranker, think: str = "window") -> list[list[int]]:
    """Make the bundle's ONNX model "generate" a scripted completion for every prompt it gets:
    ``<think>{think} {k}</think><answer>[n] > … > [1]</answer>`` (k counts the windows, so each
    window's reasoning is its own), through the real tokenizer, decoding and parser. Returns the
    calls: per call, the window size of each prompt in its batch."""
    assert isinstance(reranker, ListwiseReranker)
    engine = reranker.engine
    calls: list[list[int]] = []

    def generate(prompts, max_new_tokens, **_: object) -> list[Generation]:
        sizes = [
            int(engine.tokenizer.decode(ids).split("I will provide you with ")[1].split(" ")[0])
            for ids in prompts
        ]
        start = sum(len(c) for c in calls)
        calls.append(sizes)
        return [
            Generation(
                engine.tokenizer.encode(
                    f"<think>{think} {start + row}</think><answer>"
                    + " > ".join(f"[{i}]" for i in range(n, 0, -1))
                    + "</answer>",
                    add_special_tokens=False,
                ).ids,
                True,
            )
            for row, n in enumerate(sizes)
        ]

    engine.model.generate = generate  # type: ignore[method-assign]
    return calls


@pytest.fixture(scope="module")
def noveleval(data_dir: Path):
    return read_rankgpt(data_dir / "noveleval" / "data.json")


def test_export_records_parity_and_prompting(lm_bundles: dict[str, Path]) -> None:
    manifest = json.loads((lm_bundles["plain"] / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "listwise-lm" and manifest["prompt_version"] == PROMPT_VERSION
    assert manifest["parity"]["greedy_token_agreement"] == 1.0
    assert manifest["parity"]["max_abs_logit_diff"] < 1e-4
    settings = manifest["extra"]["listwise"]
    assert settings["chat_template"].count("{system}") == 1 and settings["chat_template"].endswith(
        "assistant\n"
    )
    assert (
        settings["first_token_ids"] is None
    )  # BPE leaves some of 1..20 as several tokens or merged with "["
    first = json.loads((lm_bundles["first"] / MANIFEST_NAME).read_text())["extra"]["listwise"]
    assert first["first_token_ids"] is not None and len(set(first["first_token_ids"])) == 20


def test_batched_left_padded_decoding_equals_transformers(lm_bundles: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = lm_bundles["plain-ckpt"]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    engine = ListwiseReranker.load(lm_bundles["plain"], threads=1).engine
    prompts = [
        "<|im_start|>user\nshort<|im_end|>\n",
        "<|im_start|>user\na much longer prompt about proteins and cells<|im_end|>\n",
        "x",
    ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ours = engine.model.generate(ids, 10)
    for prompt_ids, generated in zip(ids, ours, strict=True):
        with torch.no_grad():
            reference = model.generate(
                torch.tensor([prompt_ids]),
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        expected = reference[0, len(prompt_ids) :].tolist()
        assert generated.token_ids[: len(expected)] == expected


def test_fast_and_reasoning_modes_return_permutations_over_windows(
    lm_bundles: dict[str, Path], noveleval
) -> None:
    reranker = Reranker.load(lm_bundles["plain"], threads=1)
    assert isinstance(reranker, ListwiseReranker)
    reranker.window = WindowConfig(window_size=8, step=4, top_k=100)
    passages = [c.passage for c in noveleval[0].candidates]
    fast = reranker.rerank(noveleval[0].query.text, passages)
    assert isinstance(fast, RankedList) and fast.explanation is None
    assert sorted(r.index for r in fast) == list(range(20))
    assert [r.id for r in fast] == [passages[r.index].docid for r in fast]
    assert len(fast.windows) == 4  # spans (12,20) (8,16) (4,12) (0,8)
    explained = reranker.rerank(noveleval[0].query.text, passages, top_k=5, reasoning=True)
    assert len(explained) == 5
    assert all(w.text is not None for w in explained.windows)
    # the explanation is the front window's <think> text as the model generated it, parsed
    front = explained.windows[-1]
    assert (front.start, front.end) == (0, 8)
    assert explained.explanation == parse_answer(front.text, 8, reasoning=True).reasoning
    assert reranker.rerank("q", []) == []


def test_the_explanation_is_the_models_think_text_of_the_front_window(
    lm_bundles: dict[str, Path], noveleval
) -> None:
    reranker = Reranker.load(lm_bundles["plain"], threads=1)
    assert isinstance(reranker, ListwiseReranker)
    reranker.window = WindowConfig(window_size=8, step=4, top_k=100)
    calls = script_generation(reranker, think="the passages about tides come first, window")
    passages = [c.passage for c in noveleval[0].candidates]
    explained = reranker.rerank(noveleval[0].query.text, passages, reasoning=True)
    assert calls == [[8]] * 4  # four windows, back to front
    assert explained.explanation == "the passages about tides come first, window 3"
    assert [w.reasoning for w in explained.windows] == [
        f"the passages about tides come first, window {k}" for k in range(4)
    ]
    assert all(not w.repairs.any for w in explained.windows)
    assert reranker.rerank(noveleval[0].query.text, passages).explanation is None  # fast mode: none


def test_first_ranks_a_window_from_one_forward_pass(lm_bundles: dict[str, Path], noveleval) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reranker = ListwiseReranker.load(lm_bundles["first"], threads=1)
    request = noveleval[1]
    ranked = reranker.rerank(request.query.text, [c.passage for c in request.candidates])
    (window,) = ranked.windows
    assert window.text is None  # no generation happened
    checkpoint = lm_bundles["first-ckpt"]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    from rrdistill.types import Candidate, Query, Request

    prompt = reranker.engine.prompt(
        Request(Query("0", request.query.text), [Candidate(c.passage) for c in request.candidates]), False
    )
    ids = tokenizer(prompt + "<answer>[", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1].numpy()
    first_ids = reranker.engine.settings.first_token_ids
    expected = list(np.argsort(-logits[first_ids], kind="stable"))
    assert [r.index for r in ranked] == expected


def test_bundle_checks(lm_bundles: dict[str, Path], tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(lm_bundles["plain"], tmp_path / "copy")
    path = copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["prompt_version"] = "older-prompt"
    from rrdistill.runtime.bundle import Manifest, write_manifest

    write_manifest(copy, Manifest.from_json(data))
    with pytest.raises(BundleError, match="trained with prompt 'older-prompt'"):
        ListwiseReranker.load(copy)
    with pytest.raises(BundleError, match="not a listwise-lm bundle"):
        ListwiseReranker.load(tiny_bundle)  # a cross-encoder bundle
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json has 2 bytes"):
        Reranker.load(copy)


class _ChatServer(BaseHTTPRequestHandler):
    """A real OpenAI-compatible chat endpoint on loopback: reverses the window, once answers 429."""

    calls = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).calls += 1
        if type(self).calls == 1:
            self.send_response(429)
            self.end_headers()
            return
        user = body["messages"][1]["content"]
        n = int(user.split("I will provide you with ")[1].split(" ")[0])
        answer = (
            "<think>the later passages are better</think><answer>"
            + " > ".join(f"[{i}]" for i in range(n, 0, -1))
            + "</answer>"
        )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_reasoning_through_an_openai_compatible_endpoint() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        reranker = ListwiseReranker.from_url(url, "teacher", window=WindowConfig(20, 10))
        ranked = reranker.rerank("q", [f"passage {i}" for i in range(5)], reasoning=True)
        assert [r.index for r in ranked] == [4, 3, 2, 1, 0]
        assert ranked.explanation == "the later passages are better"
    finally:
        server.shutdown()
