"""Distillation losses against their published formulas, on random lists."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from rrdistill.distill.students.targets import permutation_targets


def test_targets() -> None:
    assert permutation_targets(4) == [1.0, 0.5, 1 / 3, 0.25]
    assert permutation_targets(4, "linear") == [1.0, 0.75, 0.5, 0.25]
    graded = permutation_targets(25, "graded")
    assert (
        graded[:5] == [3.0] * 5
        and graded[5:10] == [2.0] * 5
        and graded[10:20] == [1.0] * 10
        and graded[20:] == [0.0] * 5
    )
    assert permutation_targets(0) == []
    with pytest.raises(ValueError, match="unknown target scheme"):
        permutation_targets(3, "softmax")  # type: ignore[arg-type]


def test_weighted_ranknet_equals_sun_et_al_formula(tiny_checkpoint: Path) -> None:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from rrdistill.distill.students.weighted_ranknet import WeightedRankNetLoss

    model = CrossEncoder(str(tiny_checkpoint), num_labels=1, device="cpu")
    loss_fn = WeightedRankNetLoss(model)
    rng = random.Random(0)
    words = ["cells", "protein", "cancer", "mice", "gene", "brain", "heart", "blood", "virus", "drug"]
    for _ in range(5):
        queries, docs, labels, teacher_ranks = [], [], [], []
        for _ in range(rng.randint(1, 3)):
            n = rng.randint(2, 7)
            queries.append(" ".join(rng.sample(words, 3)))
            docs.append([" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(n)])
            ranks = list(range(1, n + 1))
            rng.shuffle(ranks)  # docs are given in an order unrelated to the teacher's
            teacher_ranks.append(ranks)
            labels.append(torch.tensor([1.0 / r for r in ranks]))
        loss = loss_fn([queries, docs], labels)
        # The formula, on the model's own scores for the same pairs.
        terms = []
        with torch.no_grad():
            for query, passages, ranks in zip(queries, docs, teacher_ranks, strict=True):
                tokens = model.preprocess([(query, p) for p in passages])
                scores = model(tokens)["scores"].view(-1).tolist()
                for i in range(len(passages)):
                    for j in range(len(passages)):
                        if ranks[i] < ranks[j]:
                            terms.append(math.log1p(math.exp(scores[j] - scores[i])) / (ranks[i] + ranks[j]))
        assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_each_student_loss_is_the_library_class(tiny_checkpoint: Path) -> None:
    """Every loss name builds sentence-transformers' own class; only weighted RankNet is ours."""
    from sentence_transformers.cross_encoder import CrossEncoder, losses

    from rrdistill.distill.students.losses import STUDENT_LOSSES, student_loss
    from rrdistill.distill.students.weighted_ranknet import WeightedRankNetLoss

    expected = {
        "ranknet": losses.RankNetLoss,
        "listnet": losses.ListNetLoss,
        "listmle": losses.ListMLELoss,
        "plistmle": losses.PListMLELoss,
        "lambdaloss": losses.LambdaLoss,
        "adr-mse": losses.ADRMSELoss,
        "margin-mse": losses.MarginMSELoss,
    }
    assert set(STUDENT_LOSSES) == {*expected, "weighted-ranknet"}
    model = CrossEncoder(str(tiny_checkpoint), num_labels=1, device="cpu")
    for name, cls in expected.items():
        assert cls.__module__.startswith("sentence_transformers.") and type(student_loss(model, name)) is cls
    weighted = student_loss(model, "weighted-ranknet")
    assert type(weighted) is WeightedRankNetLoss and isinstance(weighted, losses.LambdaLoss)
