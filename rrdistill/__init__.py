"""rrdistill: distil a listwise reasoning reranker into compact edge rerankers."""

__version__ = "0.1.0"
