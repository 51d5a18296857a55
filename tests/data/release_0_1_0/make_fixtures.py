"""Writes the .keras files of tfq 0.1.0 that tests/test_compat.py loads and converts.

Run once with the 0.1.0 release installed (commit d858165); the files are
committed, so later releases are tested against what 0.1.0 users saved:
  - admm_mlp.keras: a Dense MLP trained with ADMMCallback (ternary on the middle layer)
  - compressed_cnn.keras: tfq.compress(..., "pow2_3bit") of a small CNN, data-free
  - quantized_layers.keras: tfq.quantize_model output (QuantConv2D, QuantDense with a mask)
  - every_quantized_layer.keras (+ .npz with inputs and outputs): the nine
    tfq.layers classes, most with masks (a full mask, True, a per-kernel dict)
"""

import os
import sys

import numpy as np
import keras

import tfq
import tfq.layers  # registers the Quant* classes for load_model

here = os.path.dirname(os.path.abspath(__file__))


def mlp():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, activation="relu", name="fc1"),
        keras.layers.Dense(24, activation="relu", name="fc2"),
        keras.layers.Dense(4, name="fc3"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, :4].argmax(1)).astype("int32")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[tfq.ADMMCallback("ternary", update_every=2)])
    return model


def cnn():
    keras.utils.set_random_seed(2)
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(3, name="fc2")(x)
    return keras.Model(inp, x)


def main():
    print("tfq", tfq.__version__, file=sys.stderr)
    mlp().save(os.path.join(here, "admm_mlp.keras"))
    small = tfq.compress(cnn(), "pow2_3bit", skip_first_last=False, verbose=0)
    small.save(os.path.join(here, "compressed_cnn.keras"))
    model = cnn()
    q = tfq.quantize_model(model, "ternary", layers={"conv2": True, "fc1": "binary"})
    q.save(os.path.join(here, "quantized_layers.keras"))


def expected_outputs():
    """Keras outputs of the three files under 0.1.0 on fixed inputs, and the .tflite op report."""
    rng = np.random.default_rng(7)
    out = {}
    for name, shape in (("admm_mlp", (3, 16)), ("compressed_cnn", (2, 12, 12, 1)), ("quantized_layers", (2, 12, 12, 1))):
        model = keras.models.load_model(os.path.join(here, name + ".keras"))
        x = rng.normal(size=shape).astype("float32")
        out[name + "_x"] = x
        out[name + "_y"] = model.predict(x, verbose=0)
        data = tfq.convert(model)
        out[name + "_schemes"] = np.array(sorted(f"{r.layer}:{r.scheme}" for r in data.report if r.scheme))
    np.savez(os.path.join(here, "expected.npz"), **out)


def every_quantized_layer():
    """The nine tfq.layers classes in one model; written with its outputs on fixed inputs."""
    import tfq.layers as QL

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)

    def mask(shape):
        return (rng.random(shape) > 0.3).astype("float32")

    image, seq, ids = keras.Input((8, 8, 3)), keras.Input((5, 3)), keras.Input((5,), dtype="int32")
    x = QL.QuantConv2D(4, 3, padding="same", scheme="ternary", mask=mask((3, 3, 3, 4)))(image)
    x = QL.QuantDepthwiseConv2D(3, depth_multiplier=2, scheme="pow2_3bit", mask=True)(x)
    x = QL.QuantSeparableConv2D(4, 3, scheme="binary", mask={"pointwise_kernel": mask((1, 1, 8, 4))})(x)
    x = keras.layers.Flatten()(QL.QuantConv2DTranspose(3, 3, strides=2, scheme="ternary")(x))
    y = QL.QuantConv1D(4, 3, padding="causal", scheme="ternary", mask=mask((3, 3, 4)))(seq)
    y = QL.QuantLSTM(6, return_sequences=True, scheme="ternary",
                     mask={"kernel": mask((4, 24)), "recurrent_kernel": mask((6, 24))})(y)
    y = QL.QuantGRU(5, scheme="pow2_3bit", mask=True)(y)
    z = keras.layers.Flatten()(QL.QuantEmbedding(11, 4, scheme="ternary", mask=mask((11, 4)))(ids))
    out = QL.QuantDense(3, scheme="ternary", mask=True)(keras.layers.Concatenate()([x, y, z]))
    model = keras.Model([image, seq, ids], out)
    model.save(os.path.join(here, "every_quantized_layer.keras"))
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), rng.normal(size=(2, 5, 3)).astype("float32"),
          rng.integers(0, 11, size=(2, 5)).astype("int32")]
    np.savez(os.path.join(here, "every_quantized_layer.npz"), image=xs[0], seq=xs[1], ids=xs[2],
             y=model.predict(xs, verbose=0))


if __name__ == "__main__":
    main()
    expected_outputs()
    every_quantized_layer()
