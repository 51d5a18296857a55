"""Writes the seed corpus of the libFuzzer target tfq_fuzz_node (tests/native/fuzz_corpus/).

Every tfq op kind (Conv2D 3x3, DepthwiseConv2D 3x3 stride 2 with multiplier
2, 1x1 Conv2D with ReLU6, FullyConnected) of two small converted models,
ternary with per-channel scales and pow2_4bit with one scale per tensor,
written as format version 1, exported with real tensors by
benchmarks/arm/export_nodes.py. One file per
node: its record (export_nodes.encode_node) followed by the neutral trailer
(reference kernels, one thread, no structure change; tests/native/fuzz_node.cc
describes the trailer), so the fuzzer has to find the structure choices
itself. Two more seeds are chains of the ReLU6 model (conv -> depthwise,
depthwise -> 1x1 conv; the delegate hands int8 codes over between them):
two records with the chain bit of the trailer between them. Three more are
the block-sparse (format version 2) Conv2D 3x3, 1x1 Conv2D and
FullyConnected of the ternary model with half of their 4x4 blocks zeroed
(tests/helpers/sparse_models.py). Two more are the ternary model's Conv2D
3x3 and FullyConnected as the converter writes them: version 2, rows ending
in 32-weight mini-blocks.
tests/test_libfuzzer.py checks that every seed is claimed and reproduces its
exported output bit for bit.

Usage: python tests/native/make_fuzz_corpus.py [OUT_DIR]
"""

import importlib.util
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "native" / "fuzz_corpus"
TRAILER = bytes(5)
CHAIN_TRAILER = bytes([0, 0, 0, 0, 1])
MODELS = [("ternary", True), ("pow2_4bit", False)]  # (scheme, per-channel scales)
INPUT_SHAPE = (5, 5, 2)
CHAIN_INPUT_SHAPE = (4, 4, 2)
CHAIN_LINKS = [(0, 1), (1, 2)]  # node pairs of relu6_chain
DENSE2_NODES = (0, 3)  # the cnn's Conv2D 3x3 and FullyConnected


def _exporter():
    spec = importlib.util.spec_from_file_location(
        "tfq_export_nodes", ROOT / "benchmarks" / "arm" / "export_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def seeds(tmp_dir):
    """{file name: bytes} of the corpus; tmp_dir receives the converted models."""
    from tfq.testing import random_compressed_tflite

    exporter = _exporter()
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    import sparse_models
    out = {}
    for i, (scheme, per_channel) in enumerate(MODELS):
        data, _ = random_compressed_tflite(scheme, "cnn", seed=i, per_channel=per_channel,
                                           input_shape=INPUT_SHAPE)
        path = pathlib.Path(tmp_dir) / f"{scheme}.tflite"
        path.write_bytes(sparse_models.dense_v1(data))
        image = np.random.default_rng(i).standard_normal((1, *INPUT_SHAPE)).astype(np.float32)
        nodes, _ = exporter.collect_nodes(path, image)
        for j, node in enumerate(nodes):
            name = f"{scheme}_{j}_{node[0].lower()}"
            out[name] = exporter.encode_node(*node) + TRAILER
    data, _ = random_compressed_tflite("ternary", "cnn", seed=0, input_shape=INPUT_SHAPE)
    # The same model as converted: its Conv2D and FullyConnected rows end in
    # mini-blocks (format version 2, layout dense).
    path = pathlib.Path(tmp_dir) / "ternary_dense2.tflite"
    path.write_bytes(bytes(data))
    image = np.random.default_rng(0).standard_normal((1, *INPUT_SHAPE)).astype(np.float32)
    nodes, _ = exporter.collect_nodes(path, image)
    for j in DENSE2_NODES:
        out[f"dense2_ternary_{j}_{nodes[j][0].lower()}"] = exporter.encode_node(*nodes[j]) + TRAILER
    _, sparse = sparse_models.sparse_pair(data, (4, 4), 0.5, seed=0)
    path = pathlib.Path(tmp_dir) / "ternary_sparse.tflite"
    path.write_bytes(sparse)
    image = np.random.default_rng(0).standard_normal((1, *INPUT_SHAPE)).astype(np.float32)
    nodes, _ = exporter.collect_nodes(path, image)
    for j, node in enumerate(nodes):
        if node[0] != "TFQ_DEPTHWISE_CONV_2D":
            out[f"sparse_ternary_{j}_{node[0].lower()}"] = exporter.encode_node(*node) + TRAILER
    data, _ = random_compressed_tflite("ternary", "chain", seed=len(MODELS),
                                       input_shape=CHAIN_INPUT_SHAPE)
    path = pathlib.Path(tmp_dir) / "chain.tflite"
    path.write_bytes(bytes(data))
    image = np.random.default_rng(len(MODELS)).standard_normal((1, *CHAIN_INPUT_SHAPE))
    # Without the hand-over the links are float tensors the exporter can read.
    nodes, _ = exporter.collect_nodes(path, image.astype(np.float32),
                                      delegate_options={"int8_handover": "0"})
    for a, b in CHAIN_LINKS:
        name = f"chain_{a}_{b}_{nodes[a][0].lower()}_{nodes[b][0].lower()}"
        out[name] = (exporter.encode_node(*nodes[a]) + CHAIN_TRAILER +
                     exporter.encode_node(*nodes[b]))
    return out


def main(argv=None):
    import tempfile

    argv = sys.argv[1:] if argv is None else argv
    dest = pathlib.Path(argv[0]) if argv else CORPUS
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = seeds(tmp)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    print(f"wrote {len(files)} seeds ({sum(map(len, files.values()))} bytes) to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
