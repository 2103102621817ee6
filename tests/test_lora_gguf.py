"""A LoRA adapter trained on a GGUF model's dequantized weights, served by llama.cpp on the GGUF itself.

SmolLM2 is a Llama: llama.cpp keeps its q/k projections with the rotary halves interleaved, so
an adapter written without that permutation still loads and answers — wrongly. The check is
therefore numeric: llama.cpp's next-token distribution with the adapter must match torch's with
the same adapter, and must differ from the base model's (or the comparison would pass unadapted).
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rrdistill.cli import app
from rrdistill.distill.checkpoints import materialize_checkpoint
from rrdistill.distill.llama_server import LlamaServer, LlamaServerConfig
from rrdistill.distill.lora_gguf import CONVERTED, write_lora_gguf
from rrdistill.models import fetch_model, resolve_model

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "Rank these passages for the query 'statins and heart disease'.",
    "What is the capital of France?",
    "Write one word that rhymes with cat.",
]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """SmolLM2 with a random LoRA on every projection: torch's next-token distributions with and
    without it, and the PEFT folder."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    fetch_model(MODEL)
    base = materialize_checkpoint(MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in QUESTIONS
    ]

    def next_token(net: Any) -> list[Any]:
        with torch.no_grad():
            return [net(torch.tensor([ids])).logits[0, -1].softmax(-1) for ids in prompts]

    before = next_token(model)
    torch.manual_seed(0)
    lora = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    tuned = peft.get_peft_model(model, lora)
    for name, parameter in tuned.named_parameters():
        if "lora_B" in name:  # B starts at zero: a random delta large enough to move the answers
            torch.nn.init.normal_(parameter, std=0.05)
    after = next_token(tuned)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    tuned.save_pretrained(str(folder))
    yield {"prompts": prompts, "before": before, "after": after, "folder": folder}


def _llama_next_token(url: str, prompt: list[int]) -> dict[int, float]:
    """llama.cpp's top-10 next-token probabilities for a tokenized prompt."""
    body = {"prompt": prompt, "n_predict": 1, "n_probs": 10, "temperature": 0.0, "cache_prompt": False}
    request = urllib.request.Request(
        f"{url}/completion", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        (first,) = json.loads(response.read())["completion_probabilities"]
    return {int(t["id"]): math.exp(float(t["logprob"])) for t in first["top_logprobs"]}


def test_llama_cpp_serves_the_adapter_as_torch_computes_it(adapted: dict[str, Any]) -> None:
    config = LlamaServerConfig(MODEL, context=1024, threads=2, lora=(str(adapted["folder"]),))
    with LlamaServer(config) as server:
        served = [_llama_next_token(server.url, prompt) for prompt in adapted["prompts"]]
        assert server.describe()["lora"] == [str(adapted["folder"])]
    assert (adapted["folder"] / CONVERTED).is_file()  # converted beside the PEFT weights
    distances = []
    for llama, torch_after, torch_before in zip(served, adapted["after"], adapted["before"], strict=True):
        # over llama.cpp's top 10: distance to torch with the adapter, and to torch without it
        to_adapted = sum(abs(p - float(torch_after[i])) for i, p in llama.items())
        to_base = sum(abs(p - float(torch_before[i])) for i, p in llama.items())
        assert to_adapted < 0.1  # the same distribution, Q4 arithmetic aside…
        distances.append((to_adapted, to_base))
    adapted_total, base_total = (sum(column) for column in zip(*distances, strict=True))
    assert base_total > 3 * adapted_total  # …and not the base model's: an ignored adapter fails here


def test_an_adapter_llama_cpp_cannot_apply_is_refused_with_the_reason(tmp_path: Path) -> None:
    fetch_model(MODEL)
    base = resolve_model(MODEL).path
    folder = tmp_path / "dora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "use_dora": True, "lora_alpha": 8})
    )
    with pytest.raises(ValueError, match="DoRA"):
        write_lora_gguf(folder, base, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    result = CliRunner().invoke(app, ["models", "serve", MODEL, "--lora", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "neither a GGUF LoRA adapter nor a PEFT adapter folder" in result.output
