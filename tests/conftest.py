"""Shared test fixtures (keep small): offline MNIST, quiet TensorFlow, tfq importable."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_SHARED = os.path.join(os.path.dirname(_ROOT), "shared", "datasets")
if "TFQ_DATA_DIR" not in os.environ and os.path.isdir(os.path.join(_SHARED, "mnist")):
    os.environ["TFQ_DATA_DIR"] = _SHARED

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_small():
    """512 training and 256 test images of MNIST (offline, from $TFQ_DATA_DIR)."""
    if not os.path.isdir(os.path.join(os.environ.get("TFQ_DATA_DIR", ""), "mnist")):
        pytest.fail("MNIST not found: set TFQ_DATA_DIR to the folder holding mnist/*.gz")
    from tfq import datasets

    (x, y), (xt, yt) = datasets.mnist()
    return (x[:512], y[:512]), (xt[:256], yt[:256])
