"""In-set test models: check a tfq deployment without training anything.

A model whose weights lie exactly in a tfq set converts to every tfq custom
op in seconds, so these helpers answer "does the delegate on this machine
(this CPU, this build of `libtfq_delegate.so`, this LiteRT) compute what
Keras computes?" before a real model is deployed (docs/converter.md,
"Checking a deployment"). tfq's own tests and benchmarks use them too.

- `random_compressed_model(scheme, kind)`: a small Keras model (a CNN with
  Conv2D, DepthwiseConv2D, 1x1 Conv2D and Dense; a MobileNet-style ReLU6
  chain; or an MLP) whose kernels are `scale[c] * level`, with optional
  sparsity. `random_compressed_tflite` also converts it.
- `set_in_set_weights(model, scheme)`: the same for any model's Dense, Conv2D,
  DepthwiseConv2D and Conv2DTranspose kernels (e.g. to time a real
  architecture without training it).
- `in_set_kernel`, `random_levels`: single in-set arrays.
- `run_with_delegate(tflite_bytes, x)`: runs a converted model image by image
  through `tfq.Interpreter`.
"""

import numpy as np

from tfq import schemes


def random_levels(shape, scheme, rng, sparsity=None):
    """Random levels of a scheme; `sparsity` sets the fraction of zeros (not binary)."""
    table = schemes.get(scheme).code_table()  # code order, as the levels have always been drawn
    levels = rng.choice(table[np.isfinite(table) & (table != 0)].astype(np.float64), size=shape)
    if scheme != "binary":
        p = 0.3 if sparsity is None else sparsity
        levels = np.where(rng.random(shape) < p, 0.0, levels)
    return levels.astype(np.float32)


def in_set_kernel(shape, scheme, rng, per_channel=True, channel_axes=(-1,), sparsity=None,
                  scale_range=(0.02, 0.2)):
    """A float32 kernel whose every output channel is scale[c] * level.

    Args:
      shape: kernel shape (Keras layout).
      scheme: one of tfq.schemes.NAMES.
      rng: numpy Generator.
      per_channel: one scale per output channel (else one for the tensor).
      channel_axes: axes that index output channels (DepthwiseConv2D: (-2, -1)).
    """
    levels = random_levels(shape, scheme, rng, sparsity)
    cshape = [1] * len(shape)
    for axis in channel_axes:
        cshape[axis] = shape[axis]
    if per_channel:
        scale = rng.uniform(*scale_range, size=cshape)
    else:
        scale = np.full(cshape, rng.uniform(*scale_range))
    return (levels * scale.astype(np.float32)).astype(np.float32)


def set_in_set_weights(model, scheme, seed=0, per_channel=True, sparsity=None):
    """Replaces the kernels of Dense / Conv2D / DepthwiseConv2D / Conv2DTranspose layers by in-set values.

    `scheme` may be a name or a dict {layer name: scheme}. Biases become small
    random floats. Returns the model.
    """
    import keras
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        want = scheme.get(layer.name) if isinstance(scheme, dict) else scheme
        if want is None:
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            axes = (-2, -1)
            kernel = layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            axes = (-1,)
            kernel = layer.kernel
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            axes = (-2,)                 # kernel [KH, KW, out, in]: output channels second to last
            kernel = layer.kernel
        else:
            continue
        kernel.assign(in_set_kernel(tuple(kernel.shape), want, rng, per_channel, axes, sparsity))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.05, size=tuple(layer.bias.shape)).astype(np.float32))
    return model


def small_cnn(input_shape=(12, 12, 3), classes=10, activation="relu", batch_norm=False,
              depth_multiplier=2, name="tfq_test_cnn"):
    """Conv2D -> DepthwiseConv2D -> Conv2D(1x1) -> Dense: every tfq custom op once."""
    import keras
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=not batch_norm, name="conv")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation(activation)(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=depth_multiplier,
                                     activation=activation, name="dwconv")(x)
    x = keras.layers.Conv2D(12, 1, activation="relu6", name="pwconv")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def relu6_chain(input_shape=(10, 10, 4), classes=10, extra_output=False, name="tfq_test_chain"):
    """MobileNet-style ReLU6 chain: conv -> depthwise -> 1x1 -> depthwise/2 -> linear 1x1 -> Dense.

    Every ReLU6 convolution there feeds exactly one convolution: the delegate
    runs the five as one partition with int8 hand-over. With extra_output the
    first convolution's output is also a model output (then it must stay float).
    """
    import keras
    inputs = keras.Input(input_shape)
    first = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw1")(first)
    x = keras.layers.Conv2D(12, 1, activation="relu6", name="expand")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6", name="dw2")(x)
    x = keras.layers.Conv2D(6, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inputs, [outputs, first] if extra_output else outputs, name=name)


