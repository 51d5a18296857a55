"""What every quantized layer shares: the scheme, the masks and the projection.

A quantized layer is the Keras layer it derives from, with the same float
variables under the same names; only its forward pass differs. `call` reads
the float ("shadow") kernel through `project`, which returns the kernel's
projection onto the scheme's set (masked entries zero) with a straight-through
gradient, so `fit` trains the float kernel as straight-through fine-tuning.
"""

import keras
import numpy as np

from tfq import quantizers
from tfq.kernels import supported_kernels


class QuantizedKernels:
    """Mixin for a Keras layer whose kernels are projected in the forward pass.

    Listed before the Keras class in the bases, it adds the `scheme` and
    `mask` constructor arguments and config keys, the mask variables (created
    after the Keras layer's own variables) and `quantized_weights`; the
    subclass's `call` reads each kernel through `project`.

    Args:
        *args, **kwargs: the Keras layer's constructor arguments.
        scheme: a `tfq.quantizers` identifier.
        mask: None, True (a mask of ones, to be set later), an initial 0/1
            array, or `{variable name: array}` for layers with two kernels.

    Attributes:
        scheme: the `tfq.quantizers.Quantizer` of every kernel of the layer.
        initial_mask: the `mask` argument: None, True (all ones), a 0/1 array,
            or a dict `{variable name: array}`.
    """

    def __init__(self, *args, scheme="ternary", mask=None, **kwargs):
        super().__init__(*args, **kwargs)
        q = quantizers.get(scheme)
        if q is None:
            raise ValueError(f"{type(self).__name__}: scheme is required; valid: {quantizers.names()}")
        if mask is not None and mask is not True and not isinstance(mask, (dict, np.ndarray, list)):
            if not hasattr(mask, "shape"):
                raise TypeError(f"{type(self).__name__}: mask must be None, True, an array or a dict, got {mask!r}")
        self.scheme = q
        self.initial_mask = mask

    def kernel_axes(self):
        """`[(variable name, channel axis)]` of the projected kernels (the layer is built)."""
        return [(spec.name, spec.channel_axis) for spec in supported_kernels(self)]

    def build(self, input_shape):
        """The Keras layer's build, then a non-trainable `<name>_mask` variable per kernel when masked.

        Raises:
            ValueError: an initial mask whose shape is not the kernel's.
        """
        super().build(input_shape)
        # Keras marks the layer built after this method returns; the kernel
        # table (`supported_kernels`) reads only built layers, and the
        # variables exist now.
        self.built = True
        mask = self.initial_mask
        if mask is None or mask is False:
            return
        for name, _ in self.kernel_axes():
            shape = tuple(getattr(self, name).shape)
            if isinstance(mask, dict):
                init = mask.get(name)
            else:
                init = None if mask is True else mask
            initializer = "ones"
            if init is not None:
                arr = np.asarray(init, dtype="float32")
                if arr.shape != shape:
                    raise ValueError(f"Layer {self.name!r}: mask for {name} has shape {arr.shape}, kernel has {shape}")
                initializer = keras.initializers.Constant(arr)
            setattr(self, f"{name}_mask",
                    self.add_weight(shape=shape, initializer=initializer, trainable=False, name=f"{name}_mask"))

    def mask_of(self, name):
        """The mask variable of kernel `name`, or None."""
        return getattr(self, f"{name}_mask", None)

    def project(self, name, kernel):
        """The forward-pass value of kernel `name`: its projection, straight-through to `kernel`."""
        axis = dict(self.kernel_axes())[name]
        mask = self.mask_of(name)
        # A tensor, read once: `convert_to_tensor` hands a variable back as
        # is, and then every use in the projection reads it again.
        w = keras.ops.copy(kernel)
        # Plain ops (jit=False): this runs inside the train step, which is
        # compiled as a whole, not as a separate XLA cluster.
        q, _ = self.scheme.project(
            w, mask=None if mask is None else keras.ops.convert_to_tensor(mask), channel_axis=axis, jit=False
        )
        return quantizers.straight_through(w, q)

    def quantized_weights(self):
        """`{variable name: (q, scale)}` as NumPy arrays: the kernels as the forward pass uses them."""
        out = {}
        for name, axis in self.kernel_axes():
            mask = self.mask_of(name)
            w = np.asarray(keras.ops.convert_to_numpy(getattr(self, name)))
            m = None if mask is None else np.asarray(keras.ops.convert_to_numpy(mask))
            out[name] = self.scheme.project(w, mask=m, channel_axis=axis)
        return out

    # Dense, Conv and Embedding save a fixed list of variables (for their own
    # int8 modes); a quantized layer saves every variable it owns, masks
    # included, in creation order: the layout of the files saved so far.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return with_quantization(super().get_config(), self)

    @classmethod
    def from_config(cls, config):
        return cls(**with_scheme_object(config))


def with_quantization(config, layer):
    """A copy of a Keras layer config with the quantized `layer`'s `scheme` and `mask` keys added.

    `mask` is True when the layer has (or will build) mask variables, so that
    `from_config` creates them before the saved values are loaded.
    """
    config = dict(config)
    config["scheme"] = keras.saving.serialize_keras_object(layer.scheme)
    config["mask"] = None if layer.initial_mask is None else True
    return config


def with_scheme_object(config):
    """A copy of a quantized layer's config with a serialized `scheme` turned back into its quantizer."""
    config = dict(config)
    if isinstance(config.get("scheme"), dict):
        config["scheme"] = quantizers.get(config["scheme"])
    return config
