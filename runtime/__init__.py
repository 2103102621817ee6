"""The lean runtime (``rrdistill.runtime``): rerank with an exported bundle on onnxruntime +
tokenizers + numpy. Importing it must never import torch or transformers (a test checks it).

>>> from rrdistill.runtime import Reranker                        # doctest: +SKIP
>>> Reranker.load("bundle/").rerank("query", ["passage a", "passage b"], top_k=1)  # doctest: +SKIP
"""

from rrdistill.runtime.bundle import BundleError
from rrdistill.runtime.reranker import Reranker, RerankResult, RuntimeStats

__all__ = ["BundleError", "RerankResult", "Reranker", "RuntimeStats"]
