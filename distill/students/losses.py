"""The losses a cross-encoder student can learn a teacher's permutations with.

Every name maps to a sentence-transformers cross-encoder loss, except ``weighted-ranknet``
(Sun et al.'s RankGPT distillation loss), which that library lacks and :mod:`.weighted_ranknet`
adds on its LambdaLoss. Kept apart from the training code so the list can be read (config
validation, the CLI, benchmarks) without importing torch.
"""

from __future__ import annotations

from typing import Any

from rrdistill.extras import require

STUDENT_LOSSES = (
    "ranknet",
    "weighted-ranknet",
    "listnet",
    "listmle",
    "plistmle",
    "lambdaloss",
    "adr-mse",
    "margin-mse",
)
"""Listwise (ListNet, ListMLE, p-ListMLE, LambdaLoss, ADR-MSE), pairwise (RankNet, weighted RankNet)
and MarginMSE on the teacher's own scores."""


def student_loss(model: Any, loss: str) -> Any:
    """The sentence-transformers loss for `loss` (weighted RankNet is ours, on LambdaLoss)."""
    losses = require("sentence_transformers.cross_encoder.losses", "train", "cross-encoder distillation")
    if loss == "weighted-ranknet":
        from rrdistill.distill.students.weighted_ranknet import WeightedRankNetLoss

        return WeightedRankNetLoss(model)
    factories = {
        "ranknet": losses.RankNetLoss,
        "listnet": losses.ListNetLoss,
        "listmle": losses.ListMLELoss,
        "plistmle": losses.PListMLELoss,
        "lambdaloss": losses.LambdaLoss,
        "adr-mse": losses.ADRMSELoss,
        "margin-mse": losses.MarginMSELoss,
    }
    return factories[loss](model)


__all__ = ["STUDENT_LOSSES", "student_loss"]
