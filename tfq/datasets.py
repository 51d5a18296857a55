"""Datasets used by the demo, the tests and the benchmarks."""

import gzip
import os

import numpy as np

__all__ = ["mnist", "digit_strings", "digit_scenes", "lfw_faces", "background_images", "background_crops"]

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


# --------------------------------------------------------------------------
# Task datasets built from data that ships: MNIST and scikit-image's LFW subset
# (docs/tasks.md describes each generator).
# --------------------------------------------------------------------------


def _mnist_split(split, data_dir):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    (xtr, ytr), (xte, yte) = mnist(data_dir)
    return (xtr[..., 0], ytr) if split == "train" else (xte[..., 0], yte)


def _check_count(n, what="n"):
    if int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def _crop_ink(img, threshold=0.1):
    """The digit's ink: the image cropped to the rows and columns above `threshold`."""
    rows = np.flatnonzero(img.max(axis=1) > threshold)
    cols = np.flatnonzero(img.max(axis=0) > threshold)
    if rows.size == 0:
        return img
    return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resize(img, height, width):
    """Bilinear resize to (height, width), values kept in [0, 1]."""
    from scipy import ndimage

    zoom = (height / img.shape[0], width / img.shape[1])
    out = ndimage.zoom(img, zoom, order=1, mode="grid-constant", grid_mode=True)
    return np.clip(out[:height, :width], 0.0, 1.0)


def digit_strings(n, seed=0, split="train", min_digits=3, max_digits=10, height=32, width=160, data_dir=None):
    """Handwritten digit strings for text recognition (OCR), built from MNIST.

    Each image is one line of `min_digits`..`max_digits` MNIST digits of the
    split, each cropped to its ink, scaled to a random height of 40-75% of the
    line, rotated by up to 8 degrees, placed at a random vertical offset with a
    random gap of -1..4 pixels after the previous digit. The line's natural
    width varies with the digits; lines wider than `width` are squeezed
    horizontally to fit, narrower ones are padded with zeros on the right.
    The same arguments always give the same data.

    Args:
        n: number of images.
        seed: random seed.
        split: "train" or "test" (which MNIST digits are used).
        min_digits, max_digits: length range of the strings.
        height, width: image size in pixels.
        data_dir: where MNIST is read from (see `mnist`).

    Returns:
        `(x, y, widths)`: x float32 (n, height, width, 1) in [0, 1]; y int64
        (n, max_digits) digit labels padded with -1; widths int64 (n,) the
        used width of each line.
    """
    from scipy import ndimage

    n = _check_count(n)
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if height < 16 or width < height:
        raise ValueError(f"need height >= 16 and width >= height, got {height}x{width}")
    images, labels = _mnist_split(split, data_dir)
    rng = np.random.default_rng([seed, 0x0C5])
    x = np.zeros((n, height, width, 1), np.float32)
    y = np.full((n, max_digits), -1, np.int64)
    widths = np.zeros(n, np.int64)
    for i in range(n):
        k = int(rng.integers(min_digits, max_digits + 1))
        picks = rng.integers(0, len(images), size=k)
        line = np.zeros((height, 2 * width + 32 * k), np.float32)
        cursor = int(rng.integers(1, 5))
        for idx in picks:
            glyph = ndimage.rotate(_crop_ink(images[idx]), rng.uniform(-8, 8), reshape=True, order=1)
            glyph = _crop_ink(np.clip(glyph, 0, 1))
            gh = int(round(height * rng.uniform(0.40, 0.75)))
            gw = max(2, int(round(glyph.shape[1] * gh / glyph.shape[0])))
            glyph = _resize(glyph, gh, gw)
            top = int(rng.integers(0, height - gh + 1))
            line[top : top + gh, cursor : cursor + gw] = np.maximum(line[top : top + gh, cursor : cursor + gw], glyph)
            cursor += gw + int(rng.integers(-1, 5))
        used = cursor + int(rng.integers(1, 5))
        line = line[:, :used]
        if used > width:
            line = _resize(line, height, width)
            used = width
        x[i, :, :used, 0] = line
        y[i, :k] = labels[picks]
        widths[i] = used
    return x, y, widths


