"""Exports every tfq node of a converted model, with real tensors, for tfq_node_runner.

Runs the model on x86 in LiteRT with the tfq delegate (all tensors kept), and
writes, for each tfq custom node and each input image: the custom code and
options, the node's input activation, its packed weights, scales and bias,
and the output the delegate produced. `tfq_node_runner` (tests/native/,
cross-built for aarch64) feeds the same tensors to the delegate's node-level
path on ARM and compares the outputs bit for bit; with `--repeat` it also
times each node against the scalar reference on a real board.

File format (.tfqnodes, little endian): b"TFQNODES", u32 version (1), u32
node count; per node: u32 length + custom code, u32 length + options, then
five tensors (input, weights, scale, bias, expected output), each: u8 present,
u8 TfLiteType (1 float32, 3 uint8), u32 rank, i32 dims[rank], u64 byte count,
bytes.

Usage:
    python benchmarks/arm/export_nodes.py MODEL.tflite OUT.tfqnodes [--images N]
"""

import argparse
import pathlib
import struct
import sys
import warnings

import numpy as np

MAGIC = b"TFQNODES"
VERSION = 1
_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 3}


def _tensor_record(array, dims=None):
    if array is None:
        return struct.pack("<BBI", 0, 0, 0) + struct.pack("<Q", 0)
    a = np.ascontiguousarray(array)
    if a.dtype not in _TYPES:
        raise TypeError(f"unsupported tensor dtype {a.dtype} (float32 and uint8 only)")
    dims = list(a.shape if dims is None else dims)
    raw = a.tobytes()
    return (struct.pack("<BBI", 1, _TYPES[a.dtype], len(dims)) +
            struct.pack(f"<{len(dims)}i", *dims) + struct.pack("<Q", len(raw)) + raw)


def encode_node(code, options, tensors):
    """One node's record (a .tfqnodes file holds a header, then these)."""
    if len(tensors) != 5:
        raise ValueError(f"node {code}: expected 5 tensors, got {len(tensors)}")
    name = code.encode()
    out = [struct.pack("<I", len(name)) + name, struct.pack("<I", len(options)) + bytes(options)]
    out.extend(_tensor_record(t) for t in tensors)
    return b"".join(out)


def encode(nodes):
    """Serializes [(custom_code, options_bytes, [input, weights, scale, bias, output])]."""
    return b"".join([MAGIC, struct.pack("<II", VERSION, len(nodes))] +
                    [encode_node(*node) for node in nodes])


def collect_nodes(tflite_path, images, num_threads=1, delegate_options=None):
    """Runs `images` (one invoke each) through the model with the tfq delegate.

    `delegate_options` go to the delegate: {"int8_handover": "0"} keeps the
    tensors between chained ReLU6 convolutions in float tensors, where this
    reads them (with the hand-over they live in delegate memory).

    Returns the node list for `encode` (every tfq node, for every image) and
    the model outputs, shape (len(images), ...).

    Raises:
      ValueError: the model has no tfq custom op, or the images do not fit
        its input.
    """
    import tfq
    from tfq.converter import tflite_io
    from tfq.converter.format import CUSTOM_CODES

    model, data, name = tflite_io.load_model(str(tflite_path))
    sg = model.subgraphs[0]
    ops = [op for op in sg.operators if tflite_io.op_name(model, op) in CUSTOM_CODES]
    if not ops:
        raise ValueError(f"{name}: no tfq custom op to export (is it a tfq-converted model?)")
    with warnings.catch_warnings():
        # Keeping every tensor is the point here (debug-only in LiteRT's words).
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        interp = tfq.Interpreter(model_path=str(tflite_path), num_threads=num_threads,
                                 delegate_options=delegate_options,
                                 experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    consts = {}
    for op in ops:
        for slot in (1, 2, 3):
            idx = int(op.inputs[slot]) if slot < len(op.inputs) else -1
            if idx >= 0 and idx not in consts:
                t = sg.tensors[idx]
                arr = tflite_io.constant_array(model, data, t)
                if arr is None:
                    raise ValueError(f"{name}: input {slot} of a tfq op is not constant")
                consts[idx] = np.ascontiguousarray(arr)
    nodes, outputs = [], []
    for i, image in enumerate(np.asarray(images, dtype=np.float32)):
        x = image.reshape(inp["shape"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).copy())
        for op in ops:
            code = tflite_io.op_name(model, op)
            idx = [int(v) for v in op.inputs] + [-1] * (4 - len(op.inputs))
            tensors = [interp.get_tensor(idx[0]).astype(np.float32, copy=True),
                       consts[idx[1]].astype(np.uint8, copy=False),
                       consts[idx[2]].astype(np.float32, copy=False),
                       consts[idx[3]].astype(np.float32, copy=False) if idx[3] >= 0 else None,
                       interp.get_tensor(int(op.outputs[0])).astype(np.float32, copy=True)]
            options = bytes(np.asarray(op.customOptions, dtype=np.uint8).tobytes())
            nodes.append((code, options, tensors))
    return nodes, np.stack(outputs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=pathlib.Path, help="tfq-converted .tflite")
    p.add_argument("out", type=pathlib.Path, help="output .tfqnodes file")
    p.add_argument("--images", type=int, default=2, help="MNIST test images to run (28x28x1 models)")
    p.add_argument("--random-input", action="store_true",
                   help="feed standard-normal inputs instead of MNIST (any input shape)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.random_input:
        import tfq
        shape = tfq.Interpreter(model_path=str(args.model)).get_input_details()[0]["shape"]
        rng = np.random.default_rng(args.seed)
        images = rng.standard_normal((args.images, *shape[1:])).astype(np.float32)
    else:
        from tfq.datasets import mnist
        (_, _), (x_test, _) = mnist()
        images = x_test[:args.images]
    nodes, _ = collect_nodes(args.model, images)
    args.out.write_bytes(encode(nodes))
    print(f"wrote {len(nodes)} node(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
