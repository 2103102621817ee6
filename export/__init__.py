"""Export (``rrdistill.export``): Optimum ONNX export, quantization, TensorRT engines and the
self-describing bundles the runtime loads, each checked for parity against its source model.

Needs the ``[export]`` extra (``[gpu]`` for TensorRT); heavy imports happen inside the functions.
"""
