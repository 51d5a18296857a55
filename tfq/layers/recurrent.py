"""Quantized `LSTM` and `GRU`: the cells hold the kernels and project them in their step."""

import keras
from keras import ops

from tfq.layers.base import QuantizedKernels, with_quantization, with_scheme_object


def _masked(x, masks, gate):
    """`x` times its dropout mask for `gate` (masks: None, one tensor, or one per gate)."""
    if masks is None:
        return x
    return x * (masks[gate] if isinstance(masks, (list, tuple)) else masks)


def _gates(x, kernel, masks, count):
    """`x @ kernel` for `count` gate blocks; one product per block only when each gate has its own mask."""
    if isinstance(masks, (list, tuple)):
        blocks = ops.split(kernel, count, axis=1)
        return ops.concatenate([ops.matmul(_masked(x, masks, g), k) for g, k in enumerate(blocks)], axis=-1)
    return ops.matmul(_masked(x, masks, 0), kernel)


class _QuantCell(QuantizedKernels):
    """A recurrent cell with both kernels projected.

    The kernel table (`tfq.kernels`) lists the LSTM and GRU layers; the
    variables live in their cells.
    """

    def kernel_axes(self):
        return [("kernel", -1), ("recurrent_kernel", -1)]

    def dropout_masks(self, inputs, h_tm1, training):
        """The cell's (input, recurrent) dropout masks for this step, None where off."""
        dp = self.get_dropout_mask(inputs) if training and 0.0 < self.dropout < 1.0 else None
        rec = self.get_recurrent_dropout_mask(h_tm1) if training and 0.0 < self.recurrent_dropout < 1.0 else None
        return dp, rec


@keras.saving.register_keras_serializable(package="tfq")
class QuantLSTMCell(_QuantCell, keras.layers.LSTMCell):
    """LSTM cell with low-bit input and recurrent kernels: `keras.layers.LSTMCell`'s step on the projections."""

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        dp, rec = self.dropout_masks(inputs, h_tm1, training)
        z = ops.add(
            _gates(inputs, self.project("kernel", self.kernel), dp, 4),
            _gates(h_tm1, self.project("recurrent_kernel", self.recurrent_kernel), rec, 4),
        )
        if self.use_bias:
            z = ops.add(z, self.bias)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        c = f * c_tm1 + i * self.activation(z_c)
        o = self.recurrent_activation(z_o)
        h = o * self.activation(c)
        return h, [h, c]


@keras.saving.register_keras_serializable(package="tfq")
class QuantGRUCell(_QuantCell, keras.layers.GRUCell):
    """GRU cell with low-bit input and recurrent kernels: `keras.layers.GRUCell`'s step on the projections."""

    def call(self, inputs, states, training=False):
        h_tm1 = states[0] if keras.tree.is_nested(states) else states
        dp, rec = self.dropout_masks(inputs, h_tm1, training)
        kernel = self.project("kernel", self.kernel)
        recurrent = self.project("recurrent_kernel", self.recurrent_kernel)
        units = self.units
        x = _gates(inputs, kernel, dp, 3)
        recurrent_bias = None
        if self.use_bias:
            if self.reset_after:
                # bias is [input bias, recurrent bias], each over the three gates
                x = ops.add(x, self.bias[0])
                recurrent_bias = self.bias[1]
            else:
                x = ops.add(x, self.bias)
        x_z, x_r, x_h = ops.split(x, 3, axis=-1)
        if self.reset_after:
            inner = _gates(h_tm1, recurrent, rec, 3)
            if recurrent_bias is not None:
                inner = ops.add(inner, recurrent_bias)
            r_z, r_r, r_h = ops.split(inner, 3, axis=-1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            hh = self.activation(x_h + r * r_h)
        else:
            gate_masks = rec[:2] if isinstance(rec, (list, tuple)) else rec
            r_z, r_r = ops.split(_gates(h_tm1, recurrent[:, : 2 * units], gate_masks, 2), 2, axis=-1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            hh = self.activation(x_h + ops.matmul(r * _masked(h_tm1, rec, 2), recurrent[:, 2 * units :]))
        h = z * h_tm1 + (1 - z) * hh
        return h, ([h] if keras.tree.is_nested(states) else h)


class _QuantRNN:
    """An LSTM/GRU layer whose cell is the quantized one (`cell_class`)."""

    cell_class = None

    def __init__(self, units, *args, scheme="ternary", mask=None, **kwargs):
        super().__init__(units, *args, **kwargs)
        config = self.cell.get_config()
        config.update(scheme=scheme, mask=mask)
        self.cell = self.cell_class(**config)

    @property
    def scheme(self):
        return self.cell.scheme

    def quantized_weights(self):
        """See `QuantizedKernels.quantized_weights` (the cell's kernels)."""
        return self.cell.quantized_weights()

    def inner_loop(self, sequences, initial_state, mask, training=False):
        # Keras' fused LSTM/GRU path (cuDNN) would read the cell's float
        # kernels; the generic loop runs the cell's step.
        if keras.tree.is_nested(mask):
            mask = mask[0]
        return keras.layers.RNN.inner_loop(self, sequences, initial_state, mask, training=training)

    @property
    def initial_mask(self):
        return self.cell.initial_mask

    def get_config(self):
        return with_quantization(super().get_config(), self)

    @classmethod
    def from_config(cls, config):
        return cls(**with_scheme_object(config))


@keras.saving.register_keras_serializable(package="tfq")
class QuantLSTM(_QuantRNN, keras.layers.LSTM):
    """`keras.layers.LSTM` with low-bit kernels."""

    cell_class = QuantLSTMCell


@keras.saving.register_keras_serializable(package="tfq")
class QuantGRU(_QuantRNN, keras.layers.GRU):
    """`keras.layers.GRU` with low-bit kernels."""

    cell_class = QuantGRUCell
