"""A tiny Qwen2-shaped causal LM built from scratch, for CPU tests and demos without a model hub.

The model is a :class:`~transformers.Qwen2ForCausalLM` from a small config with random weights;
its tokenizer is a byte-level BPE trained with ``tokenizers`` on a local corpus (plus the
listwise prompt's own wording), with Qwen2.5's special tokens and its ChatML chat template. So
every code path that a Qwen2.5-7B teacher takes — chat template, assistant-only loss masking,
generation, checkpoint layout — runs unchanged on it, in seconds.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rrdistill.extras import require
from rrdistill.prompts import SYSTEM_PROMPT_FAST, build_messages, format_answer
from rrdistill.types import Passage

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2.5's: padding/document end, turn start, turn end (= the chat model's eos)."""
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
"""Whole tokens, but not special: generation must keep them when special tokens are skipped."""


@dataclass(frozen=True)
class TinyModelConfig:
    corpus: str = "data/scifact"
    """A BEIR folder (``corpus.jsonl``, ``queries.jsonl``) whose text trains the tokenizer."""
    max_documents: int = 2000
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0
    identifier_tokens: int = 0
    """Make the identifiers ``1..N`` whole tokens, so a listwise student can rank a window from the
    logits of its first answer token (FIRST). 0 leaves numbers to BPE."""


def qwen25_chat_template() -> str:
    """Qwen2.5's chat template, as trl ships it (trl recognises it and masks assistant turns)."""
    require("trl", "train", "the Qwen2.5 chat template")
    return (importlib.resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")


def _corpus_texts(folder: Path, max_documents: int) -> Iterator[str]:
    for name in ("corpus.jsonl", "queries.jsonl"):
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{path}: the tokenizer corpus must be a BEIR folder")
        with path.open(encoding="utf-8") as handle:
            for count, line in enumerate(handle):
                if name == "corpus.jsonl" and count >= max_documents:
                    break
                obj = json.loads(line)
                yield f"{obj.get('title') or ''} {obj.get('text') or ''}".strip()


def _prompt_texts() -> Iterator[str]:
    """The prompt and answer wording, so that the template's words and ``[12] >`` merge into few tokens."""
    passages = [Passage(str(i), f"passage number {i}") for i in range(20)]
    for n in (2, 5, 10, 20):
        for reasoning in (True, False):
            for message in build_messages("an example query", passages[:n], reasoning=reasoning):
                yield message["content"]
        order = list(range(n))[::-1]
        yield format_answer(order, "Passage [1] answers the query directly.")
        yield format_answer(order)
    yield SYSTEM_PROMPT_FAST


def build_tokenizer(config: TinyModelConfig) -> object:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen2.5's special tokens and chat template."""
    tokenizers = require("tokenizers", "train", "training the tiny tokenizer")
    transformers = require("transformers", "train", "training the tiny tokenizer")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def texts() -> Iterator[str]:
        yield from _prompt_texts()
        yield from _corpus_texts(Path(config.corpus), config.max_documents)

    tokenizer.train_from_iterator(texts(), trainer=trainer)
    extra = [*TAG_TOKENS, *(str(k) for k in range(1, config.identifier_tokens + 1))]
    tokenizer.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in extra])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_input_names=["input_ids", "attention_mask"],
        chat_template=qwen25_chat_template(),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(config: TinyModelConfig, output_dir: str | os.PathLike[str]) -> Path:
    """Write a randomly initialised tiny Qwen2 checkpoint (model, tokenizer, generation config)."""
    torch = require("torch", "train", "building the tiny model")
    transformers = require("transformers", "train", "building the tiny model")
    tokenizer = build_tokenizer(config)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model_config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=False,  # as the 7B/32B teachers; loaders never see a missing lm_head
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=endoftext,
    )
    torch.manual_seed(config.seed)
    model = transformers.Qwen2ForCausalLM(model_config)
    # Sampling by default, like Qwen2.5's own generation config: servers such as `transformers
    # serve` only sample when the checkpoint allows it (a request with temperature 0 is greedy).
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[im_end, endoftext], pad_token_id=endoftext, do_sample=True, temperature=1.0, top_p=1.0
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
