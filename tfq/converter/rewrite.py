"""Keras model -> .tflite with tfq custom ops holding packed low-bit weights.

`convert` runs the stock `tf.lite.TFLiteConverter`, then rewrites the
flatbuffer (schema object API from ai_edge_litert): every FULLY_CONNECTED,
CONV_2D, DEPTHWISE_CONV_2D (and BATCH_MATMUL with a constant right side)
whose constant weights lie exactly in a tfq set per output channel becomes a
tfq custom op (docs/format.md). A TRANSPOSE_CONV with in-set weights is
lowered to builtin zero insertion and padding in front of a TFQ_CONV_2D
(docs/converter.md). Float weight buffers no longer used are dropped.
Weights not exactly in a set stay builtin and are reported.
"""

import contextlib
import dataclasses
import io
import logging
import re
import warnings

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfq.converter import format as fmt
from tfq.converter import sets
from tfq.converter import sparse as sparse_layout
from tfq.converter import tflite_io
from tfq import schemes

log = logging.getLogger("tfq.converter")

_ACTIVATIONS = {
    schema.ActivationFunctionType.NONE: "NONE",
    schema.ActivationFunctionType.RELU: "RELU",
    schema.ActivationFunctionType.RELU6: "RELU6",
}
_PADDINGS = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
# Side-effect-free ops that compute a TRANSPOSE_CONV's output_shape; dropped once unread.
_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")
# convert(float_layers=...): "int8" writes the ops below with 8-bit weights when they stay builtin.
FLOAT_LAYERS = ("float", "int8")
INT8_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def _check_float_layers(float_layers):
    if float_layers not in FLOAT_LAYERS:
        raise ValueError(f"float_layers={float_layers!r} is not one of {', '.join(map(repr, FLOAT_LAYERS))}")


def _static_shape(tensor):
    """[N, ...] with every non-batch dimension known, or None."""
    shape = tensor.shape
    if shape is None:
        return None
    sig = tensor.shapeSignature
    shape = [int(v) for v in shape]
    if sig is not None and len(sig) == len(shape) and any(int(v) < 0 for v in sig[1:]):
        return None
    if any(v <= 0 for v in shape[1:]):
        return None
    return shape


@dataclasses.dataclass
class OpReport:
    """What the converter did with one weighted op.

    Attributes:
      subgraph, index: the op's position in the input flatbuffer.
      op: builtin op name.
      weight: name of the weight tensor.
      layer: the Keras layer it comes from (None if not found).
      trained: the scheme the Keras layer says it was trained for (or None).
      scheme: detected scheme (None when not packed).
      packed: True when the op became a tfq custom op (or portable op).
      reason: why it was not packed, or a remark from the cross-check.
      float_bytes, packed_bytes: weight bytes before and after.
      sparsity: fraction of zero weights.
      layout: "dense" (version 1), "dense v2" (version 2, rows ending in
        32-weight mini-blocks), or "block_sparse RxC" (version 2).
    """
    subgraph: int
    index: int
    op: str
    weight: str
    layer: str = None
    trained: str = None
    scheme: str = None
    packed: bool = False
    reason: str = ""
    float_bytes: int = 0
    packed_bytes: int = 0
    sparsity: float = 0.0
    layout: str = "dense"
    max_rel_error: float = 0.0


class ConversionResult(bytes):
    """The converted .tflite bytes, with the per-op `report` attached."""

    report = ()

    def summary(self):
        lines = []
        for r in self.report:
            state = f"packed {r.scheme}" if r.packed else "left builtin"
            extra = f" ({r.reason})" if r.reason else ""
            lines.append(f"{r.op} {r.weight} [{r.layer or '?'}]: {state}{extra}")
        return "\n".join(lines)


# ------------------------------------------------------------------ Keras side

def trained_scheme(layer):
    """The scheme a Keras layer says it was trained for, or None.

    Reads the compression record (`tfq.record`: written by `tfq.ADMMCallback`
    and `tfq.compress`, saved with the model; the widest scheme wins when the
    kernels differ), or a tfq quantizer kept as `quantizer` /
    `kernel_quantizer`, or `tfq_scheme`.
    """
    from tfq import record  # Keras: only when converting a Keras model

    recorded = record.layer_scheme(layer) if getattr(layer, "built", False) else None
    if recorded:
        return recorded
    for attr in ("tfq_scheme", "kernel_quantizer", "quantizer"):
        value = getattr(layer, attr, None)
        if value is None:
            continue
        if isinstance(value, str) and value in schemes.SCHEMES:
            return value
        name = getattr(value, "name", None)
        if isinstance(name, str) and name in schemes.SCHEMES:
            return name
    return None


def _layer_index(model):
    """Maps layer names to their trained scheme (None when not recorded)."""
    index = {}
    if model is None:
        return index
    from tfq.kernels import iter_named  # Keras: only when converting a Keras model

    for layer in iter_named(model):
        index.setdefault(layer.name, trained_scheme(layer))
    return index


