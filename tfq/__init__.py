"""tfq: 1-4 bit weights for Keras 3 models, packed into TFLite, run by a LiteRT delegate.

The public surface is small; heavy modules (TensorFlow, Keras) load lazily on
first use so that `python -m tfq inspect` starts fast.
"""

import importlib
import sys

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ADMMCallback": "tfq.callbacks",
    "PruningCallback": "tfq.callbacks",
    "quantize_model": "tfq.layers",
    "compress": "tfq.compression",
    "permute_channels": "tfq.permutation",
    "strip_training_state": "tfq.compression",
    "reestimate_batch_norm": "tfq.compression",
    "convert": "tfq.converter",
    "Interpreter": "tfq.runtime",
    "delegate_path": "tfq.runtime",
    "Binary": "tfq.quantizers",
    "Ternary": "tfq.quantizers",
    "PowerOfTwo": "tfq.quantizers",
}
_SUBMODULES = ("schemes", "quantizers", "kernels", "record", "admm", "pruning", "permutation", "callbacks", "layers",
               "compression", "datasets", "models", "converter", "runtime", "distribute", "testing")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


if "keras" in sys.modules:
    # Keras is loaded already, so registering tfq's saved classes (the
    # compression record, quantizers, quantized layers) costs nothing now, and
    # `keras.models.load_model` of a compressed model then finds them.
    importlib.import_module("tfq.layers")
    importlib.import_module("tfq.record")


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"tfq.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'tfq' has no attribute {name!r}")


def __dir__():
    return __all__
