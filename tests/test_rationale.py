"""Evidence rationales: what a scoring teacher's order can truthfully be explained by."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rrdistill.distill.students.rationale import content_words, evidence_rationale


def test_content_words_drop_function_words_and_keep_first_use_order() -> None:
    assert content_words("The role of p53 in the apoptosis of T-cells, and p53 again") == [
        "role",
        "p53",
        "apoptosis",
        "t-cells",
    ]
    assert content_words("of the and") == []


def test_rationale_follows_the_order_and_names_the_shared_terms() -> None:
    query = "Does vitamin D supplementation reduce fracture risk?"
    passages = [
        "Calcium intake in adolescents.",
        "Vitamin D supplementation and fracture risk in older adults.",
        "Fractures of the hip after falls.",
        "Solar panels on rooftops.",
    ]
    text = evidence_rationale(query, passages, [1, 2, 0, 3])
    assert text.startswith("Key terms: vitamin, supplementation, reduce, fracture, risk.")
    assert "Most relevant: [2] covers vitamin, supplementation, fracture, risk." in text
    assert "Next: [3] covers fracture." in text  # "fractures" shares the stem
    assert "Next: [1] matches the topic without the exact terms." in text
    assert text.endswith("[4] shares no key terms and goes last.")
    two = evidence_rationale(query, passages, [1, 2, 3, 0], head=1)
    assert two.endswith("[4], [1] share no key terms and go last.")


def test_identifiers_always_name_real_positions_in_rank_order() -> None:
    rng = np.random.default_rng(3)
    words = ["cell", "gene", "tumor", "protein", "risk", "dose", "mouse", "brain"]
    for _ in range(200):
        n = int(rng.integers(1, 12))
        passages = [" ".join(rng.choice(words, size=int(rng.integers(0, 6)))) for _ in range(n)]
        order = [int(i) for i in rng.permutation(n)]
        text = evidence_rationale(" ".join(rng.choice(words, size=3)), passages, order)
        named = [int(x) for x in re.findall(r"\[(\d+)\]", text)]
        assert all(1 <= x <= n for x in named) and len(set(named)) == len(named)
        head = re.findall(r"(?:Most relevant|Next): \[(\d+)\]", text)
        assert [int(x) - 1 for x in head] == order[: len(head)]


def test_an_order_that_is_not_a_permutation_is_refused() -> None:
    with pytest.raises(ValueError, match="permutation"):
        evidence_rationale("q", ["a", "b"], [0, 0])