def _match_layer(tensor_name, layers):
    """Finds the Keras layer a tensor comes from, from its name's path components.

    Returns the innermost matching layer that records a trained scheme, else
    the innermost match (RNN kernels are named after the cell inside the layer
    that records the scheme), else None.
    """
    matches = []
    for part in tensor_name.replace(";", "/").split("/"):
        # Keras 3 name scopes append "_<n>" to layer names ("dense" -> "dense_1")
        for cand in (part, re.sub(r"_\d+$", "", part)):
            if cand in layers:
                matches.append(cand)
                break
    for cand in reversed(matches):
        if layers[cand] is not None:
            return cand
    return matches[-1] if matches else None


def _is_quant_layer(layer):
    """A tfq.layers layer: it projects its kernels in the forward pass."""
    return callable(getattr(layer, "quantized_weights", None)) and hasattr(layer, "scheme")


def _iter_model_layers(model):
    """Layers of a model and of nested models (not RNN cells or wrapped layers)."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers") and not _is_quant_layer(layer):
            yield from _iter_model_layers(layer)


def _plain_keras_class(layer):
    for cls in type(layer).__mro__[1:]:
        if cls.__module__.startswith("keras."):
            return cls
    raise TypeError(f"layer {layer.name!r}: no Keras base class for {type(layer).__name__}")


def materialize(model):
    """Replaces tfq.layers quantized layers by their Keras counterparts.

    tfq.layers project their float "shadow" kernels in the forward pass; the
    TFLite converter would keep that projection as graph ops. The clone holds
    the projected kernels (exactly `scale * level`) as ordinary weights, and
    each replaced layer records its scheme (`tfq.record`) for the
    cross-check. Models without tfq layers are returned unchanged.
    """
    import keras

    from tfq import record
    from tfq.kernels import supported_kernels
    quant = {layer.name: layer for layer in _iter_model_layers(model) if _is_quant_layer(layer)}
    if not quant:
        return model

    def clone(layer):
        if layer.name in quant:
            cfg = dict(layer.get_config())
            cfg.pop("scheme", None)
            cfg.pop("mask", None)
            return _plain_keras_class(layer).from_config(cfg)
        return layer.__class__.from_config(layer.get_config())

    try:
        new = keras.models.clone_model(model, clone_function=clone)
    except (ValueError, TypeError) as err:
        raise ValueError(f"convert: cannot rebuild model {model.name!r} without its tfq layers "
                         f"({err}); build it from Keras layers holding the projected kernels") from None
    old = {layer.name: layer for layer in _iter_model_layers(model)}
    for layer in _iter_model_layers(new):
        src = old.get(layer.name)
        if src is None or not layer.weights:
            continue
        if layer.name not in quant:
            layer.set_weights(src.get_weights())
            continue
        projected = {name: np.asarray(q) for name, (q, _) in src.quantized_weights().items()}
        src_vars = {v.name: v for v in src.weights}
        for v in layer.weights:
            key = v.name
            if key in projected:
                v.assign(projected[key])
            elif key in src_vars:
                v.assign(src_vars[key])
            else:
                raise ValueError(f"convert: cannot match weight {key!r} of layer {layer.name!r}")
        for spec in supported_kernels(layer) or []:
            if spec.name in projected:
                record.mark(layer, spec.name, src.scheme, spec.channel_axis)
    return new


def with_static_batch(model):
    """The model re-wrapped with batch size 1 when it has recurrent layers, else the model itself.

    Recurrent layers (also inside `Bidirectional`) lower to a TFLite `WHILE`
    loop only with a static batch size; any stock conversion of such a model
    (the float and int8 baselines too) needs the wrapped model.
    """
    import keras

    from tfq.kernels import iter_named

    if not any(isinstance(layer, keras.layers.RNN) for layer in iter_named(model)):
        return model
    inputs = [keras.Input(shape=tuple(t.shape[1:]), batch_size=1, dtype=t.dtype) for t in model.inputs]
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs)


def _keras_to_tflite(model):
    """Runs the stock TFLite converter on a Keras 3 model."""
    import keras
    import tensorflow as tf
    if not isinstance(model, keras.Model):
        raise TypeError(f"convert() expects a keras.Model, got {type(model).__name__}")
    model = with_static_batch(model)
    # Keras' SavedModel export prints the exported signature to stdout; keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        return converter.convert()


# ------------------------------------------------------------------ rewriting

class _Rewriter:
    def __init__(self, model, data, layers, rtol, portable, sparse=False, float_layers="float"):
        self.model = model
        self.sparse = sparse
        self.float_layers = float_layers
        self.data = data
        self.layers = layers
        self.rtol = rtol
        self.portable = portable
        self.reports = []
        self._opcode_cache = {}
        self._lowered = set()       # subgraphs where a TRANSPOSE_CONV was lowered

    # -- helpers
    def opcode_index(self, custom_code=None, builtin=None, version=1):
        key = (custom_code, builtin, version)
        if key in self._opcode_cache:
            return self._opcode_cache[key]
        for i, code in enumerate(self.model.operatorCodes):
            b = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            if custom_code is not None and b == schema.BuiltinOperator.CUSTOM and \
                    code.customCode in (custom_code, custom_code.encode()):
                self._opcode_cache[key] = i
                return i
            if builtin is not None and b == builtin and code.version == version:
                self._opcode_cache[key] = i
                return i
        code = schema.OperatorCodeT()
        if custom_code is not None:
            code.builtinCode = schema.BuiltinOperator.CUSTOM
            code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = custom_code
        else:
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, 127)
        code.version = version
        self.model.operatorCodes.append(code)
        self._opcode_cache[key] = len(self.model.operatorCodes) - 1
        return self._opcode_cache[key]

    def add_buffer(self, array):
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def add_tensor(self, sg, name, array, tensor_type, shape=None, quantization=None):
        t = schema.TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape if shape is not None else array.shape, dtype=np.int32)
        t.type = tensor_type
        t.buffer = self.add_buffer(array)
        t.quantization = quantization
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    # -- per op
    def weight_matrix(self, op_name, sg, op):
        """Returns (matrix [channels, n], info) for a weighted op, or (None, reason)."""
        inputs = [int(i) for i in op.inputs]
        if op_name == "BATCH_MATMUL":
            if len(inputs) < 2:
                return None, "malformed BATCH_MATMUL"
            w_idx = inputs[1]
        elif op_name in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            if len(inputs) < 2 or inputs[1] < 0:
                return None, f"malformed {op_name}"
            w_idx = inputs[1]
        else:
            return None, "not a weighted op"
        tensor = sg.tensors[w_idx]
        if tensor.type != schema.TensorType.FLOAT32:
            return None, (f"weights are {tflite_io.TENSOR_TYPE_NAMES.get(tensor.type)}, "
                          "not float32")
        w = tflite_io.constant_array(self.model, self.data, tensor)
        if w is None:
            return None, "weights are not constant"
        info = {"w_idx": w_idx, "shape": list(w.shape)}
        if op_name == "FULLY_CONNECTED":
            opts = op.builtinOptions
            if w.ndim != 2:
                return None, f"weights of rank {w.ndim}"
            if opts is not None and opts.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
                return None, "shuffled weights format"
            info["weight_shape"] = list(w.shape)
            return w, info
        if op_name == "CONV_2D":
            if w.ndim != 4:
                return None, f"weights of rank {w.ndim}"
            in_shape = sg.tensors[inputs[0]].shape
            if in_shape is not None and len(in_shape) == 4 and in_shape[3] != w.shape[3]:
                return None, "grouped convolution"
            info["weight_shape"] = list(w.shape)
            return w.reshape(w.shape[0], -1), info
        if op_name == "DEPTHWISE_CONV_2D":
            if w.ndim != 4 or w.shape[0] != 1:
                return None, f"weights of shape {list(w.shape)}"
            info["weight_shape"] = list(w.shape)
            return w.reshape(-1, w.shape[3]).T, info      # channels = last axis
        # BATCH_MATMUL: constant right side [..., K, N] with leading ones
        opts = op.builtinOptions
        if opts is not None and opts.adjX:
            return None, "BATCH_MATMUL with adj_x"
        if w.ndim < 2 or int(np.prod(w.shape[:-2])) != 1:
            return None, f"BATCH_MATMUL right side of shape {list(w.shape)}"
        m = w.reshape(w.shape[-2:])
        m = m if (opts is not None and opts.adjY) else m.T          # -> [N, K]
        info["weight_shape"] = list(m.shape)
        return m, info

    def rewrite_op(self, g, sg, i, op):
        name = tflite_io.op_name(self.model, op)
        if name == "TRANSPOSE_CONV":
            self._transpose_conv(g, sg, i, op)
            return
        if name not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"):
            return
        inputs = [int(x) for x in op.inputs]
        w_name = tflite_io.tensor_name(sg.tensors[inputs[1]]) if len(inputs) > 1 and inputs[1] >= 0 else ""
        layer = _match_layer(w_name, self.layers)
        report = OpReport(g, i, name, w_name, layer=layer,
                          trained=self.layers.get(layer) if layer else None)
        matrix, info = self.weight_matrix(name, sg, op)
        if matrix is None:
            if info != "weights are not constant" or name != "BATCH_MATMUL":
                report.reason = info
                self._finish(report)
            return
        report.float_bytes = matrix.size * 4
        activation = "NONE"
        opts = op.builtinOptions
        if name != "BATCH_MATMUL":
            act = opts.fusedActivationFunction if opts is not None else 0
            if act not in _ACTIVATIONS:
                report.reason = f"fused activation {act} has no tfq equivalent"
                self._finish(report)
                return
            activation = _ACTIVATIONS[act]
        detection = self._detect(matrix, report)
        if detection is None:
            if self.float_layers == "int8" and name in INT8_OPS:
                self._to_int8(sg, op, name, info, matrix, report)
            return
        if self.portable:
            from tfq.converter import portable
            portable.rewrite_op(self, sg, op, name, info, detection, report)
        else:
            self._to_custom(sg, op, name, info, detection, activation, report)
        self._finish(report)

    def _detect(self, matrix, report):
        """The set of `matrix` (rows = output channels), recorded in `report`; None (op finished as kept) if none."""
        detection, why = sets.detect(matrix, rtol=self.rtol)
        if detection is None:
            report.reason = why
            self._finish(report)
            return None
        report.scheme = detection.scheme
        report.sparsity = detection.sparsity
        report.max_rel_error = detection.max_rel_error
        return detection

    def _to_int8(self, sg, op, name, info, matrix, report):
        """Gives a float-kept op 8-bit per-channel weights (`float_layers="int8"`).

        Symmetric, one scale per output channel (max |w| / 127, the rounding
        LiteRT's own dynamic-range quantization uses), run by LiteRT's
        dynamic-range kernels: the only lossy step of the converter.
        """
        from tfq.converter import portable

        why = report.reason
        w = np.asarray(matrix, dtype=np.float64)
        if w.ndim != 2 or w.size == 0:  # nothing to quantize: the op stays as it is
            return
        if not np.isfinite(w).all():
            c, i = np.argwhere(~np.isfinite(w))[0]
            raise ValueError(f"{name} {report.weight!r}: weight [{c}, {i}] is {w[c, i]}; float_layers='int8' "
                             "cannot quantize non-finite weights")
        top = np.abs(w).max(axis=1)
        scales = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
        levels = np.clip(np.rint(w / scales.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
        portable.write_integer_weights(self, sg, op, name, info, levels, scales,
                                       portable.TT.INT8, report)
        err = np.abs(levels * scales.astype(np.float64)[:, None] - w).max() / max(float(np.abs(w).max()), 1e-30)
        report.scheme = "int8"
        report.layout = "int8 (dynamic range)"
        report.max_rel_error = float(err)
        report.reason = f"8-bit dynamic-range weights (float_layers='int8'; {why})"

    def _transpose_conv(self, g, sg, i, op):
        """Lowers a TRANSPOSE_CONV with in-set weights to data movement + TFQ_CONV_2D.

        TFLite's transpose convolution (inputs: output_shape, weights
        [O, KH, KW, I], x, optional bias) scatters each input pixel into the
        output at `iy * stride + kh - pad_before`. The same sum is a stride-1
        VALID convolution over x with stride-1 zeros inserted between its
        pixels (RESHAPE to [N*H, 1, W, 1, C], PAD the two unit axes to the
        stride, RESHAPE back: zeros after every pixel), padded by
        `KH - 1 - pad_before` before and whatever reaches the output size
        after (SLICE when that is negative), with the spatially flipped kernel
        (TFLite already stores it output-channel first). Zeros leave the
        per-image absmax alone, so the delegate's arithmetic is unchanged; the
        cost is stride_h * stride_w times the multiply-adds of a native kernel.
        """
        inputs = [int(x) for x in op.inputs]
        w_name = tflite_io.tensor_name(sg.tensors[inputs[1]]) if len(inputs) > 2 and inputs[1] >= 0 else ""
        layer = _match_layer(w_name, self.layers)
        report = OpReport(g, i, "TRANSPOSE_CONV", w_name, layer=layer,
                          trained=self.layers.get(layer) if layer else None)
        lowering, why = self._transpose_conv_geometry(sg, op, inputs)
        if lowering is None:
            report.reason = why
            self._finish(report)
            return
        w = lowering["weights"]
        report.float_bytes = w.size * 4
        flipped = np.ascontiguousarray(w[:, ::-1, ::-1, :])
        detection = self._detect(flipped.reshape(flipped.shape[0], -1), report)
        if detection is None:
            return
        if self.portable and tflite_io.constant_array(self.model, self.data,
                                                      sg.tensors[inputs[0]]) is not None:
            # A constant output_shape (static batch): XNNPACK runs the INT8 dynamic-range
            # TRANSPOSE_CONV itself, 4x faster than float and no s^2 work; keep the op.
            from tfq.converter import portable
            det_w, _ = sets.detect(w.reshape(w.shape[0], -1), rtol=self.rtol)
            portable.rewrite_op(self, sg, op, "TRANSPOSE_CONV", {"weight_shape": list(w.shape)},
                                det_w, report)
            self._finish(report)
            return
        x_idx = self._zero_insert_and_pad(sg, op, inputs[2], lowering)
        bias = inputs[3] if len(inputs) > 3 else -1
        op.inputs = np.array([x_idx, inputs[1], bias], dtype=np.int32)
        conv = schema.Conv2DOptionsT()
        conv.padding = schema.Padding.VALID
        conv.strideH = conv.strideW = 1
        conv.dilationHFactor = conv.dilationWFactor = 1
        conv.fusedActivationFunction = lowering["act"]
        op.builtinOptions = conv
        op.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
        report.reason = (f"lowered to TFQ_CONV_2D (stride {lowering['stride'][0]}x"
                         f"{lowering['stride'][1]}: zero insertion + padding)")
        if self.portable:
            # Stock LiteRT runs an INT8 dynamic-range TRANSPOSE_CONV with a run-time
            # output_shape (dynamic batch) in a reference kernel 13x slower than float; the
            # lowered INT8 CONV_2D is faster than float despite the s^2 work
            # (benchmarks/transpose_conv.py).
            from tfq.converter import portable
            op.opcodeIndex = self.opcode_index(builtin=schema.BuiltinOperator.CONV_2D)
            portable.rewrite_op(self, sg, op, "CONV_2D", {"weight_shape": list(flipped.shape)},
                                detection, report)
            report.reason += " (lowered TRANSPOSE_CONV)"
        else:
            self._to_custom(sg, op, "CONV_2D", {"weight_shape": list(flipped.shape)}, detection,
                            _ACTIVATIONS[lowering["act"]], report)
        self._lowered.add(g)
        self._finish(report)

    def _transpose_conv_geometry(self, sg, op, inputs):
        """Checks a TRANSPOSE_CONV can be lowered; returns (dict, None) or (None, reason)."""
        if len(inputs) < 3 or inputs[1] < 0 or inputs[2] < 0:
            return None, "malformed TRANSPOSE_CONV"
        tensor = sg.tensors[inputs[1]]
        if tensor.type != schema.TensorType.FLOAT32:
            return None, f"weights are {tflite_io.TENSOR_TYPE_NAMES.get(tensor.type)}, not float32"
        w = tflite_io.constant_array(self.model, self.data, tensor)
        if w is None:
            return None, "weights are not constant"
        if w.ndim != 4:
            return None, f"weights of rank {w.ndim}"
        opts = op.builtinOptions
        act = getattr(opts, "fusedActivationFunction", 0) if opts is not None else 0
        if act not in _ACTIVATIONS:
            return None, f"fused activation {act} has no tfq equivalent"
        if len(inputs) > 3 and inputs[3] >= 0 and sg.tensors[inputs[3]].type != schema.TensorType.FLOAT32:
            return None, "bias is not float32"
        x_shape = _static_shape(sg.tensors[inputs[2]])
        y_shape = _static_shape(sg.tensors[int(op.outputs[0])])
        if x_shape is None or y_shape is None or len(x_shape) != 4 or len(y_shape) != 4:
            return None, "TRANSPOSE_CONV without static NHWC spatial shapes"
        o, kh, kw, c = w.shape
        if x_shape[3] != c or y_shape[3] != o:
            return None, f"weights {list(w.shape)} do not match input {x_shape} / output {y_shape}"
        stride = (max(1, opts.strideH), max(1, opts.strideW)) if opts is not None else (1, 1)
        same = opts is not None and opts.padding == schema.Padding.SAME
        before, after = [], []
        for size_in, size_out, k, s in zip(x_shape[1:3], y_shape[1:3], (kh, kw), stride):
            # TFLite computes the padding as for the forward conv from the output size.
            pad = max((-(-size_out // s) - 1) * s + k - size_out, 0) // 2 if same else 0
            if pad > k - 1:
                return None, f"padding {pad} larger than the kernel"
            before.append(k - 1 - pad)
            after.append(size_out + pad - size_in * s)
        return {"weights": w, "act": act, "stride": stride, "in": x_shape, "out": y_shape,
                "before": before, "after": after}, None

    def _zero_insert_and_pad(self, sg, op, x_idx, low):
        """Inserts the builtin ops that feed the lowered conv; returns its input tensor."""
        n, h, w, c = low["in"]
        sh, sw = low["stride"]
        (bh, bw), (ah, aw) = low["before"], low["after"]
        pos = sg.operators.index(op)
        base = (tflite_io.tensor_name(sg.tensors[int(op.outputs[0])]) or "transpose_conv") + "/tfq_lowering"
        new_ops = []
        dynamic = sg.tensors[x_idx].shapeSignature is not None and \
            len(sg.tensors[x_idx].shapeSignature) and int(sg.tensors[x_idx].shapeSignature[0]) < 0

        def act_tensor(suffix, shape):
            t = schema.TensorT()
            t.name = f"{base}/{suffix}".encode()
            t.shape = np.array(shape, dtype=np.int32)
            if dynamic:
                t.shapeSignature = np.array([-1] + list(shape[1:]), dtype=np.int32)
            t.type = schema.TensorType.FLOAT32
            t.buffer = 0
            sg.tensors.append(t)
            return len(sg.tensors) - 1

        def add_op(builtin, options_type, options, ins, out):
            new = schema.OperatorT()
            new.opcodeIndex = self.opcode_index(builtin=builtin)
            new.inputs = np.array(ins, dtype=np.int32)
            new.outputs = np.array([out], dtype=np.int32)
            new.builtinOptionsType = options_type
            new.builtinOptions = options
            new_ops.append(new)
            return out

        def reshape(src, shape, suffix):
            opts = schema.ReshapeOptionsT()
            opts.newShape = np.array([-1] + list(shape[1:]), dtype=np.int32)
            shape_idx = self.add_tensor(sg, f"{base}/{suffix}_shape", opts.newShape,
                                        schema.TensorType.INT32)
            return add_op(schema.BuiltinOperator.RESHAPE, schema.BuiltinOptions.ReshapeOptions, opts,
                          [src, shape_idx], act_tensor(suffix, shape))

        def pad(src, paddings, shape, suffix):
            pads = np.array(paddings, dtype=np.int32)
            p_idx = self.add_tensor(sg, f"{base}/{suffix}_paddings", pads, schema.TensorType.INT32)
            return add_op(schema.BuiltinOperator.PAD, schema.BuiltinOptions.PadOptions,
                          schema.PadOptionsT(), [src, p_idx], act_tensor(suffix, shape))

        cur = x_idx
        if sh > 1 or sw > 1:
            # [N*H, 1, W, 1, C] -> pad to [N*H, sh, W, sw, C]: each pixel followed by zeros
            cur = reshape(cur, [n * h, 1, w, 1, c], "split")
            cur = pad(cur, [[0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]],
                      [n * h, sh, w, sw, c], "zeros")
            cur = reshape(cur, [n, h * sh, w * sw, c], "dilated")
        full = [n, h * sh + bh + ah, w * sw + bw + aw, c]
        if bh or bw or ah > 0 or aw > 0:
            cur = pad(cur, [[0, 0], [bh, max(ah, 0)], [bw, max(aw, 0)], [0, 0]],
                      [n, h * sh + bh + max(ah, 0), w * sw + bw + max(aw, 0), c], "padded")
        if ah < 0 or aw < 0:
            begin = np.zeros(4, np.int32)
            size = np.array([-1] + full[1:], np.int32)
            b_idx = self.add_tensor(sg, f"{base}/crop_begin", begin, schema.TensorType.INT32)
            s_idx = self.add_tensor(sg, f"{base}/crop_size", size, schema.TensorType.INT32)
            cur = add_op(schema.BuiltinOperator.SLICE, schema.BuiltinOptions.SliceOptions,
                         schema.SliceOptionsT(), [cur, b_idx, s_idx], act_tensor("cropped", full))
        sg.operators[pos:pos] = new_ops
        return cur

    def drop_dead_ops(self):
        """Drops shape computations only a lowered TRANSPOSE_CONV read (its output_shape)."""
        for g in self._lowered:
            sg = self.model.subgraphs[g]
            while True:
                read = {int(x) for o in sg.operators for x in o.inputs if int(x) >= 0}
                read.update(int(x) for x in sg.outputs)
                dead = [o for o in sg.operators
                        if tflite_io.op_name(self.model, o) in _SHAPE_OPS
                        and not any(int(x) in read for x in o.outputs)]
                if not dead:
                    break
                sg.operators = [o for o in sg.operators if all(o is not d for d in dead)]

    def _finish(self, report):
        if report.trained and not report.packed:
            report.reason = (f"layer trained for {report.trained} but left builtin: "
                             f"{report.reason}")
        elif report.trained and report.scheme and report.trained in schemes.SCHEMES and \
                schemes.NAMES.index(report.scheme) > schemes.NAMES.index(report.trained):
            report.reason = (f"layer trained for {report.trained}, values need "
                             f"{report.scheme}")
        self.reports.append(report)

    def _to_custom(self, sg, op, name, info, det, activation, report):
        custom = "TFQ_" + ("FULLY_CONNECTED" if name == "BATCH_MATMUL" else name)
        scheme = det.scheme
        bits = schemes.SCHEMES[scheme].storage_bits
        weight_shape = info["weight_shape"]
        if name == "DEPTHWISE_CONV_2D":
            rows_levels = det.levels.T                       # [taps, O]
        else:
            rows_levels = det.levels                         # [O, k]
        codes = fmt.levels_to_codes(rows_levels, scheme)
        packed, layout = sparse_layout.choose(codes, scheme, custom, self.sparse)
        rows, k = codes.shape
        opts = {"version": fmt.FORMAT_VERSION, "scheme": scheme, "bits": bits,
                "rows": rows, "k": k, "weight_shape": weight_shape, "activation": activation}
        opts.update(layout)
        if fmt.is_sparse(layout):
            report.layout = f"block_sparse {layout['block_rows']}x{layout['block_cols']}"
        elif fmt.is_compact(layout):
            report.layout = "dense v2"
        bo = op.builtinOptions
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts.update(stride_h=bo.strideH, stride_w=bo.strideW,
                        dilation_h=max(1, bo.dilationHFactor), dilation_w=max(1, bo.dilationWFactor),
                        padding=_PADDINGS[bo.padding])
        if name == "DEPTHWISE_CONV_2D":
            in_shape = sg.tensors[int(op.inputs[0])].shape
            if in_shape is not None and len(in_shape) == 4 and in_shape[3] > 0:
                opts["depth_multiplier"] = weight_shape[3] // int(in_shape[3])
            else:
                opts["depth_multiplier"] = max(1, bo.depthMultiplier)
        base = report.weight or f"tfq_weights_{len(sg.tensors)}"
        p_idx = self.add_tensor(sg, base + "/tfq_packed", packed, schema.TensorType.UINT8)
        s_idx = self.add_tensor(sg, base + "/tfq_scales", det.scales, schema.TensorType.FLOAT32)
        inputs = [int(x) for x in op.inputs]
        bias = inputs[2] if len(inputs) > 2 and name != "BATCH_MATMUL" else -1
        op.inputs = np.array([inputs[0], p_idx, s_idx, bias], dtype=np.int32)
        op.opcodeIndex = self.opcode_index(custom_code=custom)
        op.builtinOptionsType = schema.BuiltinOptions.NONE
        op.builtinOptions = None
        op.builtinOptions2Type = 0
        op.builtinOptions2 = None
        op.customOptions = np.frombuffer(fmt.encode_options(opts), dtype=np.uint8)
        op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        report.packed = True
        report.packed_bytes = packed.size + det.scales.size * 4


def compact(model):
    """Drops tensors, buffers and operator codes nothing refers to any more."""
    used_buffers = {0}
    for md in model.metadata or []:
        used_buffers.add(int(md.buffer))
    for b in (model.metadataBuffer if model.metadataBuffer is not None else []):
        used_buffers.add(int(b))
    sig_by_sg = {}
    for sd in model.signatureDefs or []:
        sig_by_sg.setdefault(int(sd.subgraphIndex), []).append(sd)
    for g, sg in enumerate(model.subgraphs):
        used = set()
        for op in sg.operators or []:
            for seq in (op.inputs, op.outputs, op.intermediates):
                if seq is not None:
                    used.update(int(x) for x in seq if int(x) >= 0)
        for seq in (sg.inputs, sg.outputs):
            if seq is not None:
                used.update(int(x) for x in seq)
        for sd in sig_by_sg.get(g, []):
            for tm in list(sd.inputs or []) + list(sd.outputs or []):
                used.add(int(tm.tensorIndex))
        keep = sorted(used)
        remap = {old: new for new, old in enumerate(keep)}
        sg.tensors = [sg.tensors[i] for i in keep]

        def _map(seq):
            return None if seq is None else np.array(
                [remap[int(x)] if int(x) >= 0 else -1 for x in seq], dtype=np.int32)
        for op in sg.operators or []:
            op.inputs, op.outputs = _map(op.inputs), _map(op.outputs)
            if op.intermediates is not None:
                op.intermediates = _map(op.intermediates)
        sg.inputs, sg.outputs = _map(sg.inputs), _map(sg.outputs)
        for sd in sig_by_sg.get(g, []):
            for tm in list(sd.inputs or []) + list(sd.outputs or []):
                tm.tensorIndex = remap[int(tm.tensorIndex)]
        used_buffers.update(int(t.buffer) for t in sg.tensors)
    keep_b = sorted(used_buffers)
    remap_b = {old: new for new, old in enumerate(keep_b)}
    model.buffers = [model.buffers[i] for i in keep_b]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = remap_b[int(t.buffer)]
    for md in model.metadata or []:
        md.buffer = remap_b[int(md.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [remap_b[int(b)] for b in model.metadataBuffer]
    used_codes = sorted({int(op.opcodeIndex) for sg in model.subgraphs for op in sg.operators or []})
    remap_c = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in used_codes]
    for sg in model.subgraphs:
        for op in sg.operators or []:
            op.opcodeIndex = remap_c[int(op.opcodeIndex)]


def rewrite_tflite(tflite, model=None, portable=False, rtol=sets.DEFAULT_RTOL, name=None, sparse=False,
                   float_layers="float"):
    """Rewrites float .tflite bytes (or a path) into a tfq model.

    Args:
      tflite: bytes or path of a float .tflite file (e.g. from TFLiteConverter).
      model: the Keras model it came from, for the cross-check (optional).
      portable: write builtin INT2/INT4/INT8 weights instead of custom ops.
      rtol: relative tolerance of the set detection (see tfq.converter.sets).
      name: display name for errors.
      sparse: the layout of the packed ops, see `convert`.
      float_layers: "float" or "int8", see `convert`.

    Returns:
      A ConversionResult (bytes with a `.report` list of OpReport).
    """
    _check_float_layers(float_layers)
    fb, data, name = tflite_io.load_model(tflite, name)
    for sg in fb.subgraphs:
        for op in sg.operators or []:
            if tflite_io.op_name(fb, op) in fmt.CUSTOM_CODES:
                raise ValueError(f"{name}: already contains tfq custom ops; convert the float model")
    # Offset-addressed buffers (files > 2 GB) are read once, then stored inline.
    for buf in fb.buffers:
        if buf.offset and buf.size:
            buf.data = np.frombuffer(data[buf.offset:buf.offset + buf.size], dtype=np.uint8)
            buf.offset, buf.size = 0, 0
    rewriter = _Rewriter(fb, data, _layer_index(model), rtol, portable, sparse, float_layers)
    for g, sg in enumerate(fb.subgraphs):
        for i, op in enumerate(list(sg.operators or [])):
            rewriter.rewrite_op(g, sg, i, op)
    rewriter.drop_dead_ops()
    compact(fb)
    result = ConversionResult(tflite_io.save_model(fb))
    result.report = tuple(rewriter.reports)
    packed = [r for r in rewriter.reports if r.packed]
    for r in rewriter.reports:
        if not r.packed and (r.trained or r.reason.startswith("not in any set")):
            log.info("tfq.convert: %s %s left builtin: %s", r.op, r.weight, r.reason)
        if r.trained and not r.packed:
            warnings.warn(f"tfq.convert: {r.op} {r.weight!r}: {r.reason}", stacklevel=3)
    if not packed:
        warnings.warn(f"tfq.convert: no weight tensor of {name} lies exactly in a tfq set; "
                      "the result is a plain float model", stacklevel=3)
    return result


def convert(model, portable=False, *, rtol=sets.DEFAULT_RTOL, sparse=False, float_layers="float"):
    """Converts a compressed Keras 3 model to a .tflite flatbuffer.

    Runs `tf.lite.TFLiteConverter` on `model`, then replaces every weighted op
    whose constant weights lie exactly in a tfq set (binary, ternary,
    pow2_3bit, pow2_4bit; detected per output channel from the values) by a
    tfq custom op with packed weights (docs/format.md), or, with
    `portable=True`, by the same builtin op with per-channel INT2/INT4/INT8
    weights that any stock LiteRT runtime runs.

    Args:
      model: a `keras.Model` (typically trained with `tfq.ADMMCallback` or
        built by `tfq.quantize_model`), or the bytes/path of a float .tflite.
      portable: emit builtin ops only (no custom ops, no delegate needed).
      rtol: relative tolerance of the exact-set test (float32 folding noise).
      sparse: layout of the packed weights: False (dense rows, format
        version 1), "auto" (per op, block-sparse format version 2 when it
        takes at most 3/4 of the dense bytes: pruned weights), or True
        (block-sparse wherever the op and scheme allow). See
        `tfq.converter.sparse` and docs/format.md.
      float_layers: what becomes of the FULLY_CONNECTED, CONV_2D and
        DEPTHWISE_CONV_2D ops whose weights are in no tfq set (typically the
        first and last layers, kept in float during training): "float"
        (default) keeps them as they are; "int8" stores 8-bit per-channel
        weights (symmetric, max |w| / 127) run by LiteRT's dynamic-range
        kernels, 4x fewer bytes and a faster first convolution
        (docs/converter.md, "Float layers"). The only lossy option: those
        layers' outputs then differ from Keras by the int8 rounding.

    Returns:
      The .tflite bytes (a `bytes` subclass whose `.report` lists what
      happened to each weighted op).

    Raises:
      TypeError: `model` is neither a Keras model nor .tflite bytes/path.
    """
    if isinstance(model, (bytes, bytearray, memoryview, str)) or hasattr(model, "__fspath__"):
        return rewrite_tflite(model, None, portable=portable, rtol=rtol, sparse=sparse,
                              float_layers=float_layers)
    _check_float_layers(float_layers)  # before the (slow) TFLite conversion
    model = materialize(model)
    float_bytes = _keras_to_tflite(model)
    return rewrite_tflite(float_bytes, model, portable=portable, rtol=rtol,
                          name=f"model {getattr(model, 'name', '?')!r}", sparse=sparse,
                          float_layers=float_layers)
