"""The lean runtime (``rrdistill.runtime``): rerank with an exported bundle on onnxruntime +
tokenizers + numpy. Importing it must never import torch or transformers (a test checks it).

:class:`Reranker` is the one interface; ``Reranker.load`` returns the cross-encoder, bi-encoder,
listwise or (built by hand) cascade implementation, all with the same ``rerank`` / ``rerank_many`` /
``stats``.

>>> from rrdistill.runtime import Reranker                        # doctest: +SKIP
>>> Reranker.load("bundle/").rerank("query", ["passage a", "passage b"], top_k=1)  # doctest: +SKIP
"""

from rrdistill.runtime.bi_encoder import BiEncoderReranker
from rrdistill.runtime.bundle import BundleError
from rrdistill.runtime.reranker import (
    ACTIVATIONS,
    Chunking,
    CrossEncoderReranker,
    RankedList,
    Reranker,
    RerankResult,
    RuntimeStats,
)

__all__ = [
    "ACTIVATIONS",
    "BiEncoderReranker",
    "BundleError",
    "Chunking",
    "CrossEncoderReranker",
    "RankedList",
    "RerankResult",
    "Reranker",
    "RuntimeStats",
]
