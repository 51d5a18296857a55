"""Quantized `Dense` and `Embedding`."""

import keras
from keras import ops

from tfq.layers.base import QuantizedKernels


@keras.saving.register_keras_serializable(package="tfq")
class QuantDense(QuantizedKernels, keras.layers.Dense):
    """`keras.layers.Dense` with a low-bit kernel (`scheme`, optional `mask`)."""

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.project("kernel", self.kernel))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package="tfq")
class QuantEmbedding(QuantizedKernels, keras.layers.Embedding):
    """`keras.layers.Embedding` with a low-bit table (one scale per output dimension)."""

    def call(self, inputs):
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        outputs = ops.take(self.project("embeddings", self.embeddings), inputs, axis=0)
        return ops.cast(outputs, dtype=self.compute_dtype)
