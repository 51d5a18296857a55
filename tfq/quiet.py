"""Importing TensorFlow without its start-up notices on stderr.

When TensorFlow 2.21 loads (directly, or through `import keras`) and first
lists its devices, its C++ code writes notices to stderr that no log level
removes: they are written before TensorFlow's logging is set up, so
`TF_CPP_MIN_LOG_LEVEL=2` leaves all of them; `3` removes only the
`E0000 ... failed call to cuInit ... (303)` line (an "error" on every machine
without an NVIDIA driver), and with it every real TensorFlow error;
`CUDA_VISIBLE_DEVICES=-1` or empty does not stop the cuInit probe;
`TF_ENABLE_ONEDNN_OPTS=0` removes the oneDNN line but changes the numerics.
So the command line and the demo import TensorFlow with stderr captured, and
write back every captured line that is not one of these known notices: a
real error during start-up still shows. docs/cli.md, "Quiet start-up", has
the measurements.
"""

import os
import re
import sys
import tempfile

# The start-up notices, by the C++ source file that writes them (what each says):
_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ "
    r"(port\.cc|cudart_stub\.cc|cuda_platform\.cc|cpu_feature_guard\.cc|cuda_executor\.cc|cuda_diagnostics\.cc"
    r"|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc)"  # oneDNN on; no CUDA driver; cuInit 303; CPU features; CUDA probing
    r":\d+\] "
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$)"
)


def is_startup_notice(line):
    """True for a line of TensorFlow's start-up chatter (see the module docstring)."""
    return bool(_NOTICE.match(line))


def import_tensorflow(verbose=False):
    """Imports TensorFlow and initializes its devices, keeping the start-up notices off stderr.

    Args:
        verbose: keep everything (for debugging start-up problems).

    Returns:
        The `tensorflow` module.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        try:
            os.dup2(captured.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) runs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not is_startup_notice(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
    return tf
