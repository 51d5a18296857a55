"""Running tfq models: the LiteRT interpreter with the tfq delegate attached.

`tfq.Interpreter` is an `ai_edge_litert.interpreter.Interpreter` that loads
the tfq external delegate (`libtfq_delegate.so`, see docs/delegate.md). The
same library works with LiteRT's own API:

    from ai_edge_litert.interpreter import Interpreter, load_delegate
    interp = Interpreter("m.tflite",
                         experimental_delegates=[load_delegate(tfq.delegate_path())])
"""

import glob
import os
import pathlib
import re
from importlib import metadata

from ai_edge_litert.interpreter import Interpreter as _LiteRtInterpreter

_LIB_NAME = "libtfq_delegate.so"

_HOW_TO_LOAD = (
    "This model contains tfq custom ops ({ops}), which only the tfq delegate can run. "
    "Use tfq.Interpreter(path), or pass experimental_delegates=[load_delegate(tfq.delegate_path())] "
    "to ai_edge_litert.interpreter.Interpreter (tf.lite.experimental.load_delegate works the same "
    "way with tf.lite.Interpreter). Original error: {err}"
)


def _candidates():
    env = os.environ.get("TFQ_DELEGATE_PATH")
    if env:
        yield pathlib.Path(env)
    here = pathlib.Path(__file__).resolve().parent
    # Wheel installs and the source tree (the CMake build copies the library here).
    yield here / "delegates" / _LIB_NAME
    # Editable installs: the file recorded in the installed distribution.
    try:
        dist = metadata.distribution("tfq")
        for f in dist.files or ():
            if f.name == _LIB_NAME:
                yield pathlib.Path(dist.locate_file(f))
    except metadata.PackageNotFoundError:  # not installed: the build dirs below remain
        pass
    root = here.parent
    for p in sorted(glob.glob(str(root / "build" / "*" / "tfq" / "delegates" / _LIB_NAME))):
        yield pathlib.Path(p)
    for p in sorted(glob.glob(str(root / "build" / "*" / _LIB_NAME))):
        yield pathlib.Path(p)


def delegate_path():
    """Returns the path of the tfq delegate library.

    Looks at `$TFQ_DELEGATE_PATH`, next to the installed package, in the
    installed distribution's files and in the repository's `build/` tree.

    Returns:
        The absolute path of `libtfq_delegate.so` as a string.

    Raises:
        FileNotFoundError: the library was not built; the message says how.
    """
    tried = []
    for p in _candidates():
        tried.append(str(p))
        if p.is_file():
            return str(p)
    raise FileNotFoundError(
        "libtfq_delegate.so not found (looked in: " + ", ".join(tried) + "). Build it with "
        "`pip install --no-build-isolation --no-deps -e .` from the repository (needs cmake and "
        "g++), or set TFQ_DELEGATE_PATH to the library."
    )


def load_delegate(options=None):
    """Loads the tfq delegate for LiteRT.

    Args:
        options: dict of delegate options (docs/delegate.md, "Options");
            bools may be given as True/False. Unknown keys or bad values make
            loading fail with a message naming the key.

            - `num_threads` (int, default 0: the interpreter's).
            - `force_reference` (bool, default False): scalar reference
              kernels only.
            - `isa` ("auto", the default, or one of "reference", "avx2",
              "avx512vnni", "neon", "neon_dotprod"): use at most that
              instruction set's kernels; refused when the CPU or the build
              lacks it.
            - `int8_handover` (bool, default True): a `TFQ_CONV_2D` or
              `TFQ_DEPTHWISE_CONV_2D` with a fused ReLU6 whose output is read
              only by the next tfq convolution (and is not a model output,
              batch 1) hands it int8 codes at the fixed scale 127/6 instead
              of a float tensor: the float tensor and the reader's
              quantization pass disappear (MobileNet-style expand ->
              depthwise -> project blocks; docs/delegate.md, "int8
              hand-over"). The fixed step is coarser than the per-image
              absmax step when the tensor's values stay well below 6, so
              outputs differ slightly from `False`, where every node reads
              and writes float tensors. The exact rule is in docs/format.md;
              `ReferenceInterpreter(..., int8_handover=...)` computes both.
            - `activation_passes` (1 or 2, default 1): with 2, every tfq op
              also runs on its input's int8 rounding residual and adds the
              two results: about 15 bits of activation precision for twice
              the multiply-adds (docs/delegate.md, "Activation precision").
              For models whose decisions are close calls, e.g. a CRNN decoded
              greedily over many steps; no int8 hand-over then.
            - `fuse_add` (bool, default True): a float ADD of a tfq
              convolution's output and a tensor of its shape runs in that
              convolution's epilogue (docs/delegate.md, "Fused residual
              addition").
            - `pad` (bool, default True): float zero PADs (ZeroPadding2D
              and the like) run in the delegate, each as its own partition
              (docs/delegate.md, "Zero padding").
            - `int8_conv` ("auto", or bool; default "auto"): LiteRT
              dynamic-range CONV_2Ds (int8 filter, float input and output:
              `tfq.convert(float_layers="int8")`'s first layer) run in the
              delegate's int8 kernels; "auto" where they have an exact fast
              path (AVX-512 VNNI) (docs/delegate.md, "8-bit convolutions").
            - `verbosity` (0-3, default 0): log claimed and refused nodes,
              shapes at prepare, per-node times to stderr.

    Returns:
        An `ai_edge_litert.interpreter.Delegate`.
    """
    from ai_edge_litert.interpreter import load_delegate as _load  # noqa: PLC0415

    opts = {}
    for key, value in (options or {}).items():
        if isinstance(value, bool):
            value = int(value)
        opts[str(key)] = str(value)
    return _load(delegate_path(), opts)


