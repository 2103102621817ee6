"""Teacher training as ReasonRank does it: cold-start SFT, then GRPO with the multi-view reward.

Both stages are trl's own trainers (``SFTTrainer`` with loss on the assistant turn only,
``GRPOTrainer`` with :class:`~rrdistill.distill.teacher.rewards.RankingReward`); this module only turns
a :class:`~rrdistill.distill.teacher.config.TeacherConfig` into their configs, chains the stages
and records what happened. The same code runs a tiny model on a laptop CPU and a 32B model
under ``accelerate launch`` with DeepSpeed ZeRO-3 and vLLM rollouts.

Layout of ``output_dir``::

    base/        the tiny model built from its config (tiny configs only)
    sft/         SFT checkpoints (resumable); sft/final/ the merged SFT model
    grpo/        GRPO checkpoints (resumable)
    final/       the teacher: model + tokenizer (with chat template) + rrdistill_teacher.json
    training_summary.json

A stage is complete when its ``rrdistill_stage.json`` marker exists (written after the model):
``--resume`` skips complete stages and continues an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rrdistill import __version__
from rrdistill.config import to_dict
from rrdistill.distill.backends import TransformersBackend
from rrdistill.distill.checkpoints import checkpoint_source
from rrdistill.distill.teacher.config import TeacherConfig
from rrdistill.distill.teacher.data import grpo_rows, sft_rows, split_heldout
from rrdistill.distill.teacher.eval import heldout_rewards
from rrdistill.distill.teacher.rewards import RankingReward
from rrdistill.distill.teacher.samples import TeacherSample, read_teacher_samples
from rrdistill.extras import require
from rrdistill.hf_tokenizers import open_tokenizer
from rrdistill.io import atomic_writer
from rrdistill.prompts import PROMPT_VERSION, TokenTruncator

STAGE_MARKER = "rrdistill_stage.json"
TEACHER_MANIFEST = "rrdistill_teacher.json"


class StageExistsError(RuntimeError):
    """The output directory already holds training results and --resume was not given."""


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def _latest_checkpoint(directory: Path) -> str | None:
    """The newest *complete* checkpoint: ``trainer_state.json`` is written last, so a checkpoint
    that a kill cut short is passed over (transformers' own lookup would pick it and fail)."""
    if not directory.is_dir():
        return None
    complete = [
        (int(p.name.split("-", 1)[1]), p)
        for p in directory.glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return str(max(complete)[1]) if complete else None


def _is_complete(directory: Path) -> bool:
    return (directory / STAGE_MARKER).exists()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_writer(path) as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")


def assistant_only_rows(tokenizer: Any, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """SFT rows whose loss trl restricts to the assistant turn, and whether it does so by
    assistant masks (True) or as prompt/completion pairs (False).

    trl masks the assistant turns of chat templates it knows (Qwen2.5's among them) with
    ``assistant_only_loss``; for any other template the same chats go in prompt/completion form,
    where trl computes the loss on the completion only.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    try:
        masks = has_generation_markers(tokenizer.chat_template) or bool(get_training_chat_template(tokenizer))
    except (ValueError, NotImplementedError):
        masks = False
    if masks:
        return rows, True
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows], False


class TeacherTrainer:
    """Runs SFT → GRPO for one :class:`TeacherConfig`; :meth:`run` returns the training summary."""

    def __init__(self, config: TeacherConfig, *, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.out = Path(config.output_dir)
        self.torch = require("torch", "train", "teacher training")
        self.transformers = require("transformers", "train", "teacher training")
        require("trl", "train", "teacher training")
        accelerate = require("accelerate", "train", "teacher training")
        self.state = accelerate.PartialState()

    # -- setup ------------------------------------------------------------------------------

    def precision(self) -> dict[str, bool]:
        wanted = self.config.precision
        cuda = self.torch.cuda.is_available()
        if wanted == "auto":
            wanted = "bf16" if cuda and self.torch.cuda.is_bf16_supported() else "fp32"
        return {"bf16": wanted == "bf16", "fp16": wanted == "fp16"}

    def base_model(self) -> str:
        """The starting checkpoint: a checkpoint/hub name, a GGUF model converted once into a
        checkpoint (main process first, the others wait and reuse it), or the tiny model built once
        into ``base/``."""
        model = self.config.model
        if model.tiny is None:
            from rrdistill.distill.checkpoints import materialize_checkpoint

            source = str(model.name_or_path)
            base = materialize_checkpoint(source) if self.state.is_main_process else None
            self.state.wait_for_everyone()
            return str(base if base is not None else materialize_checkpoint(source))
        base = self.out / "base"
        if self.state.is_main_process and not _is_complete(base):
            from rrdistill.distill.tiny import build_tiny_model

            build_tiny_model(model.tiny, base)
            _write_json(base / STAGE_MARKER, {"stage": "base", "tiny": asdict(model.tiny)})
        self.state.wait_for_everyone()
        return str(base)

    def tokenizer(self, path: str) -> Any:
        tokenizer = open_tokenizer(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def samples(self) -> list[TeacherSample]:
        data = self.config.data
        samples = list(read_teacher_samples(data.train))
        if data.min_ndcg_self is not None:
            samples = [s for s in samples if s.ndcg_self is None or s.ndcg_self >= data.min_ndcg_self]
        if data.max_samples is not None:
            samples = samples[: data.max_samples]
        if len(samples) < 2:
            raise ValueError(f"{data.train}: need at least 2 teacher samples, found {len(samples)}")
        return samples

    def model_init_kwargs(self) -> dict[str, Any]:
        model = self.config.model
        kwargs: dict[str, Any] = {"dtype": model.dtype}
        if model.attn_implementation:
            kwargs["attn_implementation"] = model.attn_implementation
        return kwargs

    def peft_config(self) -> Any:
        lora = self.config.lora
        if not lora.enabled:
            return None
        peft = require("peft", "train", "LoRA training")
        return peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            layers_to_transform=lora.layers_to_transform,
            task_type="CAUSAL_LM",
        )

    def _common_args(self, stage_dir: Path) -> dict[str, Any]:
        return {
            "output_dir": str(stage_dir),
            "seed": self.config.seed,
            "report_to": self.config.report_to,
            "save_strategy": "steps",
            "gradient_checkpointing": self.config.model.gradient_checkpointing,
            "model_init_kwargs": self.model_init_kwargs(),
            **self.precision(),
        }

    def _save_stage(self, trainer: Any, start_path: str, final: Path, tokenizer: Any, info: dict) -> None:
        """Save the trained model to `final` (LoRA merged into its base), then the marker."""
        if self.config.lora.enabled:
            adapter = final.parent / f"{final.name}-adapter"
            trainer.save_model(str(adapter))
            self.state.wait_for_everyone()
            if self.state.is_main_process:
                peft = require("peft", "train", "merging LoRA adapters")
                base = self.transformers.AutoModelForCausalLM.from_pretrained(
                    start_path, **self.model_init_kwargs()
                )
                merged = peft.PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
                merged.save_pretrained(str(final))
                tokenizer.save_pretrained(str(final))
        else:
            trainer.save_model(str(final))
            if self.state.is_main_process:
                tokenizer.save_pretrained(str(final))
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            _write_json(final / STAGE_MARKER, info)
        self.state.wait_for_everyone()

    def _release(self, trainer: Any) -> None:
        """Free the trainer's model and optimizer before the next stage loads its own."""
        trainer.model = trainer.model_wrapped = trainer.optimizer = None
        del trainer
        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()

    # -- stages -----------------------------------------------------------------------------

    def mode_samples(self, train: list[TeacherSample], mode: str) -> list[TeacherSample]:
        """The samples a mode trains on. With both modes, the reasoning mode learns only from
        samples that carry reasoning (the fast mode covers the rest); a single mode takes all."""
        if mode != "reasoning" or len(self.config.sft_modes) == 1:
            return train
        reasoned = [s for s in train if s.reasoning]
        if not reasoned:
            raise ValueError(
                "no training sample carries reasoning: train modes [fast] only, or label with a reasoning teacher"
            )
        return reasoned

    def run_sft(self, start: str, train: list[TeacherSample], resume: bool) -> dict[str, Any]:
        trl = require("trl", "train", "SFT")
        stage_dir, final = self.out / "sft", self.out / "sft" / "final"
        tokenizer = self.tokenizer(start)
        truncate = TokenTruncator(self.config.data.max_passage_tokens, tokenizer)
        chats = [
            row
            for mode in self.config.sft_modes
            for row in sft_rows(self.mode_samples(train, mode), truncate, mode == "reasoning")
        ]
        rows, assistant_masks = assistant_only_rows(tokenizer, chats)
        sft = self.config.sft
        args = trl.SFTConfig(
            learning_rate=sft.learning_rate,
            num_train_epochs=sft.num_train_epochs,
            per_device_train_batch_size=sft.per_device_train_batch_size,
            gradient_accumulation_steps=sft.gradient_accumulation_steps,
            max_length=sft.max_length,
            warmup_ratio=sft.warmup_ratio,
            lr_scheduler_type=sft.lr_scheduler_type,
            weight_decay=sft.weight_decay,
            logging_steps=sft.logging_steps,
            save_steps=sft.save_steps,
            save_total_limit=sft.save_total_limit,
            assistant_only_loss=assistant_masks,
            **self._common_args(stage_dir),
            **sft.extra,
        )
        datasets = require("datasets", "train", "SFT")
        trainer = trl.SFTTrainer(
            model=start,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=self.peft_config(),
        )
        started = time.perf_counter()
        checkpoint = _latest_checkpoint(stage_dir) if resume else None
        result = trainer.train(resume_from_checkpoint=checkpoint)
        info = {
            "stage": "sft",
            "start": start,
            "samples": len(train),
            "rows": len(rows),
            "modes": self.config.sft_modes,
            "loss_mask": "assistant_only" if assistant_masks else "completion_only",
            "resumed_from": checkpoint,
            "global_steps": result.global_step,
            "train_loss": result.training_loss,
            "metrics": result.metrics,
            "log_history": trainer.state.log_history,
            "seconds": time.perf_counter() - started,
        }
        self._save_stage(trainer, start, final, tokenizer, info)
        self._release(trainer)
        return info

    def run_grpo(self, start: str, rows: list[dict[str, Any]], resume: bool) -> dict[str, Any]:
        trl = require("trl", "train", "GRPO")
        datasets = require("datasets", "train", "GRPO")
        stage_dir, final = self.out / "grpo", self.out / "final"
        tokenizer = self.tokenizer(start)
        grpo = self.config.grpo
        vllm: dict[str, Any] = {}
        if grpo.use_vllm:
            vllm = {
                "use_vllm": True,
                "vllm_mode": grpo.vllm_mode,
                "vllm_gpu_memory_utilization": grpo.vllm_gpu_memory_utilization,
                "vllm_tensor_parallel_size": grpo.vllm_tensor_parallel_size,
            }
            if grpo.vllm_server_base_url:
                vllm["vllm_server_base_url"] = grpo.vllm_server_base_url
        args = trl.GRPOConfig(
            learning_rate=grpo.learning_rate,
            num_train_epochs=grpo.num_train_epochs,
            max_steps=grpo.max_steps,
            num_generations=grpo.num_generations,
            per_device_train_batch_size=grpo.per_device_train_batch_size,
            gradient_accumulation_steps=grpo.gradient_accumulation_steps,
            beta=grpo.beta,
            temperature=grpo.temperature,
            top_p=grpo.top_p,
            max_completion_length=grpo.max_completion_length,
            logging_steps=grpo.logging_steps,
            save_steps=grpo.save_steps,
            save_total_limit=grpo.save_total_limit,
            **vllm,
            **self._common_args(stage_dir),
            **grpo.extra,
        )
        trainer = trl.GRPOTrainer(
            model=start,
            reward_funcs=[RankingReward(grpo.rbo_p, reasoning=self.config.reasoning)],
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=self.peft_config(),
        )
        started = time.perf_counter()
        checkpoint = _latest_checkpoint(stage_dir) if resume else None
        result = trainer.train(resume_from_checkpoint=checkpoint)
        logged = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        info = {
            "stage": "grpo",
            "start": start,
            "prompts": len(rows),
            "resumed_from": checkpoint,
            "global_steps": result.global_step,
            "metrics": result.metrics,
            "logged_reward_first": logged[0] if logged else None,
            "logged_reward_last": logged[-1] if logged else None,
            "log_history": trainer.state.log_history,
            "seconds": time.perf_counter() - started,
        }
        self._save_stage(trainer, start, final, tokenizer, info)
        self._release(trainer)
        return info

    def evaluate(self, path: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Held-out reward distribution of the checkpoint at `path` (main process only).

        Kept in ``evaluations.json`` beside the stages, keyed by checkpoint, and reused while
        the checkpoint's stage marker is unchanged: a resumed run does not generate again.
        """
        report = self._evaluate_main(path, rows) if rows and self.state.is_main_process else None
        self.state.wait_for_everyone()
        return report

    def _evaluate_main(self, path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        cache_path = self.out / "evaluations.json"
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.exists() else {}
        marker = Path(path) / STAGE_MARKER
        stamp = marker.read_text(encoding="utf-8") if marker.exists() else None
        key = str(Path(path).resolve())
        wanted_qids = [r["qid"] for r in rows]
        cached = cache.get(key)
        if cached and stamp is not None and cached["stamp"] == stamp and cached["qids"] == wanted_qids:
            return {**cached["report"], "reused": True}
        budget = self.config.evaluation.max_new_tokens or self.config.grpo.max_completion_length
        backend = TransformersBackend(path, batch_size=self.config.evaluation.batch_size)
        report = heldout_rewards(
            backend,
            rows,
            max_new_tokens=budget,
            rbo_p=self.config.grpo.rbo_p,
            samples_per_window=self.config.evaluation.samples_per_window,
            temperature=self.config.grpo.temperature,
            seed=self.config.seed,
        )
        del backend
        cache[key] = {"stamp": stamp, "qids": wanted_qids, "report": report}
        _write_json(cache_path, cache)
        return report

    def manifest(self, base: str, samples: int) -> dict[str, Any]:
        return {
            "kind": "listwise-teacher",
            "prompt_version": PROMPT_VERSION,
            "reasoning": self.config.reasoning,
            "modes": self.config.sft_modes,
            "max_passage_tokens": self.config.data.max_passage_tokens,
            "base_model": base,
            "base_source": checkpoint_source(base) or {"name_or_path": self.config.model.name_or_path},
            "training_data": self.config.data.train,
            "training_samples": samples,
            "stages": [s for s in ("sft", "grpo") if getattr(self.config, s).enabled],
            "rrdistill": __version__,
        }

    def check_output_dir(self, resume: bool) -> None:
        if resume:
            return
        existing = [p.name for p in (self.out / "sft", self.out / "grpo", self.out / "final") if p.exists()]
        if existing:
            raise StageExistsError(
                f"{self.out} already holds {', '.join(existing)}: pass --resume to continue it, "
                "or choose another output_dir"
            )

    def run(self, *, resume: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        self.check_output_dir(resume)
        self.out.mkdir(parents=True, exist_ok=True)
        self.transformers.set_seed(self.config.seed)
        base = self.base_model()
        samples = self.samples()
        splits = split_heldout(samples, self.config.data.heldout)
        summary: dict[str, Any] = {
            "config": to_dict(self.config),
            "config_path": self.config_path,
            "samples": {"train": len(splits.train), "heldout": len(splits.heldout)},
            "heldout_qids": [s.qid for s in splits.heldout],
            "device": "cuda" if self.torch.cuda.is_available() else "cpu",
            "processes": self.state.num_processes,
            "precision": self.precision(),
        }
        current = base
        sft_final = self.out / "sft" / "final"
        if self.config.sft.enabled:
            if _is_complete(sft_final):
                summary["sft"] = {"skipped": "complete", **json.loads((sft_final / STAGE_MARKER).read_text())}
            else:
                summary["sft"] = self.run_sft(current, splits.train, resume)
            current = str(sft_final)
        final = self.out / "final"
        tokenizer = self.tokenizer(current)
        truncate = TokenTruncator(self.config.data.max_passage_tokens, tokenizer)
        heldout = grpo_rows(splits.heldout, truncate, self.config.reasoning)
        if self.config.grpo.enabled:
            summary["reward_before_grpo"] = self.evaluate(current, heldout)
            if _is_complete(final):
                summary["grpo"] = {"skipped": "complete", **json.loads((final / STAGE_MARKER).read_text())}
            else:
                rows = grpo_rows(splits.train, truncate, self.config.reasoning)
                summary["grpo"] = self.run_grpo(current, rows, resume)
            summary["reward_after_grpo"] = self.evaluate(str(final), heldout)
        elif self.state.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(current, final)
            summary["reward_after_sft"] = self.evaluate(str(final), heldout)
        if self.state.is_main_process:
            _write_json(final / TEACHER_MANIFEST, self.manifest(base, len(samples)))
            summary["checkpoint"] = str(final)
            summary["seconds"] = time.perf_counter() - started
            _write_json(self.out / "training_summary.json", summary)
        self.state.wait_for_everyone()
        return summary
