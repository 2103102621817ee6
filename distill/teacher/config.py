"""The teacher's training config: dataclasses that YAML files in ``configs/teacher/`` fill in.

Field names follow trl's ``SFTConfig``/``GRPOConfig`` where they mean the same thing, so trl's
documentation applies; ``extra`` passes any other trl field through unchanged (e.g.
``lr_scheduler_type``, ``max_grad_norm``). Scale-out (DeepSpeed ZeRO-3, multi-GPU) is chosen at
launch time with ``accelerate launch --config_file configs/accelerate/…``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rrdistill.distill.tiny import TinyModelConfig


@dataclass
class ModelConfig:
    name_or_path: str | None = None
    """A local checkpoint, a hub name (e.g. Qwen/Qwen2.5-7B-Instruct), a GGUF file or a registry
    name (``rrdistill models list``: dequantized once into a checkpoint); unused when `tiny` is set."""
    tiny: TinyModelConfig | None = None
    """Build a tiny Qwen2-shaped model from this config instead (tests, CPU demos)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    attn_implementation: str | None = None
    """e.g. flash_attention_2 on GPUs that have it; None lets transformers choose (sdpa)."""
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.name_or_path and model.tiny")


@dataclass
class DataConfig:
    train: str = ""
    """Teacher samples: rrdistill JSONL (``rrdistill synthesize``) or ReasonRank's released folder."""
    heldout: int = 16
    """Samples held out (chosen by a hash of the qid, so stable across runs) for the reward report."""
    max_samples: int | None = None
    max_passage_tokens: int = 512
    """Passages are cut to this many tokens of the model's tokenizer in every prompt."""
    min_ndcg_self: float | None = None
    """Drop samples whose self-consistency score is known and below this (re-filter at a new α)."""

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("data.train must name a teacher-sample file or folder")
        if self.heldout < 0:
            raise ValueError("data.heldout must be ≥ 0")


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 32
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    layers_to_transform: list[int] | None = None
    """Adapt only these decoder blocks (peft's field; default: all). On a CPU, adapting the top
    blocks alone stops the backward pass there: the blocks below run forward only."""


@dataclass
class SFTStageConfig:
    enabled: bool = True
    learning_rate: float = 5e-6
    num_train_epochs: float = 5.0
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_length: int | None = 16384
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GRPOStageConfig:
    enabled: bool = True
    learning_rate: float = 1e-6
    num_train_epochs: float = 1.0
    max_steps: int = -1
    num_generations: int = 8
    per_device_train_batch_size: int = 8
    """Completions per device per step; × devices × accumulation = prompts per step × num_generations."""
    gradient_accumulation_steps: int = 1
    beta: float = 0.001
    """KL coefficient against the reference (SFT) model."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 4096
    rbo_p: float = 1.0
    """RBO persistence in the reward (1.0 = ReasonRank's)."""
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("grpo.num_generations must be ≥ 2 (GRPO compares completions of one prompt)")


@dataclass
class EvaluationConfig:
    max_new_tokens: int | None = None
    """Generation budget for the held-out reward report (default: grpo.max_completion_length)."""
    batch_size: int = 8
    samples_per_window: int = 4
    """Sampled completions per held-out window (at grpo.temperature), besides the greedy one."""


@dataclass
class TeacherConfig:
    output_dir: str
    data: DataConfig
    model: ModelConfig
    lora: LoraConfig = field(default_factory=LoraConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seed: int = 42
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 on GPUs that support it, fp32 elsewhere (CPU)."""
    reasoning: bool = True
    """Train the reasoning format (think + answer); False trains the answer-only fast format."""
    modes: list[Literal["reasoning", "fast"]] | None = None
    """Prompt modes SFT trains on, each sample once per mode (default: the one `reasoning` picks).
    ``[reasoning, fast]`` makes one model with both modes (the listwise student); then the reasoning
    mode trains only on samples that carry reasoning."""
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def __post_init__(self) -> None:
        if not (self.sft.enabled or self.grpo.enabled):
            raise ValueError("enable at least one of sft and grpo")
        if self.modes is not None and (not self.modes or set(self.modes) - {"reasoning", "fast"}):
            raise ValueError("modes must list 'reasoning' and/or 'fast'")

    @property
    def sft_modes(self) -> list[str]:
        return list(self.modes) if self.modes else ["reasoning" if self.reasoning else "fast"]
