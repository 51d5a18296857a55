"""Crafted graphs whose tensors alias are refused by the delegate, cleanly.

A tfq node writes exactly the bytes its Prepare sized. When another node
writes the same tensor, that node's Prepare can resize it under ours, and
before the fix the earlier node overflowed the smaller buffer (a heap write
found by hand-editing one operator output index). Each case below is one such
edit of a converted model, run through the real LiteRT interpreter with every
kernel table this machine has and 1, 2 and 4 threads: the delegate must refuse
the node with a message naming the problem (docs/delegate.md, "Memory
invariants"). The same models run under AddressSanitizer in test_fuzz.py.
"""

import copy

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, load_delegate

import tfq
from tfq.converter import tflite_io
from tfq.testing import random_compressed_tflite

ALL_ISAS = ("reference", "avx2", "avx512vnni", "neon", "neon_dotprod")


def available_isas():
    """The kernel tables the delegate can pin on this machine (its `isa` option)."""
    found = []
    for isa in ALL_ISAS:
        try:
            load_delegate(tfq.delegate_path(), {"isa": isa})
        except ValueError:
            continue
        found.append(isa)
    return found


def _set_output(fb, op, tensor):
    fb.subgraphs[0].operators[op].outputs = np.array([tensor], dtype=np.int32)


def _input(fb, op, slot):
    return int(fb.subgraphs[0].operators[op].inputs[slot])


def _output(fb, op):
    return int(fb.subgraphs[0].operators[op].outputs[0])


def _insert_second_writer(fb):
    """A copy of the first convolution, placed right after it, writing the model output."""
    sg = fb.subgraphs[0]
    dup = copy.deepcopy(sg.operators[0])
    dup.outputs = np.array([sg.outputs[0]], dtype=np.int32)
    sg.operators.insert(1, dup)


# name: (model kind, edit(fb), expected message). Operator positions refer to
# the converted models: mlp = 3 x TFQ_FULLY_CONNECTED; cnn = TFQ_CONV_2D,
# TFQ_DEPTHWISE_CONV_2D, TFQ_CONV_2D (1x1), reshape ops, TFQ_FULLY_CONNECTED;
# chain = five ReLU6 tfq convolutions (one int8 hand-over partition), MEAN,
# TFQ_FULLY_CONNECTED.
CASES = {
    # The overflow as found: the second layer names the last layer's output.
    "two_tfq_writers": ("mlp", lambda fb: _set_output(fb, 1, _output(fb, 2)),
                        "is also written by node 2"),
    "inserted_second_writer": ("cnn", _insert_second_writer, "is also written by node"),
    "output_is_own_input": ("cnn", lambda fb: _set_output(fb, 0, _input(fb, 0, 0)),
                            "is also input 0 of the node"),
    "output_is_own_weights": ("cnn", lambda fb: _set_output(fb, 0, _input(fb, 0, 1)),
                              "is also input 1 of the node"),
    "output_is_own_scale": ("cnn", lambda fb: _set_output(fb, 0, _input(fb, 0, 2)),
                            "is also input 2 of the node"),
    "output_is_own_bias": ("mlp", lambda fb: _set_output(fb, 0, _input(fb, 0, 3)),
                           "is also input 3 of the node"),
    "output_is_other_nodes_scale": ("cnn", lambda fb: _set_output(fb, 0, _input(fb, 1, 2)),
                                    "is a constant"),
    "two_writers_of_a_handover_link": ("chain", lambda fb: _set_output(fb, 3, _output(fb, 1)),
                                       "is also written by node"),
    "builtin_writes_a_handover_link": ("chain", lambda fb: _set_output(fb, 5, _output(fb, 2)),
                                       "is also written by node 5"),
    "builtin_writes_a_tfq_scale": ("chain", lambda fb: _set_output(fb, 5, _input(fb, 6, 2)),
                                   "constant tensor"),
}


def crafted_models():
    """{case name: model bytes} of CASES (also run under ASan by test_fuzz.py)."""
    out = {}
    bases = {}
    for name, (kind, edit, _) in CASES.items():
        if kind not in bases:
            bases[kind] = bytes(random_compressed_tflite("ternary", kind, seed=0)[0])
        fb, _, _ = tflite_io.load_model(bases[kind])
        edit(fb)
        out[name] = tflite_io.save_model(fb)
    return out


@pytest.fixture(scope="module")
def crafted():
    return crafted_models()


def _run_all(data, options):
    interp = Interpreter(model_content=data,
                         experimental_delegates=[load_delegate(tfq.delegate_path(), options)])
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
    interp.invoke()


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_aliasing_graph_is_refused(crafted, name, threads):
    message = CASES[name][2]
    for isa in available_isas():
        with pytest.raises((RuntimeError, ValueError)) as info:
            _run_all(crafted[name], {"isa": isa, "num_threads": str(threads)})
        text = str(info.value)
        assert "tfq delegate: refusing node" in text and message in text, (isa, text)


def test_refusal_is_explained_first_by_tfq_interpreter(crafted):
    """tfq.Interpreter loads the delegate: the error starts with the node and the reason."""
    with pytest.raises(RuntimeError) as info:
        tfq.Interpreter(model_content=crafted["two_tfq_writers"]).allocate_tensors()
    text = str(info.value)
    assert text.startswith("The tfq delegate refused node 1 (TFQ_FULLY_CONNECTED): output tensor"), text
    assert "only the tfq delegate can run" not in text


def test_isa_option_pins_each_table_and_agrees_with_reference(capfd):
    isas = available_isas()
    assert isas[0] == "reference"
    for kind, shape in (("cnn", (1, 12, 12, 3)), ("chain", (1, 10, 10, 4)), ("mlp", (1, 784))):
        data = bytes(random_compressed_tflite("pow2_4bit", kind, seed=3)[0])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        outs = {}
        for isa in isas:
            interp = Interpreter(model_content=data, experimental_delegates=[
                load_delegate(tfq.delegate_path(), {"isa": isa, "verbosity": "1"})])
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            interp.invoke()
            outs[isa] = interp.get_tensor(interp.get_output_details()[0]["index"]).copy()
            assert f"kernels: {isa}" in capfd.readouterr().err, (kind, isa)
        for isa in isas:
            np.testing.assert_array_equal(outs[isa], outs["reference"], err_msg=f"{kind} {isa}")


def test_isa_option_refuses_unknown_and_unavailable():
    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"isa": "sse9"})
    missing = [i for i in ALL_ISAS if i not in available_isas()]
    assert missing, "an x86 or ARM build always lacks the other family's tables"
    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"isa": missing[0]})
