"""Datasets used by the demo, the tests and the benchmarks."""

import gzip
import os

import numpy as np

__all__ = ["mnist"]

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    size = int(np.prod(dims))
    if len(data) - offset != size:
        raise ValueError(f"{path}: expected {size} bytes of data for shape {dims}, found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def mnist(data_dir=None):
    """MNIST digits.

    Reads the four gzipped IDX files from `data_dir/mnist/` (default
    `$TFQ_DATA_DIR/mnist/`) when they are all present, otherwise downloads the
    data with `keras.datasets.mnist`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: x float32 in [0, 1] with shape
        (N, 28, 28, 1), y int64 labels.
    """
    data_dir = data_dir if data_dir is not None else os.environ.get("TFQ_DATA_DIR")
    arrays = None
    if data_dir:
        folder = os.path.join(data_dir, "mnist")
        paths = {k: os.path.join(folder, v) for k, v in _MNIST_FILES.items()}
        if all(os.path.exists(p) for p in paths.values()):
            arrays = {k: _read_idx(p) for k, p in paths.items()}
    if arrays is None:
        import keras

        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
        arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
    for split in ("train", "test"):
        if arrays[f"x_{split}"].shape[0] != arrays[f"y_{split}"].shape[0]:
            raise ValueError(f"MNIST {split}: image and label counts differ")

    def images(x):
        return (x.astype(np.float32) / 255.0)[..., None]

    return (
        (images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
        (images(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
    )
