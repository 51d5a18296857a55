"""LiteRT interpreters with the tfq delegate, for the delegate tests."""

import tfq


def litert(data, options=None, threads=None):
    """An ai_edge_litert Interpreter of the model bytes with the tfq delegate and `options`."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    delegate = load_delegate(tfq.delegate_path(), options or {})
    return Interpreter(model_content=bytes(data), experimental_delegates=[delegate], num_threads=threads)


def run_all(interp, x):
    """Every output of the model on batch x (the input resized to it), sorted by shape (LiteRT's order may vary)."""
    d = interp.get_input_details()[0]
    if list(d["shape"]) != list(x.shape):
        interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(d["index"], x)
    interp.invoke()
    outs = [interp.get_tensor(o["index"]).copy() for o in interp.get_output_details()]
    return sorted(outs, key=lambda a: a.shape)
