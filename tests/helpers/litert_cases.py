"""Runs a folder of .tflite cases in LiteRT with the tfq delegate; the same code on x86 and aarch64.

tests/test_arm_litert.py imports it on x86 (the host's LiteRT and delegate)
and runs it as a script inside the emulated aarch64 Python of
scripts/arm_env.sh (the aarch64 LiteRT wheel and the cross-compiled
delegate), so both sides run the models identically. It needs only numpy and
ai_edge_litert: the emulated Python has no TensorFlow, Keras or tfq.

A case folder holds `cases.json`, a list of dicts:
  name: the case's name; model: a .tflite file in the folder; input: a .npy
  file (float32, the batch); options: delegate options (strings);
  threads: interpreter threads or null; batch: true runs the whole batch in
  one invoke (input resized), false runs it image by image;
  reuse: invokes of one interpreter over several inputs (a list of .npy
  files) instead of `input`.
Outputs go to `OUT/<name>.npz` (arr_0, arr_1, ...: the model's outputs in
order). Before each case "=== case NAME" goes to stderr, so the delegate's
log (verbosity) can be split by case.

Usage: `litert_cases.py CASES OUT` or `litert_cases.py --crafted FOLDER
[OPTION_SETS_JSON]`, with the delegate library in $TFQ_DELEGATE_PATH.

`--crafted` runs every .tflite file of the folder (possibly corrupt models)
once per set of delegate options (a JSON list of dicts; default 2 threads):
a model the delegate or LiteRT refuses is fine, a crash is not; it prints
what happened to each and "CRAFTED DONE n ran, m refused".
"""

import json
import os
import pathlib
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter, load_delegate


def _interpreter(model, delegate_path, options=None, threads=None):
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    return Interpreter(model_content=model, num_threads=threads,
                       experimental_delegates=[load_delegate(delegate_path, opts)])


def _invoke(interp, x):
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def run_case(folder, case, delegate_path):
    """Runs one case; returns the list of outputs (stacked over images when image by image)."""
    folder = pathlib.Path(folder)
    model = (folder / case["model"]).read_bytes()
    interp = _interpreter(model, delegate_path, case.get("options"), case.get("threads"))
    inputs = [np.load(folder / f) for f in case.get("reuse") or [case["input"]]]
    index = interp.get_input_details()[0]["index"]
    if case.get("batch") or case.get("reuse"):
        outs = []
        for x in inputs:
            interp.resize_tensor_input(index, list(x.shape))
            interp.allocate_tensors()
            outs.append(_invoke(interp, x))
        # Several invokes of one interpreter: outputs stacked along a new first axis.
        return outs[0] if len(outs) == 1 else [np.stack(o) for o in zip(*outs)]
    interp.allocate_tensors()
    per_image = [_invoke(interp, row[None]) for row in inputs[0]]
    return [np.concatenate(o) for o in zip(*per_image)]


def run_folder(folder, out, delegate_path):
    """Runs every case of folder/cases.json, writing out/NAME.npz."""
    folder, out = pathlib.Path(folder), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for case in json.loads((folder / "cases.json").read_text()):
        print(f"=== case {case['name']}", file=sys.stderr, flush=True)
        outs = run_case(folder, case, delegate_path)
        np.savez(out / f"{case['name']}.npz", *outs)
    print("CASES DONE", flush=True)


def run_crafted(folder, delegate_path, option_sets=({"num_threads": 2},)):
    """Runs every .tflite file of the folder once per delegate option set, with random
    inputs; a refusal (an exception) is fine, a crash is not.

    Prints "crafted NAME OPTIONS" before each run (so a crash names it) and
    "  -> ran" or "  -> refused: MESSAGE" (its lines joined by " | ") after it.
    """
    ran = refused = 0
    for options in option_sets:
        tag = json.dumps(options, sort_keys=True, separators=(",", ":"))
        for i, path in enumerate(sorted(pathlib.Path(folder).glob("*.tflite"))):
            print(f"crafted {path.name} {tag}", flush=True)
            try:
                interp = _interpreter(path.read_bytes(), delegate_path, options)
                interp.allocate_tensors()
                details = interp.get_input_details()
                if any(np.prod(d["shape"], dtype=np.int64) > 4_000_000 for d in details):
                    raise ValueError("input too large for a quick run")  # valid but huge
                for d in details:
                    x = np.random.default_rng(i).standard_normal(d["shape"])
                    interp.set_tensor(d["index"], x.astype(d["dtype"]))
                interp.invoke()
                for d in interp.get_output_details():
                    interp.get_tensor(d["index"])
                ran += 1
                print("  -> ran", flush=True)
            except (ValueError, RuntimeError, IndexError, TypeError, MemoryError) as err:
                # LiteRT or the delegate said no: the outcome bounds checks are for.
                refused += 1
                text = " | ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())
                print(f"  -> refused: {(text or type(err).__name__)[:600]}", flush=True)
    print(f"CRAFTED DONE {ran} ran, {refused} refused", flush=True)


if __name__ == "__main__":
    delegate = os.environ["TFQ_DELEGATE_PATH"]
    if sys.argv[1] == "--crafted":
        option_sets = [json.loads(sys.argv[3])] if len(sys.argv) > 3 else []
        run_crafted(sys.argv[2], delegate, *option_sets)
    else:
        run_folder(sys.argv[1], sys.argv[2], delegate)
