"""Model FLOPs of a BERT-family cross-encoder, counted from its ``config.json``.

Per sequence of ``L`` tokens (hidden ``h``, ``n`` layers, feed-forward width ``f``, ``c`` labels)::

    n · (2·L·(4h² + 2hf)  +  4·L²·h)  +  2h² + 2hc
         Q,K,V,O + FFN     QKᵀ and A·V    pooler/dense + classifier (on the first token only)

i.e. 2 FLOPs per multiply-add of every matrix product. Embedding lookups, LayerNorm, softmax,
GELU, biases and residual adds are not counted (they are O(L·h), a few percent at most). This is
exactly what ``torch.utils.flop_counter`` counts for the eager model (a test checks it).

A batch padded to ``width`` costs ``batch · flops(width)``: that is what the hardware executes
(*executed* FLOPs, used for the fraction of GEMM peak); the sum over the real lengths is the work
the answer needs (*useful* FLOPs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert")


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    labels: int = 1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EncoderShape:
        model_type = config.get("model_type", "")
        if model_type not in SUPPORTED:
            raise ValueError(
                f"FLOP counting supports BERT-family encoders ({', '.join(SUPPORTED)}), "
                f"not model_type={model_type!r}"
            )
        if model_type == "distilbert":
            keys = {"layers": "n_layers", "hidden": "dim", "intermediate": "hidden_dim", "heads": "n_heads"}
        else:
            keys = {
                "layers": "num_hidden_layers",
                "hidden": "hidden_size",
                "intermediate": "intermediate_size",
                "heads": "num_attention_heads",
            }
        missing = [key for key in keys.values() if key not in config]
        if missing:
            raise ValueError(f"config of a {model_type} model lacks {', '.join(missing)}")
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
        return cls(**{name: int(config[key]) for name, key in keys.items()}, labels=int(labels))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> EncoderShape:
        return cls.from_config(json.loads((Path(checkpoint) / "config.json").read_text()))

    @property
    def matmul_parameters(self) -> int:
        """Weights that take part in per-token matrix products (all layers)."""
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)

    def sequence_flops(self, length: int) -> int:
        """FLOPs to score one sequence of `length` tokens (see the module docstring)."""
        if length < 0:
            raise ValueError("length must be >= 0")
        if length == 0:
            return 0
        h = self.hidden
        linear = 2 * length * (4 * h * h + 2 * h * self.intermediate)
        attention = 4 * length * length * h
        return self.layers * (linear + attention) + 2 * h * h + 2 * h * self.labels

    def batch_flops(self, batch: int, width: int) -> int:
        """FLOPs of one padded batch (``batch`` rows of ``width`` tokens each)."""
        return batch * self.sequence_flops(width)

    def useful_flops(self, lengths: Iterable[int]) -> int:
        """FLOPs over the real, unpadded lengths."""
        return sum(self.sequence_flops(int(n)) for n in lengths)

    def executed_flops(self, shapes: Iterable[tuple[int, int]]) -> int:
        """FLOPs over padded ``(batch, width)`` shapes, as the model was actually run."""
        return sum(self.batch_flops(int(b), int(w)) for b, w in shapes)

    def to_json(self) -> dict[str, int]:
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "intermediate": self.intermediate,
            "heads": self.heads,
            "labels": self.labels,
            "matmul_parameters": self.matmul_parameters,
        }
