"""Held-out reward reports: how a checkpoint scores under the GRPO reward before and after training.

The report is what ``training_summary.json`` records for each stage: the distribution (mean,
spread, quantiles) of :func:`~rrdistill.distill.teacher.rewards.ranking_reward` over held-out windows,
for greedy answers and for answers sampled at the rollout temperature (what GRPO optimises),
with the shares of format failures (−1) and invalid permutations (0).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from rrdistill.distill.backends import SamplingParams, TransformersBackend
from rrdistill.distill.teacher.rewards import FORMAT_PENALTY, ranking_reward


def reward_distribution(rewards: Sequence[float]) -> dict[str, Any]:
    """Mean, spread and quantiles of rewards, plus the share of format failures (−1) and of
    invalid permutations (0: a valid permutation always scores > 0 through RBO)."""
    if not rewards:
        return {"count": 0}
    values = sorted(rewards)

    def quantile(q: float) -> float:
        position = q * (len(values) - 1)
        low, high = math.floor(position), math.ceil(position)
        return values[low] + (values[high] - values[low]) * (position - low)

    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "min": values[0],
        "p10": quantile(0.10),
        "p25": quantile(0.25),
        "median": quantile(0.5),
        "p75": quantile(0.75),
        "p90": quantile(0.90),
        "max": values[-1],
        "format_failures": sum(v == FORMAT_PENALTY for v in values) / len(values),
        "invalid_permutations": sum(v == 0.0 for v in values) / len(values),
    }


def _scored(
    backend: TransformersBackend, rows: Sequence[dict[str, Any]], params: SamplingParams, rbo_p: float
) -> tuple[list[float], list[int]]:
    results = backend.generate([r["prompt"] for r in rows], params)
    rewards = [
        ranking_reward(
            res.text or "", r["n"], set(r["relevant"]), list(r["reference"]), rbo_p, r.get("reasoning", True)
        )
        for res, r in zip(results, rows, strict=True)
    ]
    return rewards, [res.completion_tokens for res in results if res.completion_tokens is not None]


def heldout_rewards(
    backend: TransformersBackend,
    rows: Sequence[dict[str, Any]],
    *,
    max_new_tokens: int,
    rbo_p: float = 1.0,
    samples_per_window: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out GRPO rows scored with the training reward: greedy completions, and (when
    `samples_per_window` > 0) sampled ones at the rollout temperature — what GRPO optimises."""
    greedy, tokens = _scored(backend, rows, SamplingParams(max_new_tokens=max_new_tokens), rbo_p)
    report: dict[str, Any] = {"greedy": reward_distribution(greedy)}
    report["greedy"]["mean_generated_tokens"] = statistics.fmean(tokens) if tokens else None
    report["greedy"]["per_window"] = {r["qid"]: v for r, v in zip(rows, greedy, strict=True)}
    if samples_per_window > 0:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        sampled, _ = _scored(backend, [r for r in rows for _ in range(samples_per_window)], params, rbo_p)
        report["sampled"] = reward_distribution(sampled)
        report["sampled"]["samples_per_window"] = samples_per_window
        report["sampled"]["temperature"] = temperature
    return report


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
