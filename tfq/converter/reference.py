"""NumPy reference executor for .tflite models with tfq custom ops.

It is the executable specification of docs/format.md: it runs a converted
model op by op, the tfq custom ops from their packed weights, in one of two
modes:

* ``mode="float"``: the weights are unpacked to `scale * level` and the op is
  computed in float64 (rounded to float32 at each op output), i.e. what the
  Keras model computes, up to float32 summation order.
* ``mode="delegate"``: the delegate's arithmetic: activations quantized to
  int8 per row (FC) or per image (conv), exact integer accumulation, then
  `acc * scale / s + bias` and the fused activation. The delegate's outputs
  must match this mode up to float32 rounding of the epilogue. With
  ``int8_handover`` (the delegate's default), a RELU6 convolution read only by
  the next tfq convolution hands it int8 codes with the fixed scale 127/6
  instead of a per-image absmax scale. With ``activation_passes=2`` (the
  delegate option of the same name), every tfq op adds a second pass over
  the int8 rounding residual of its input (``quantization_residual``), and
  nothing is handed over as int8.

Builtin ops are implemented in NumPy as well, for the set that Keras 3
classifiers (LeNet, MLPs, small CNNs, MobileNet-style blocks, LSTM/GRU loops)
convert to; an op outside that set raises `NotImplementedError` naming it.
Batches: a model converted with a dynamic batch dimension runs whole batches
at once; otherwise `predict` feeds one example at a time.
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfq.converter import format as fmt
from tfq.converter import tflite_io
from tfq import schemes

MODES = ("float", "delegate")


def _act(x, name):
    if name in ("NONE", 0):
        return x
    if name in ("RELU", 1):
        return np.maximum(x, 0)
    if name in ("RELU6", 3):
        return np.clip(x, 0, 6)
    if name in ("RELU_N1_TO_1", 2):
        return np.clip(x, -1, 1)
    if name in ("TANH", 4):
        return np.tanh(x)
    raise NotImplementedError(f"fused activation {name}")


def _fused(op):
    opts = op.builtinOptions
    return getattr(opts, "fusedActivationFunction", 0) if opts is not None else 0


def _same_pad(size, k, stride, dilation):
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def _patches(x, kh, kw, sh, sw, dh, dw, padding):
    """im2col: x [N,H,W,C] -> patches [N,OH,OW,KH,KW,C] with zero padding."""
    n, h, w, c = x.shape
    if padding == "SAME":
        oh, pt, pb = _same_pad(h, kh, sh, dh)
        ow, pl, pr = _same_pad(w, kw, sw, dw)
    else:
        oh = (h - (kh - 1) * dh - 1) // sh + 1
        ow = (w - (kw - 1) * dw - 1) // sw + 1
        pt = pb = pl = pr = 0
    if oh <= 0 or ow <= 0:
        raise ValueError(f"convolution output would be empty (input {h}x{w}, kernel {kh}x{kw})")
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, :, i, j, :] = xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh,
                                       j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
    return out


def conv2d(x, w, bias, stride, dilation, padding, activation="NONE", dtype=np.float64):
    """x [N,H,W,I], w [O,KH,KW,I] (TFLite order) -> [N,OH,OW,O] in `dtype`.

    float32 is used only for integer operands whose sums are exact in it.
    """
    o, kh, kw, i = w.shape
    p = _patches(np.asarray(x, dtype), kh, kw, *stride, *dilation, padding)
    groups = x.shape[3] // i
    if groups * i != x.shape[3] or o % groups:
        raise ValueError(f"convolution input has {x.shape[3]} channels, weights {list(w.shape)}")
    w = np.asarray(w, dtype)
    og = o // groups
    y = np.concatenate([
        p[..., g * i:(g + 1) * i].reshape(*p.shape[:3], -1) @ w[g * og:(g + 1) * og].reshape(og, -1).T
        for g in range(groups)], axis=-1)
    if bias is not None:
        y = y + bias
    return _act(y, activation)


def depthwise_conv2d(x, w, bias, stride, dilation, padding, multiplier, activation="NONE",
                     dtype=np.float64):
    """x [N,H,W,C], w [1,KH,KW,C*M] -> [N,OH,OW,C*M] in `dtype`."""
    _, kh, kw, o = w.shape
    p = _patches(np.asarray(x, dtype), kh, kw, *stride, *dilation, padding)
    p = np.repeat(p, multiplier, axis=-1)                      # channel c*M+m reads c
    y = np.einsum("nhwijc,ijc->nhwc", p, np.asarray(w, dtype)[0])
    if bias is not None:
        y = y + bias
    return _act(y, activation)


# Fixed scale of the int8 hand-over between two convolutions (docs/delegate.md): float32 127 / 6.
HANDOVER_SCALE = np.float32(127.0) / np.float32(6.0)
_CONV_OPS = ("TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D")


def quantize_handover(x):
    """The consumer's side of the int8 hand-over: q = rint(x * 127/6), s = 127/6 (x in [0, 6]).

    A tensor holding NaN or infinity gets NaN codes everywhere (the delegate
    passes one non-finite flag with the codes), hence NaN outputs.
    """
    x = np.asarray(x, np.float32)
    q = np.rint((x * HANDOVER_SCALE).astype(np.float32)).astype(np.float64)
    if not np.all(np.isfinite(x)):
        q[...] = np.nan
    return q, np.float32(HANDOVER_SCALE)


def quantization_residual(x, axes):
    """What `quantize_activations` rounds off: x - q / s, float32, as the delegate computes it.

    Zero where the group is all zeros, s is 0, or the group holds NaN or
    infinity (the first pass is NaN there already).
    """
    x = np.asarray(x, np.float32)
    q, s = quantize_activations(x, axes)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = (np.float32(1.0) / np.where(s > 0, s, np.float32(1.0))).astype(np.float32)
        r = (x - (q.astype(np.float32) * step).astype(np.float32)).astype(np.float32)
    keep = (s > 0) & np.all(np.isfinite(q), axis=axes, keepdims=True)
    return np.where(keep, r, np.float32(0.0)).astype(np.float32)


def quantize_activations(x, axes):
    """Symmetric int8 quantization without zero point (docs/format.md).

    Returns (q as float64 integers, s) with s broadcastable over x; s = 0 where
    the group is all zeros or 127 / amax overflows float32 (denormal amax), so
    the output there is the bias, as the delegate does (q = 0 there). A group
    holding NaN or infinity gets NaN codes, hence NaN outputs.
    """
    x = np.asarray(x, np.float32)
    amax = np.max(np.abs(x), axis=axes, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = (np.float32(127.0) / amax).astype(np.float32)
        s = np.where((amax > 0) & np.isfinite(s), s, np.float32(0.0)).astype(np.float32)
        q = np.clip(np.rint((x * s).astype(np.float32)), -127, 127)
    return q.astype(np.float64), s


class ReferenceExecutorError(ValueError):
    """A model the reference executor refuses (names the file and node).

    A ValueError, so `except ValueError` handlers catch it. (Not named
    `ReferenceError`, which would shadow the Python builtin.)
    """


class ReferenceInterpreter:
    """Runs a .tflite model (tfq custom ops included) in NumPy.

    Args:
      model: path or bytes of a .tflite file.
      mode: "float" (exact float weights) or "delegate" (int8 activations).
      int8_handover: as the delegate option (mode "delegate").
      activation_passes: 1, or 2 as the delegate option (mode "delegate"):
        a second pass over each input's int8 rounding residual.

    Raises:
      TFLiteFileError: the file is not a readable .tflite model.
      ReferenceExecutorError: a tfq node is malformed (wrong version, sizes, codes).
    """

    def __init__(self, model, mode="float", int8_handover=True, activation_passes=1):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if activation_passes not in (1, 2):
            raise ValueError(f"activation_passes must be 1 or 2, got {activation_passes!r}")
        self.mode = mode
        self.activation_passes = activation_passes
        self.int8_handover = int8_handover and activation_passes == 1
        self.fb, self.data, self.name = tflite_io.load_model(model)
        self._consts = {}
        self._tfq = {}
        for g, sg in enumerate(self.fb.subgraphs):
            for i, op in enumerate(sg.operators or []):
                name = tflite_io.op_name(self.fb, op)
                if name in fmt.CUSTOM_CODES:
                    self._tfq[(g, i)] = self._prepare_tfq(g, i, sg, op, name)
                elif name.startswith("TFQ_"):
                    raise ReferenceExecutorError(f"{self.name}: node {i} of subgraph {g}: unknown tfq "
                                                 f"custom op {name!r} (known: {', '.join(fmt.CUSTOM_CODES)})")
        self._handover = self._handover_tensors() if mode == "delegate" and self.int8_handover else set()
        sg = self.fb.subgraphs[0]
        self.input_details = [self._details(sg, i) for i in sg.inputs]
        self.output_details = [self._details(sg, i) for i in sg.outputs]

    def _handover_tensors(self):
        """(subgraph, tensor) pairs the delegate hands over as int8 (docs/delegate.md).

        The output of a RELU6 tfq convolution that is read by exactly one op
        input, a later tfq convolution, and is not a subgraph output.
        """
        found = set()
        for g, sg in enumerate(self.fb.subgraphs):
            ops = list(sg.operators or [])
            readers = {}
            for i, op in enumerate(ops):
                for t in op.inputs:
                    readers.setdefault(int(t), []).append(i)
            outputs = {int(t) for t in sg.outputs}
            for i, op in enumerate(ops):
                node = self._tfq.get((g, i))
                if node is None or tflite_io.op_name(self.fb, op) not in _CONV_OPS or \
                        node["opts"]["activation"] != "RELU6":
                    continue
                out = int(op.outputs[0])
                r = readers.get(out, [])
                if out in outputs or len(r) != 1 or r[0] <= i or (g, r[0]) not in self._tfq:
                    continue
                consumer = ops[r[0]]
                if tflite_io.op_name(self.fb, consumer) in _CONV_OPS and int(consumer.inputs[0]) == out:
                    found.add((g, out))
        return found

    @staticmethod
    def _details(sg, idx):
        t = sg.tensors[idx]
        sig = t.shapeSignature if t.shapeSignature is not None else t.shape
        return {"index": int(idx), "name": tflite_io.tensor_name(t),
                "shape": [int(v) for v in t.shape], "shape_signature": [int(v) for v in sig],
                "dtype": tflite_io.NUMPY_TYPES.get(t.type)}

    @property
    def dynamic_batch(self):
        return all(d["shape_signature"] and d["shape_signature"][0] == -1 for d in self.input_details)

    # ------------------------------------------------------------ tfq nodes
    def _const(self, g, sg, idx):
        key = (g, idx)
        if key not in self._consts:
            self._consts[key] = tflite_io.constant_array(self.fb, self.data, sg.tensors[idx])
        return self._consts[key]

    def _prepare_tfq(self, g, i, sg, op, name):
        where = f"{self.name}: node {i} ({name}) of subgraph {g}"
        opts = fmt.decode_options(np.asarray(op.customOptions if op.customOptions is not None else [],
                                             dtype=np.uint8).tobytes(), where)
        try:
            opts = fmt.validate_options(opts, name, where)
        except ValueError as err:
            raise ReferenceExecutorError(str(err)) from None
        inputs = [int(x) for x in op.inputs]
        if len(inputs) != 4:
            raise ReferenceExecutorError(f"{where}: expected 4 inputs (x, packed, scales, bias), got {len(inputs)}")
        packed = self._const(g, sg, inputs[1]) if inputs[1] >= 0 else None
        if packed is None or sg.tensors[inputs[1]].type != schema.TensorType.UINT8:
            raise ReferenceExecutorError(f"{where}: input 1 must be a constant uint8 tensor of packed codes")
        if not fmt.is_sparse(opts):
            expected = fmt.weight_bytes_expected(opts)
            if packed.size != expected:
                kind = "format v2 dense" if fmt.is_compact(opts) else "format v1"
                raise ReferenceExecutorError(f"{where}: packed weights have {packed.size} bytes, {kind} "
                                             f"needs {expected} for rows={opts['rows']}, k={opts['k']}, "
                                             f"bits={opts['bits']}")
        scales = self._const(g, sg, inputs[2]) if inputs[2] >= 0 else None
        out_ch = opts["weight_shape"][3] if name == "TFQ_DEPTHWISE_CONV_2D" else opts["weight_shape"][0]
        if scales is None or sg.tensors[inputs[2]].type != schema.TensorType.FLOAT32 or \
                scales.size not in (1, out_ch):
            raise ReferenceExecutorError(f"{where}: input 2 must be constant float32 scales of size 1 "
                                         f"or {out_ch}")
        bias = None
        if inputs[3] >= 0:
            bias = self._const(g, sg, inputs[3])
            if bias is None or bias.size != out_ch:
                raise ReferenceExecutorError(f"{where}: bias must be a constant float32 tensor of size {out_ch}")
            bias = bias.astype(np.float64).reshape(-1)
        try:
            if fmt.is_sparse(opts):
                # Version 2: the stored blocks, zero elsewhere (validated while unpacking).
                codes = fmt.unpack_sparse(packed, opts, "block-sparse weights")
            else:
                codes = fmt.unpack_dense(packed, opts)
            levels = fmt.codes_to_levels(codes, opts["scheme"])
        except ValueError as err:
            raise ReferenceExecutorError(f"{where}: {err}") from None
        scales = scales.astype(np.float32).reshape(-1)
        if name == "TFQ_DEPTHWISE_CONV_2D":
            kh, kw, o = opts["weight_shape"][1:]
            lv = levels.reshape(1, kh, kw, o)
            w = lv * scales.reshape(1, 1, 1, -1)
        else:
            lv = levels.reshape(opts["weight_shape"])
            w = lv * scales.reshape([-1] + [1] * (lv.ndim - 1))
        # integer accumulation is exact in float32 while |acc| < 2^24
        bound = opts["k"] * schemes.SCHEMES[opts["scheme"]].max_level * 127
        acc_dtype = np.float32 if bound < 2 ** 24 else np.float64
        return {"opts": opts, "levels": lv.astype(np.float64), "weights": w.astype(np.float32),
                "acc_dtype": acc_dtype,
                "scales": scales.astype(np.float64), "bias": bias, "where": where}

    def _run_tfq(self, name, node, x, out_rank, handed=False):
        opts, mode = node["opts"], self.mode
        act = opts["activation"]
        x = np.asarray(x, np.float32)
        if name == "TFQ_FULLY_CONNECTED":
            k = opts["k"]
            if x.shape[-1] != k and x.size % k:
                raise ReferenceExecutorError(f"{node['where']}: input of shape {x.shape} does not have k={k}")
            lead = x.shape[:-1] if x.shape[-1] == k else (x.size // k,)
            x2 = x.reshape(-1, k)
            if mode == "float":
                y = x2.astype(np.float64) @ node["weights"].astype(np.float64).T
            else:
                def linear(v):
                    q, s = quantize_activations(v, axes=1)
                    acc = (q.astype(node["acc_dtype"]) @ node["levels"].T.astype(node["acc_dtype"])
                           ).astype(np.float64)
                    return _dequant(acc, node["scales"], s)

                y = linear(x2)
                if self.activation_passes == 2:
                    y = y + linear(quantization_residual(x2, axes=1))
            if node["bias"] is not None:
                y = y + node["bias"]
            y = _act(y, act)
            return y.reshape(*lead, -1) if out_rank == len(lead) + 1 else y
        stride = (opts["stride_h"], opts["stride_w"])
        dil = (opts["dilation_h"], opts["dilation_w"])
        if x.ndim != 4:
            raise ReferenceExecutorError(f"{node['where']}: input must be NHWC, got shape {x.shape}")
        if name == "TFQ_CONV_2D":
            if x.shape[3] != opts["weight_shape"][3]:
                raise ReferenceExecutorError(f"{node['where']}: input has {x.shape[3]} channels, "
                                             f"weights expect {opts['weight_shape'][3]}")
            if mode == "float":
                return conv2d(x, node["weights"], node["bias"], stride, dil, opts["padding"], act)
            def accumulate(q):
                return conv2d(q, node["levels"], None, stride, dil, opts["padding"],
                              dtype=node["acc_dtype"]).astype(np.float64)
        else:
            mult = opts["depth_multiplier"]
            if x.shape[3] * mult != opts["weight_shape"][3]:
                raise ReferenceExecutorError(f"{node['where']}: input has {x.shape[3]} channels, "
                                             f"depth_multiplier {mult} needs {opts['weight_shape'][3] // mult}")
            if mode == "float":
                return depthwise_conv2d(x, node["weights"], node["bias"], stride, dil,
                                        opts["padding"], mult, act)
            def accumulate(q):
                return depthwise_conv2d(q, node["levels"], None, stride, dil, opts["padding"], mult,
                                        dtype=node["acc_dtype"]).astype(np.float64)
        q, s = quantize_handover(x) if handed and x.shape[0] == 1 else \
            quantize_activations(x, axes=(1, 2, 3))
        y = _dequant(accumulate(q), node["scales"], s)
        if self.activation_passes == 2:
            q, s = quantize_activations(quantization_residual(x, axes=(1, 2, 3)), axes=(1, 2, 3))
            y = y + _dequant(accumulate(q), node["scales"], s)
        if node["bias"] is not None:
            y = y + node["bias"]
        return _act(y, act)

    # ------------------------------------------------------------ running
    def run(self, *inputs):
        """Runs subgraph 0 on the given inputs (NumPy arrays); returns the list of outputs."""
        if len(inputs) != len(self.input_details):
            raise ValueError(f"{self.name}: model has {len(self.input_details)} inputs, "
                             f"got {len(inputs)}")
        arrays = []
        for d, x in zip(self.input_details, inputs):
            x = np.asarray(x, dtype=d["dtype"])
            want = d["shape_signature"]
            if len(want) != x.ndim or any(w not in (-1, v) for w, v in zip(want, x.shape)) and \
                    list(x.shape) != d["shape"]:
                raise ValueError(f"{self.name}: input {d['name']!r} expects shape {want}, "
                                 f"got {list(x.shape)}")
            arrays.append(x)
        return self._run_subgraph(0, arrays)

    def predict(self, x, batch_size=256):
        """Runs a single-input model over x [N, ...]; returns the first output [N, ...]."""
        x = np.asarray(x, np.float32)
        if self.dynamic_batch:
            return np.concatenate([self.run(x[i:i + batch_size])[0]
                                   for i in range(0, len(x), batch_size)])
        return np.concatenate([self.run(x[i:i + 1])[0] for i in range(len(x))])

    def _run_subgraph(self, g, inputs):
        sg = self.fb.subgraphs[g]
        values = {}
        for idx, x in zip(sg.inputs, inputs):
            values[int(idx)] = x

        def get(idx):
            if idx < 0:
                return None
            if idx in values:
                return values[idx]
            c = self._const(g, sg, idx)
            if c is None:
                raise ReferenceExecutorError(f"{self.name}: subgraph {g} reads tensor {idx} "
                                             f"({tflite_io.tensor_name(sg.tensors[idx])!r}) before it is computed")
            return c

        for i, op in enumerate(sg.operators or []):
            name = tflite_io.op_name(self.fb, op)
            ins = [get(int(t)) for t in op.inputs]
            outs = [int(t) for t in op.outputs]
            if (g, i) in self._tfq:
                results = [self._run_tfq(name, self._tfq[(g, i)], ins[0],
                                         len(sg.tensors[outs[0]].shape),
                                         (g, int(op.inputs[0])) in self._handover)]
            else:
                fn = _BUILTINS.get(name)
                if fn is None:
                    raise NotImplementedError(f"{self.name}: the reference executor does not "
                                              f"implement op {name} (node {i} of subgraph {g})")
                results = fn(self, op, ins, sg, outs)
                if not isinstance(results, (list, tuple)):
                    results = [results]
            for idx, r in zip(outs, results):
                t = sg.tensors[idx]
                dtype = tflite_io.NUMPY_TYPES.get(t.type, np.float32)
                values[idx] = np.asarray(r).astype(dtype, copy=False)
        return [values[int(i)] if int(i) in values else get(int(i)) for i in sg.outputs]


def _dequant(acc, scales, s):
    """acc * (scale / s), with the output = 0 (bias only) where s == 0."""
    s = np.asarray(s, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    return acc * scales * factor


# ---------------------------------------------------------------- builtins
_BUILTINS = {}


def _builtin(*names):
    def register(fn):
        for n in names:
            _BUILTINS[n] = fn
        return fn
    return register


def _binary(fn):
    def run(self, op, ins, sg, outs):
        return _act(fn(ins[0], ins[1]), _fused(op))
    return run


_BUILTINS.update({
    "ADD": _binary(np.add), "SUB": _binary(np.subtract), "MUL": _binary(np.multiply),
    "DIV": _binary(np.divide), "MAXIMUM": _binary(np.maximum), "MINIMUM": _binary(np.minimum),
    "LESS": _binary(np.less), "GREATER": _binary(np.greater),
    "LESS_EQUAL": _binary(np.less_equal), "GREATER_EQUAL": _binary(np.greater_equal),
    "EQUAL": _binary(np.equal), "NOT_EQUAL": _binary(np.not_equal),
    "LOGICAL_AND": _binary(np.logical_and), "LOGICAL_OR": _binary(np.logical_or),
    "SQUARED_DIFFERENCE": _binary(lambda a, b: (a - b) ** 2),
    "FLOOR_DIV": _binary(np.floor_divide),
    "POW": _binary(np.power),
})


@_builtin("LOGISTIC")
def _logistic(self, op, ins, sg, outs):
    return 1.0 / (1.0 + np.exp(-np.asarray(ins[0], np.float64)))


@_builtin("TANH", "RELU", "RELU6", "EXP", "SQRT", "RSQRT", "NEG", "ABS", "LOG", "LOGICAL_NOT",
          "HARD_SWISH", "RELU_N1_TO_1", "FLOOR", "GELU", "SQUARE")
def _unary(self, op, ins, sg, outs):
    x = np.asarray(ins[0])
    name = tflite_io.op_name(self.fb, op)
    xf = x.astype(np.float64) if x.dtype.kind == "f" else x
    return {
        "TANH": np.tanh, "RELU": lambda v: np.maximum(v, 0), "RELU6": lambda v: np.clip(v, 0, 6),
        "EXP": np.exp, "SQRT": np.sqrt, "RSQRT": lambda v: 1 / np.sqrt(v), "NEG": np.negative,
        "ABS": np.abs, "LOG": np.log, "LOGICAL_NOT": np.logical_not, "FLOOR": np.floor,
        "HARD_SWISH": lambda v: v * np.clip(v + 3, 0, 6) / 6,
        "RELU_N1_TO_1": lambda v: np.clip(v, -1, 1), "SQUARE": np.square,
        "GELU": lambda v: 0.5 * v * (1 + _erf(v / np.sqrt(2))),
    }[name](xf)


def _erf(x):
    from math import erf
    return np.vectorize(erf)(x)


@_builtin("LEAKY_RELU")
def _leaky(self, op, ins, sg, outs):
    x = np.asarray(ins[0], np.float64)
    return np.where(x >= 0, x, x * op.builtinOptions.alpha)


@_builtin("SOFTMAX")
def _softmax(self, op, ins, sg, outs):
    beta = op.builtinOptions.beta if op.builtinOptions is not None else 1.0
    x = np.asarray(ins[0], np.float64) * beta
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@_builtin("RESHAPE")
def _reshape(self, op, ins, sg, outs):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        shape = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
    else:
        opts = op.builtinOptions
        shape = [int(v) for v in (opts.newShape if opts is not None and opts.newShape is not None
                                  else sg.tensors[outs[0]].shape)]
    if -1 not in shape and int(np.prod(shape)) != x.size and shape and shape[0] == 1:
        shape[0] = -1      # a batch-1 shape baked in by the converter; keep the batch dynamic
    return np.reshape(x, shape)


@_builtin("SHAPE")
def _shape(self, op, ins, sg, outs):
    return np.array(np.shape(ins[0]), dtype=np.int32)


@_builtin("SQUEEZE")
def _squeeze(self, op, ins, sg, outs):
    dims = op.builtinOptions.squeezeDims if op.builtinOptions is not None else None
    if dims is None or len(dims) == 0:
        return np.squeeze(ins[0])
    return np.squeeze(ins[0], axis=tuple(int(d) for d in dims))


@_builtin("REVERSE_V2")
def _reverse(self, op, ins, sg, outs):
    return np.flip(ins[0], axis=tuple(int(a) for a in np.asarray(ins[1]).reshape(-1)))


@_builtin("EXPAND_DIMS")
def _expand(self, op, ins, sg, outs):
    return np.expand_dims(ins[0], int(np.asarray(ins[1]).reshape(-1)[0]))


@_builtin("TRANSPOSE")
def _transpose(self, op, ins, sg, outs):
    return np.transpose(ins[0], [int(v) for v in ins[1]])


@_builtin("CONCATENATION")
def _concat(self, op, ins, sg, outs):
    o = op.builtinOptions
    return _act(np.concatenate(ins, axis=o.axis), o.fusedActivationFunction)


@_builtin("PACK")
def _pack(self, op, ins, sg, outs):
    return np.stack(ins, axis=op.builtinOptions.axis)


@_builtin("UNPACK")
def _unpack(self, op, ins, sg, outs):
    axis = op.builtinOptions.axis
    return [np.take(ins[0], i, axis=axis) for i in range(ins[0].shape[axis])]


@_builtin("SPLIT")
def _split(self, op, ins, sg, outs):
    axis = int(np.asarray(ins[0]).reshape(-1)[0])
    return np.split(ins[1], op.builtinOptions.numSplits, axis=axis)


@_builtin("SPLIT_V")
def _split_v(self, op, ins, sg, outs):
    sizes = [int(v) for v in ins[1]]
    axis = int(np.asarray(ins[2]).reshape(-1)[0])
    if -1 in sizes:
        sizes[sizes.index(-1)] = ins[0].shape[axis] - (sum(sizes) + 1)
    return np.split(ins[0], np.cumsum(sizes)[:-1], axis=axis)


@_builtin("GATHER")
def _gather(self, op, ins, sg, outs):
    return np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=op.builtinOptions.axis)


@_builtin("REDUCE_PROD", "SUM", "MEAN", "REDUCE_MAX", "REDUCE_MIN")
def _reduce(self, op, ins, sg, outs):
    axes = tuple(int(a) for a in np.asarray(ins[1]).reshape(-1))
    keep = bool(op.builtinOptions.keepDims) if op.builtinOptions is not None else False
    fn = {"REDUCE_PROD": np.prod, "SUM": np.sum, "MEAN": np.mean, "REDUCE_MAX": np.max,
          "REDUCE_MIN": np.min}[tflite_io.op_name(self.fb, op)]
    x = ins[0]
    return fn(x.astype(np.float64) if x.dtype.kind == "f" else x, axis=axes, keepdims=keep)


@_builtin("STRIDED_SLICE")
def _strided_slice(self, op, ins, sg, outs):
    o = op.builtinOptions
    if o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
        raise NotImplementedError("STRIDED_SLICE with ellipsis/new-axis/offset")
    x = ins[0]
    begin, end, strides = (np.asarray(v).reshape(-1) for v in ins[1:4])
    index = []
    for d in range(len(begin)):
        b = None if o.beginMask >> d & 1 else int(begin[d])
        e = None if o.endMask >> d & 1 else int(end[d])
        if o.shrinkAxisMask >> d & 1:
            index.append(int(begin[d]))
        else:
            index.append(slice(b, e, int(strides[d])))
    return np.asarray(x[tuple(index)])


@_builtin("SLICE")
def _slice(self, op, ins, sg, outs):
    begin = [int(v) for v in ins[1]]
    size = [int(v) for v in ins[2]]
    return ins[0][tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))]


@_builtin("PAD", "PADV2")
def _pad(self, op, ins, sg, outs):
    value = float(np.asarray(ins[2]).reshape(-1)[0]) if len(ins) > 2 else 0.0
    return np.pad(ins[0], np.asarray(ins[1]).astype(np.int64), constant_values=value)


@_builtin("CAST")
def _cast(self, op, ins, sg, outs):
    return ins[0]       # the output dtype is applied from the output tensor


@_builtin("DEQUANTIZE")
def _dequantize(self, op, ins, sg, outs):
    t = sg.tensors[int(op.inputs[0])]
    return _dequantize_tensor(t, ins[0])


def _dequantize_tensor(t, x):
    q = t.quantization
    x = np.asarray(x)
    if x.dtype.kind == "f" or q is None or q.scale is None or len(q.scale) == 0:
        return x.astype(np.float32)
    scale = np.asarray(q.scale, np.float64)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.float64)
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[q.quantizedDimension] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.size > 1 else zp
    return (x.astype(np.float64) - zp) * scale


def _weights(self, op, ins, sg, index):
    """Float weights of a builtin op (dequantizing int8/int4/int2 weights)."""
    t = sg.tensors[int(op.inputs[index])]
    return _dequantize_tensor(t, ins[index])


@_builtin("FULLY_CONNECTED")
def _fully_connected(self, op, ins, sg, outs):
    w = _weights(self, op, ins, sg, 1)
    x = np.asarray(ins[0], np.float64)
    k = w.shape[1]
    keep = bool(op.builtinOptions.keepNumDims) if op.builtinOptions is not None else False
    y = x.reshape(-1, k) @ w.T
    if len(ins) > 2 and ins[2] is not None:
        y = y + ins[2]
    y = _act(y, _fused(op))
    return y.reshape(*x.shape[:-1], -1) if keep else y


@_builtin("BATCH_MATMUL")
def _batch_matmul(self, op, ins, sg, outs):
    a, b = np.asarray(ins[0], np.float64), _weights(self, op, ins, sg, 1)
    o = op.builtinOptions
    if o is not None and o.adjX:
        a = np.swapaxes(a, -1, -2)
    if o is not None and o.adjY:
        b = np.swapaxes(b, -1, -2)
    return a @ b


@_builtin("CONV_2D")
def _conv(self, op, ins, sg, outs):
    o = op.builtinOptions
    w = _weights(self, op, ins, sg, 1)
    bias = ins[2] if len(ins) > 2 else None
    return conv2d(ins[0], w, bias, (o.strideH, o.strideW),
                  (max(1, o.dilationHFactor), max(1, o.dilationWFactor)),
                  "SAME" if o.padding == schema.Padding.SAME else "VALID", o.fusedActivationFunction)


@_builtin("DEPTHWISE_CONV_2D")
def _dwconv(self, op, ins, sg, outs):
    o = op.builtinOptions
    w = _weights(self, op, ins, sg, 1)
    bias = ins[2] if len(ins) > 2 else None
    mult = w.shape[3] // ins[0].shape[3]
    return depthwise_conv2d(ins[0], w, bias, (o.strideH, o.strideW),
                            (max(1, o.dilationHFactor), max(1, o.dilationWFactor)),
                            "SAME" if o.padding == schema.Padding.SAME else "VALID", mult,
                            o.fusedActivationFunction)


@_builtin("TRANSPOSE_CONV")
def _transpose_conv(self, op, ins, sg, outs):
    """TFLite TRANSPOSE_CONV: input pixel (iy, ix) adds x * W[o, kh, kw, :] at output
    (iy*stride + kh - pad_top, ix*stride + kw - pad_left); the padding is the SAME padding
    of the forward convolution from the output size (0 for VALID)."""
    o = op.builtinOptions
    w = np.asarray(_weights(self, op, ins, sg, 1), np.float64)         # [O, KH, KW, I]
    x = np.asarray(ins[2], np.float64)
    bias = ins[3] if len(ins) > 3 else None
    out_h, out_w = (int(v) for v in np.asarray(ins[0]).reshape(-1)[1:3])
    n, h, wd, _ = x.shape
    _, kh, kw, _ = w.shape
    sh, sw = max(1, o.strideH), max(1, o.strideW)
    same = o.padding == schema.Padding.SAME

    def pad_before(size_out, k, s):
        return max((-(-size_out // s) - 1) * s + k - size_out, 0) // 2 if same else 0
    ph, pw = pad_before(out_h, kh, sh), pad_before(out_w, kw, sw)
    full_h = max((h - 1) * sh + kh, ph + out_h)
    full_w = max((wd - 1) * sw + kw, pw + out_w)
    full = np.zeros((n, full_h, full_w, w.shape[0]))
    contrib = np.einsum("nhwc,ojkc->nhwjko", x, w)
    for j in range(kh):
        for l in range(kw):
            full[:, j:j + (h - 1) * sh + 1:sh, l:l + (wd - 1) * sw + 1:sw, :] += contrib[:, :, :, j, l, :]
    y = full[:, ph:ph + out_h, pw:pw + out_w, :]
    if bias is not None:
        y = y + bias
    return _act(y, getattr(o, "fusedActivationFunction", 0))


@_builtin("MAX_POOL_2D", "AVERAGE_POOL_2D")
def _pool(self, op, ins, sg, outs):
    o = op.builtinOptions
    x = np.asarray(ins[0], np.float64)
    padding = "SAME" if o.padding == schema.Padding.SAME else "VALID"
    is_max = tflite_io.op_name(self.fb, op) == "MAX_POOL_2D"
    fill = -np.inf if is_max else 0.0
    p = _patches_fill(x, o.filterHeight, o.filterWidth, o.strideH, o.strideW, padding, fill)
    if is_max:
        y = p.max(axis=(3, 4))
    else:
        ones = _patches_fill(np.ones_like(x[:1, :, :, :1]), o.filterHeight, o.filterWidth,
                             o.strideH, o.strideW, padding, 0.0)
        y = p.sum(axis=(3, 4)) / ones.sum(axis=(3, 4))
    return _act(y, o.fusedActivationFunction)


def _patches_fill(x, kh, kw, sh, sw, padding, fill):
    if padding == "VALID" or fill == 0.0:
        return _patches(x, kh, kw, sh, sw, 1, 1, padding)
    n, h, w, c = x.shape
    oh, pt, pb = _same_pad(h, kh, sh, 1)
    ow, pl, pr = _same_pad(w, kw, sw, 1)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    return _patches(xp, kh, kw, sh, sw, 1, 1, "VALID")


@_builtin("WHILE")
def _while(self, op, ins, sg, outs):
    o = op.builtinOptions
    values = list(ins)
    for _ in range(1_000_000):
        if not bool(np.asarray(self._run_subgraph(o.condSubgraphIndex, values)[0]).reshape(-1)[0]):
            return values
        values = self._run_subgraph(o.bodySubgraphIndex, values)
    raise ReferenceExecutorError(f"{self.name}: WHILE loop did not terminate")


@_builtin("FILL")
def _fill(self, op, ins, sg, outs):
    return np.full([int(v) for v in ins[0]], ins[1])


@_builtin("ZEROS_LIKE")
def _zeros_like(self, op, ins, sg, outs):
    return np.zeros_like(ins[0])


@_builtin("SPACE_TO_BATCH_ND")
def _space_to_batch(self, op, ins, sg, outs):
    x = np.asarray(ins[0])
    block = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
    pads = np.asarray(ins[2]).reshape(-1, 2).astype(np.int64)
    m = len(block)
    rest = x.ndim - 1 - m
    x = np.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)] * rest)
    n = x.shape[0]
    shape = [n]
    for d, b in enumerate(block):
        shape += [x.shape[1 + d] // b, b]
    shape += list(x.shape[1 + m:])
    x = x.reshape(shape)
    # [n, s0, b0, s1, b1, ..., rest] -> [b0, b1, ..., n, s0, s1, ..., rest]
    perm = [2 + 2 * d for d in range(m)] + [0] + [1 + 2 * d for d in range(m)] + \
        list(range(1 + 2 * m, x.ndim))
    x = x.transpose(perm)
    return x.reshape([n * int(np.prod(block))] + [shape[1 + 2 * d] for d in range(m)] +
                     list(shape[1 + 2 * m:]))


@_builtin("BATCH_TO_SPACE_ND")
def _batch_to_space(self, op, ins, sg, outs):
    x = np.asarray(ins[0])
    block = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
    crops = np.asarray(ins[2]).reshape(-1, 2).astype(np.int64)
    m = len(block)
    n = x.shape[0] // int(np.prod(block))
    x = x.reshape(block + [n] + list(x.shape[1:]))
    # [b0, ..., n, s0, ..., rest] -> [n, s0, b0, s1, b1, ..., rest]
    perm = [m]
    for d in range(m):
        perm += [m + 1 + d, d]
    perm += list(range(2 * m + 1, x.ndim))
    x = x.transpose(perm)
    spatial = [x.shape[1 + 2 * d] * block[d] for d in range(m)]
    x = x.reshape([n] + spatial + list(x.shape[1 + 2 * m:]))
    index = [slice(None)] + [slice(int(c[0]), s - int(c[1])) for c, s in zip(crops, spatial)]
    return x[tuple(index)]
