"""Weighted RankNet for distilling a listwise teacher (Sun et al., EMNLP 2023, RankGPT distillation).

``L = Σ_{r_i < r_j} 1/(r_i + r_j) · log(1 + exp(s_j − s_i))``: every pair the teacher ordered is a
RankNet pair, and pairs near the top of the teacher's list weigh more. sentence-transformers has
RankNet and the LambdaLoss framework but not this weighting, so it is added as a LambdaLoss
weighting scheme; labels must be the reciprocal teacher ranks (``permutation_targets(n, "reciprocal")``).
The pair losses are averaged (sentence-transformers' reduction) instead of summed.
"""

from __future__ import annotations

from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder.losses import LambdaLoss
from sentence_transformers.cross_encoder.losses.lambda_loss import BaseWeightingScheme
from torch import Tensor, nn


class InverseRankSumScheme(BaseWeightingScheme):
    """Pair weight ``1/(r_i + r_j)`` with teacher ranks recovered from reciprocal-rank labels."""

    def forward(self, gain: Tensor, discount: Tensor, true_sorted: Tensor) -> Tensor:
        ranks = 1.0 / true_sorted.clamp(min=1e-12)  # padding (label 0) gets a huge rank, i.e. ~0 weight
        return 1.0 / (ranks[:, :, None] + ranks[:, None, :])


class WeightedRankNetLoss(LambdaLoss):
    def __init__(
        self,
        model: CrossEncoder,
        sigma: float = 1.0,
        eps: float = 1e-10,
        activation_fn: nn.Module | None = None,
        mini_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            model=model,
            weighting_scheme=InverseRankSumScheme(),
            sigma=sigma,
            eps=eps,
            reduction_log="natural",
            activation_fn=activation_fn or nn.Identity(),
            mini_batch_size=mini_batch_size,
        )

    @property
    def citation(self) -> str:
        return """
@inproceedings{sun2023chatgpt,
  title={Is ChatGPT Good at Search? Investigating Large Language Models as Re-Ranking Agents},
  author={Sun, Weiwei and Yan, Lingyong and Ma, Xinyu and Wang, Shuaiqiang and Ren, Pengjie and Chen, Zhumin and Yin, Dawei and Ren, Zhaochun},
  booktitle={EMNLP},
  year={2023}
}
"""


__all__ = ["InverseRankSumScheme", "WeightedRankNetLoss"]
