"""The layer graph of a model and what `tfq.compress` needs to know of its layers.

Producer/consumer links between layers (for the corrections, which look at a
layer's neighbours), the model copy `compress` works on, the kernel selection
(`tfq.kernels.select_kernels`) as `compress` uses it, and the properties of
layers that decide which corrections apply (linear, positive-homogeneous, ...).
"""

import numpy as np


def layer_kind(layer):
    return type(layer).__name__


def select_layers(model, scheme, layers, skip_first_last):
    """Resolves the policy with the core's `select_kernels` (same layers and axes as ADMM).

    Returns:
        ({layer name: quantizer}, {layer name: [(variable name, variable, channel axis)]}).
    """
    from tfq.kernels import select_kernels

    chosen, specs = {}, {}
    for spec in select_kernels(model, scheme, layers, skip_first_last, what="tfq.compress"):
        chosen[spec.layer.name] = spec.quantizer
        specs.setdefault(spec.layer.name, []).append((spec.name, spec.variable, spec.channel_axis))
    return chosen, specs


def all_kernels(layer):
    from tfq.kernels import supported_kernels

    return [(k.name, k.variable, k.channel_axis) for k in (supported_kernels(layer) or [])]


def first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def clone_model(model):
    import keras

    import tfq.layers  # noqa: F401  (registers tfq layers for cloning)

    try:
        clone = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"tfq.compress cannot copy model {model.name!r} ({type(model).__name__}): it needs a Sequential or "
            f"functional model, or a subclassed model whose get_config/from_config round-trip ({first})"
        ) from err
    clone.set_weights(model.get_weights())
    return clone


class Graph:
    """Producer/consumer links between the layers of a Sequential or functional model."""

    def __init__(self, model):
        import keras

        self.layers = {l.name: l for l in model.layers}
        self.inputs = {}  # name -> [producer names]
        self.known = True
        if isinstance(model, keras.Sequential):
            prev = None
            for layer in model.layers:
                self.inputs[layer.name] = [prev] if prev else []
                prev = layer.name
        else:
            try:
                config = model.get_config()
                for lc in config["layers"]:
                    producers = []
                    for node in lc.get("inbound_nodes", []):
                        _collect_history(node, producers)
                    self.inputs[lc["name"]] = producers
            except (KeyError, TypeError, NotImplementedError):
                self.known = False  # subclassed model: no graph, no corrections
        self.outputs = {}
        for name, producers in self.inputs.items():
            for p in producers:
                self.outputs.setdefault(p, []).append(name)

    def single_input(self, name):
        producers = self.inputs.get(name, [])
        if len(producers) != 1 or producers[0] not in self.layers:
            return None
        return self.layers[producers[0]]

    def single_output(self, name):
        consumers = self.outputs.get(name, [])
        if len(consumers) != 1 or consumers[0] not in self.layers:
            return None
        return self.layers[consumers[0]]


def _collect_history(obj, out):
    if isinstance(obj, dict):
        if "keras_history" in obj.get("config", {}) if isinstance(obj.get("config"), dict) else False:
            out.append(obj["config"]["keras_history"][0])
            return
        for v in obj.values():
            _collect_history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_history(v, out)


def activation_fn(layer):
    """The elementwise function a layer applies, as numpy -> numpy, or None."""
    import keras

    L = keras.layers
    if isinstance(layer, L.Activation):
        name = layer.get_config().get("activation")
        if name in ("softmax", "log_softmax"):
            return None
        fn = keras.activations.get(name)
    elif isinstance(layer, (L.ReLU, L.LeakyReLU, L.ELU)):
        fn = layer
    else:
        return None
    return lambda v: keras.ops.convert_to_numpy(fn(v.astype(np.float32).T)).T.astype(np.float64)


def is_identity_at_inference(layer):
    import keras

    L = keras.layers
    return isinstance(
        layer, (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)
    ) or layer_kind(layer) == "Identity"


def to_numpy(v):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(v))


def is_linear(layer):
    import keras

    act = getattr(layer, "activation", None)
    return act is None or keras.activations.serialize(act) in ("linear", None)


def positive_homogeneous(layer):
    """True for layers f with f(x / s) = f(x) / s for s > 0, per channel."""
    import keras

    L = keras.layers
    if is_identity_at_inference(layer):
        return True
    pools = (
        L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
        L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
        L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    )
    if isinstance(layer, pools):
        return True
    if isinstance(layer, L.ReLU):
        c = layer.get_config()
        return c.get("max_value") is None and not c.get("threshold")
    if isinstance(layer, L.LeakyReLU):
        return True
    if isinstance(layer, L.Activation):
        return layer.get_config().get("activation") in ("relu", "linear", "leaky_relu")
    return False


def fused_positive_homogeneous(layer):
    import keras

    act = getattr(layer, "activation", None)
    return act is None or keras.activations.serialize(act) in ("linear", "relu", "leaky_relu")


def out_scalable(layer):
    import keras

    L = keras.layers
    return type(layer) in (L.Dense, L.Conv1D, L.Conv2D, L.DepthwiseConv2D) and getattr(layer, "groups", 1) == 1 and (
        getattr(layer, "data_format", "channels_last") == "channels_last"
    )


def in_scalable(layer):
    import keras

    L = keras.layers
    return type(layer) in (L.Dense, L.Conv1D, L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D) and getattr(
        layer, "groups", 1
    ) == 1 and getattr(layer, "data_format", "channels_last") == "channels_last"


def in_kernel(layer):
    """(attribute, kernel array, input-channel axis) of a layer's first kernel."""
    if layer_kind(layer) == "SeparableConv2D":
        k = to_numpy(layer.depthwise_kernel)
        return "depthwise_kernel", k, k.ndim - 2
    k = to_numpy(layer.kernel)
    return "kernel", k, (0 if k.ndim == 2 else k.ndim - 2)
