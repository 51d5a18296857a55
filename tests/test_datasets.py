"""tfq.datasets.mnist reads the gzipped IDX files offline."""

import gzip
import os

import numpy as np
import pytest

from tfq import datasets


def test_mnist_shapes_and_ranges():
    (x, y), (xt, yt) = datasets.mnist()
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (60000,) and set(np.unique(yt)) == set(range(10))


def test_corrupt_file_named(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in datasets._MNIST_FILES.values():
        with gzip.open(folder / name, "wb") as f:
            f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")  # 5 labels declared, 2 present
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        datasets.mnist(str(tmp_path))
