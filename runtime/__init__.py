"""The lean runtime (``rrdistill.runtime``): rerank with an exported bundle on onnxruntime +
tokenizers + numpy. Importing it must never import torch or transformers (a test checks it).
"""
