"""TFLite conversion with packed low-bit weights (docs/format.md, docs/converter.md).

`convert(model, portable=False)` is exported as `tfq.convert`. Submodules:
`format` (packing and custom options), `sets` (set detection), `rewrite`
(flatbuffer rewriting), `portable`, `reference` (NumPy executor),
`inspect`. In-set test models, to check a deployment, are in `tfq.testing`.
"""

from tfq.converter.format import CUSTOM_CODES, FORMAT_VERSION, SUPPORTED_VERSIONS
from tfq.converter.rewrite import ConversionResult, OpReport, convert, rewrite_tflite
from tfq.converter.tflite_io import TFLiteFileError

__all__ = ["convert", "rewrite_tflite", "ConversionResult", "OpReport", "TFLiteFileError",
           "CUSTOM_CODES", "FORMAT_VERSION", "SUPPORTED_VERSIONS"]
