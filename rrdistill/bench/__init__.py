"""``rrdistill bench``: the runtime measured side by side with its peers on the same model and machine.

Each system (the rrdistill runtime on its bundles, sentence-transformers' ``CrossEncoder`` on torch
and on its own ONNX backend, FlashRank on the same ONNX files) runs in its own fresh interpreter
(:mod:`rrdistill.bench.worker`), so import time, load time and peak RSS belong to it alone. The
parent (:mod:`rrdistill.bench.runner`) prepares the data and the peers' model files, measures the
machine's own GEMM peak (:mod:`rrdistill.bench.gemm`), counts model FLOPs from the config
(:mod:`rrdistill.bench.flops`), checks the targets (:mod:`rrdistill.bench.targets`) and reports
(:mod:`rrdistill.bench.report`, :mod:`rrdistill.bench.plot`).

Importing this package is free: every heavy library is imported inside the worker that needs it.
"""
