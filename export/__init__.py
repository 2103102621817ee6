"""Export (``rrdistill.export``): Optimum ONNX export, quantization, TensorRT engines and the
self-describing bundles the runtime loads, each checked for parity against its source model.

Needs the ``[export]`` extra (``[gpu]`` for TensorRT); heavy imports happen inside the functions,
so importing this package (the runtime does, for the bundle format) stays cheap.
"""


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why and what to change."""