def _tfq_ops_in(model_path=None, model_content=None):
    try:
        data = model_content if model_content is not None else pathlib.Path(model_path).read_bytes()
    except OSError:
        return []
    names = ("TFQ_FULLY_CONNECTED", "TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D")
    return [n for n in names if n.encode() in data]


_REFUSAL = re.compile(r"tfq delegate: refusing node (-?\d+) \((\w+)\): ([^\n]*)")
_DELEGATE_ERROR = re.compile(r"tfq delegate: ([^\n]*)")


def _explain(err, model_path, model_content, delegate_loaded=True):
    """A RuntimeError that says first why a tfq model did not load, or None."""
    text = str(err)
    refusals = _REFUSAL.findall(text)
    if refusals:
        node, op, why = refusals[0]
        more = f" ({len(refusals) - 1} more node(s) refused)" if len(refusals) > 1 else ""
        return RuntimeError(
            f"The tfq delegate refused node {node} ({op}): {why.strip()}{more}. The model file may "
            f"be corrupt or crafted, or written by an incompatible tfq version. LiteRT reported: "
            + text)
    if delegate_loaded:
        failure = _DELEGATE_ERROR.search(text)
        if failure:
            return RuntimeError(f"The tfq delegate failed: {failure.group(1).strip()}. "
                                "LiteRT reported: " + text)
        if "unresolved custom op" in text.lower():
            ops = _tfq_ops_in(model_path, model_content) or ["TFQ_*"]
            return RuntimeError(
                f"The tfq delegate is loaded but did not claim this model's {', '.join(ops)} "
                "node(s) and reported no reason (delegate_options={'verbosity': 1} logs what it "
                "claims). LiteRT reported: " + text)
        return None
    if "unresolved custom op" in text.lower() or "TFQ_" in text:
        ops = _tfq_ops_in(model_path, model_content) or ["TFQ_*"]
        return RuntimeError(_HOW_TO_LOAD.format(ops=", ".join(ops), err=text))
    return None


class Interpreter(_LiteRtInterpreter):
    """A LiteRT `Interpreter` with the tfq delegate attached.

    Args:
        model_path: path of a `.tflite` file (or use `model_content`).
        model_content: the model as bytes.
        num_threads: threads for LiteRT (XNNPACK) and for the tfq delegate.
        delegate_options: extra tfq delegate options (see `load_delegate`).
        use_delegate: False runs the model without the tfq delegate (plain
            LiteRT: fails on tfq custom ops with an explanation).
        **kwargs: passed to `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        RuntimeError: the model has tfq custom ops that could not be resolved;
            the message says how to load the delegate.
    """

    def __init__(self, model_path=None, model_content=None, num_threads=None,
                 delegate_options=None, use_delegate=True, **kwargs):
        self._tfq_model = (model_path, model_content, use_delegate)
        delegates = list(kwargs.pop("experimental_delegates", None) or [])
        if use_delegate:
            opts = dict(delegate_options or {})
            if num_threads and "num_threads" not in opts:
                opts["num_threads"] = num_threads
            delegates.append(load_delegate(opts))
        try:
            super().__init__(model_path=model_path, model_content=model_content,
                             num_threads=num_threads, experimental_delegates=delegates or None,
                             **kwargs)
        except (RuntimeError, ValueError) as err:
            better = _explain(err, model_path, model_content, use_delegate)
            if better is not None:
                raise better from err
            raise

    def allocate_tensors(self):
        try:
            return super().allocate_tensors()
        except (RuntimeError, ValueError) as err:
            better = _explain(err, *self._tfq_model)
            if better is not None:
                raise better from err
            raise