def residual_cnn(input_shape=(9, 7, 8), classes=10, extra_output=False, name="tfq_test_residual"):
    """ResNet/MobileNetV2-style residual additions, every form the delegate fuses or refuses.

    conv -> conv + input (ReLU after the add: ADD with fused RELU, the skip
    a graph input); a ReLU6 chain (1x1 -> depthwise -> linear 1x1) + the
    previous sum (ADD without activation, its convolution at the end of an
    int8 hand-over chain); a strided 1x1 convolution + a strided 1x1
    shortcut convolution (ReLU6 after the add: both inputs convolutions);
    a sum + a constant (not fused: constant input); global pooling, Dense.
    With extra_output the second convolution's output is also a model output
    (the delegate must then write it and add separately).
    """
    import keras
    c = input_shape[-1]
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(c, 3, padding="same", activation="relu", name="res_a")(inputs)
    b = keras.layers.Conv2D(c, 3, padding="same", name="res_b")(x)
    x = keras.layers.ReLU(name="relu_1")(keras.layers.Add(name="add_1")([b, inputs]))
    y = keras.layers.Conv2D(2 * c, 1, activation="relu6", name="expand")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(y)
    y = keras.layers.Conv2D(c, 1, name="project")(y)
    x = keras.layers.Add(name="add_2")([x, y])
    main = keras.layers.Conv2D(c + 4, 1, strides=2, name="main")(x)
    short = keras.layers.Conv2D(c + 4, 1, strides=2, name="shortcut")(x)
    x = keras.layers.ReLU(6.0, name="relu6_3")(keras.layers.Add(name="add_3")([main, short]))
    x = keras.layers.Rescaling(1.0, offset=0.25, name="add_const")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inputs, [outputs, b] if extra_output else outputs, name=name)


def random_compressed_model(scheme="ternary", kind="cnn", seed=0, per_channel=True,
                            sparsity=None, input_shape=None, batch_norm=False):
    """A small Keras model whose weighted layers lie exactly in `scheme`.

    Args:
      scheme: a name of tfq.schemes.NAMES (or {layer name: scheme name}).
      kind: "cnn" (Conv2D, DepthwiseConv2D, 1x1 Conv2D, Dense), "chain" /
        "chain_extra_output" (relu6_chain), "residual" / "residual_extra_output"
        (residual_cnn) or "mlp" (three Dense layers, 784-300-100-10 by default).
      seed: for weights and biases.
      per_channel: per-channel scales (else per-tensor).
      sparsity: fraction of zero levels (ternary/pow2 only).
      input_shape: overrides the default input shape.
      batch_norm: adds a BatchNormalization with random statistics after the
        first convolution (the TFLite converter folds it into the weights).
    """
    import keras
    if kind == "cnn":
        model = small_cnn(input_shape or (12, 12, 3), batch_norm=batch_norm)
    elif kind in ("chain", "chain_extra_output"):
        model = relu6_chain(input_shape or (10, 10, 4), extra_output=kind == "chain_extra_output")
    elif kind in ("residual", "residual_extra_output"):
        model = residual_cnn(input_shape or (9, 7, 8), extra_output=kind == "residual_extra_output")
    elif kind == "mlp":
        inputs = keras.Input(input_shape or (784,))
        x = keras.layers.Dense(300, activation="relu", name="fc1")(inputs)
        x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
        model = keras.Model(inputs, keras.layers.Dense(10, name="fc3")(x), name="tfq_test_mlp")
    else:
        raise ValueError(f"unknown kind {kind!r}; valid: 'cnn', 'chain', 'chain_extra_output', "
                         "'residual', 'residual_extra_output', 'mlp'")
    set_in_set_weights(model, scheme, seed, per_channel, sparsity)
    if batch_norm:
        rng = np.random.default_rng(seed + 1)
        bn = model.get_layer("bn")
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        bn.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    return model


def random_compressed_tflite(scheme="ternary", kind="cnn", seed=0, portable=False, **kwargs):
    """Converts `random_compressed_model(...)`; returns (tflite bytes, keras model)."""
    from tfq.converter import convert
    model = random_compressed_model(scheme, kind, seed, **kwargs)
    return convert(model, portable=portable), model


def run_with_delegate(tflite_bytes, x):
    """Runs a converted model image by image through `tfq.Interpreter`; returns the stacked outputs."""
    from tfq.runtime import Interpreter

    interp = Interpreter(model_content=bytes(tflite_bytes))
    interp.allocate_tensors()
    in_index = interp.get_input_details()[0]["index"]
    out_index = interp.get_output_details()[0]["index"]
    out = []
    for row in x:
        interp.set_tensor(in_index, row[None])
        interp.invoke()
        out.append(interp.get_tensor(out_index)[0].copy())
    return np.stack(out)