def digit_scenes(n, seed=0, split="train", size=96, max_digits=6, min_scale=16, max_scale=40, clutter=6,
                 data_dir=None):
    """Object-detection scenes: 1..`max_digits` MNIST digits on a cluttered canvas.

    Each digit is scaled to a random square side in [`min_scale`,
    `max_scale`] pixels and placed where its box overlaps no earlier box by
    more than IoU 0.15 (a digit that finds no place after 20 tries is left
    out). Clutter: `clutter` 5-9 pixel fragments of other digits at random
    places (not labelled) and Gaussian noise (sigma 0.05), clipped to [0, 1].
    Boxes are the digits' ink boxes. The same arguments always give the same
    data.

    Args:
        n: number of scenes.
        seed: random seed.
        split: "train" or "test" (which MNIST digits are used).
        size: canvas side in pixels.
        max_digits: most digits per scene (at least one).
        min_scale, max_scale: digit side range in pixels.
        clutter: number of clutter fragments per scene.
        data_dir: where MNIST is read from (see `mnist`).

    Returns:
        `(x, boxes, classes)`: x float32 (n, size, size, 1); boxes float32
        (n, max_digits, 4) as (x0, y0, x1, y1) pixel corners (x1, y1
        exclusive), padded with zeros; classes int64 (n, max_digits), padded
        with -1.
    """
    from tfq.metrics import box_iou

    n = _check_count(n)
    if max_digits < 1 or not 4 <= min_scale <= max_scale <= size:
        raise ValueError(
            f"need max_digits >= 1 and 4 <= min_scale <= max_scale <= size, got {max_digits}, "
            f"{min_scale}, {max_scale}, {size}"
        )
    images, labels = _mnist_split(split, data_dir)
    rng = np.random.default_rng([seed, 0xDE7])
    x = np.zeros((n, size, size, 1), np.float32)
    boxes = np.zeros((n, max_digits, 4), np.float32)
    classes = np.full((n, max_digits), -1, np.int64)
    for i in range(n):
        canvas = np.zeros((size, size), np.float32)
        for _ in range(clutter):
            src = images[int(rng.integers(0, len(images)))]
            fh, fw = rng.integers(5, 10, size=2)
            sy, sx = rng.integers(4, 24 - 9, size=2)
            frag = src[sy : sy + fh, sx : sx + fw]
            py, px = rng.integers(0, size - 9, size=2)
            canvas[py : py + fh, px : px + fw] = np.maximum(canvas[py : py + fh, px : px + fw], frag)
        k = int(rng.integers(1, max_digits + 1))
        placed = 0
        for _ in range(k):
            idx = int(rng.integers(0, len(images)))
            side = int(rng.integers(min_scale, max_scale + 1))
            glyph = _resize(images[idx], side, side)
            for _try in range(20):
                py, px = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                rows = np.flatnonzero(glyph.max(axis=1) > 0.1)
                cols = np.flatnonzero(glyph.max(axis=0) > 0.1)
                box = np.array([px + cols[0], py + rows[0], px + cols[-1] + 1, py + rows[-1] + 1], np.float32)
                if placed == 0 or box_iou(box[None], boxes[i, :placed]).max() <= 0.15:
                    break
            else:
                continue
            canvas[py : py + side, px : px + side] = np.maximum(canvas[py : py + side, px : px + side], glyph)
            boxes[i, placed] = box
            classes[i, placed] = labels[idx]
            placed += 1
        canvas += rng.normal(0.0, 0.05, size=canvas.shape).astype(np.float32)
        x[i, ..., 0] = np.clip(canvas, 0.0, 1.0)
    return x, boxes, classes


def lfw_faces():
    """Face / non-face crops: scikit-image's `skimage.data.lfw_subset()`.

    200 grayscale 25x25 crops shipped inside the scikit-image wheel (no
    download): 100 faces from Labeled Faces in the Wild, then 100 non-face
    crops from the same photographs.

    Returns:
        `(x, y)`: x float32 (200, 25, 25, 1) in [0, 1]; y int64 (200,), 1 for
        a face and 0 otherwise.
    """
    from skimage import data

    crops = np.asarray(data.lfw_subset(), dtype=np.float32)
    if crops.ndim != 3 or crops.shape[0] != 200:
        raise ValueError(f"skimage.data.lfw_subset(): expected 200 crops, got shape {crops.shape}")
    if crops.max() > 1.0:
        crops = crops / 255.0
    y = np.concatenate([np.ones(100, np.int64), np.zeros(100, np.int64)])
    return crops[..., None], y


# scikit-image sample images without faces (astronaut and camera show people;
# chelsea and cat show a cat's face), all shipped inside the wheel.
_BACKGROUND_IMAGES = ("coffee", "rocket", "text", "page", "moon", "brick", "grass", "gravel", "horse", "clock",
                      "coins", "immunohistochemistry")


def background_images():
    """The face-free scikit-image sample images behind `background_crops`, grayscale float32 in [0, 1]."""
    from skimage import data

    images = []
    for name in _BACKGROUND_IMAGES:
        img = np.asarray(getattr(data, name)(), np.float32)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        images.append(img / 255.0 if img.max() > 1.0 else img)
    return images


def background_crops(n, seed=0, size=25, min_zoom=1.0, max_zoom=6.0):
    """Non-face crops from scikit-image's shipped sample images, for the sliding-window face search.

    Each crop is a random `size`x`size` window of one of the sample images
    that show no face (coffee, rocket, text, page, moon, brick, grass, gravel,
    horse, clock, coins, immunohistochemistry), taken from the image shrunk by
    a random factor in [`min_zoom`, `max_zoom`], in grayscale [0, 1]. The same
    arguments always give the same crops.

    Returns:
        float32 (n, size, size, 1).
    """
    n = _check_count(n)
    rng = np.random.default_rng([seed, 0xB6])
    images = background_images()
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        img = images[int(rng.integers(0, len(images)))]
        zoom = rng.uniform(min_zoom, max_zoom)
        zoom = min(zoom, min(img.shape) / size)
        h, w = (int(np.ceil(size * zoom)) for _ in range(2))
        y0, x0 = int(rng.integers(0, img.shape[0] - h + 1)), int(rng.integers(0, img.shape[1] - w + 1))
        out[i, ..., 0] = np.clip(_resize(img[y0 : y0 + h, x0 : x0 + w], size, size), 0.0, 1.0)
    return out
