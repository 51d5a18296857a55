"""Quantized convolutions: `Conv1D`, `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`, `Conv2DTranspose`."""

import keras
from keras import ops

from tfq.layers.base import QuantizedKernels


def _geometry(layer):
    """The layer's convolution arguments of `keras.ops` (strides, padding, dilation, data format)."""
    return dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate,
                data_format=layer.data_format)


def _bias_and_activation(layer, outputs):
    """The epilogue every Keras convolution applies after the convolution op."""
    if layer.use_bias:
        rank = len(outputs.shape) - 2
        channels = layer.bias.shape[0]
        if layer.data_format == "channels_last":
            shape = (1,) * (rank + 1) + (channels,)
        else:
            shape = (1, channels) + (1,) * rank
        outputs = ops.add(outputs, ops.reshape(layer.bias, shape))
    if layer.activation is not None:
        return layer.activation(outputs)
    return outputs


class _QuantConv(QuantizedKernels):
    """The forward pass of `Conv1D` and `Conv2D` (groups included) on the projected kernel."""

    def call(self, inputs):
        padding = self.padding
        if padding == "causal":  # Conv1D only: pad the past so output t sees inputs up to t
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            time_axis = 1 if self.data_format == "channels_last" else 2
            pads = [[0, 0], [0, 0], [0, 0]]
            pads[time_axis] = [left, 0]
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        kernel = self.project("kernel", self.kernel)
        return _bias_and_activation(self, ops.conv(inputs, kernel, **dict(_geometry(self), padding=padding)))


@keras.saving.register_keras_serializable(package="tfq")
class QuantConv1D(_QuantConv, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with a low-bit kernel (`scheme`, optional `mask`)."""


@keras.saving.register_keras_serializable(package="tfq")
class QuantConv2D(_QuantConv, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a low-bit kernel (`scheme`, optional `mask`)."""


@keras.saving.register_keras_serializable(package="tfq")
class QuantDepthwiseConv2D(QuantizedKernels, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a low-bit kernel; one scale per output channel (C * multiplier)."""

    def call(self, inputs):
        kernel = self.project("kernel", self.kernel)
        return _bias_and_activation(self, ops.depthwise_conv(inputs, kernel, **_geometry(self)))


@keras.saving.register_keras_serializable(package="tfq")
class QuantSeparableConv2D(QuantizedKernels, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with both kernels low-bit."""

    def call(self, inputs):
        depthwise = self.project("depthwise_kernel", self.depthwise_kernel)
        pointwise = self.project("pointwise_kernel", self.pointwise_kernel)
        return _bias_and_activation(self, ops.separable_conv(inputs, depthwise, pointwise, **_geometry(self)))


@keras.saving.register_keras_serializable(package="tfq")
class QuantConv2DTranspose(QuantizedKernels, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` with a low-bit kernel (channels on axis -2)."""

    def call(self, inputs):
        kernel = self.project("kernel", self.kernel)
        outputs = ops.conv_transpose(inputs, kernel, output_padding=self.output_padding, **_geometry(self))
        return _bias_and_activation(self, outputs)
