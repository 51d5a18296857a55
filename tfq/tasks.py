"""The three example tasks end to end: text recognition, digit detection, face / non-face.

Each task has a model builder, its training loss, its post-processing and
its metric, and every one runs the same tfq path: train float -> ADMM (and
pruning) with `tfq.ADMMCallback` -> `tfq.convert` -> LiteRT with the tfq
delegate (`run_tflite`). `examples/<task>/`, `benchmarks/tasks.py` and
`tests/test_tasks.py` use these functions; docs/tasks.md describes the data,
the networks and the metrics.
"""

import time

import numpy as np

from tfq import metrics

__all__ = [
    "compress_with_admm", "layers_except", "run_tflite", "agreement",
    "OCR_BLANK", "crnn", "ocr_targets", "train_ocr", "ocr_decode", "ocr_scores",
    "DETECTION_STRIDE", "centernet", "detection_prune_layers", "detection_targets", "detection_loss", "train_detector",
    "detection_decode", "detection_scores",
    "face_cnn", "face_loss", "augment_faces", "train_face", "face_folds", "window_crops", "face_probability", "hard_negatives", "group_windows",
    "train_face_search", "find_face", "ASTRONAUT_FACE",
]


# --------------------------------------------------------------------------
# Common: compression and LiteRT execution
# --------------------------------------------------------------------------


def _clone(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def compress_with_admm(model, x, y, loss, scheme, epochs, *, layers=None, sparsity=None, block=None,
                       prune_layers=None, batch_size=32, learning_rate=1e-3, seed=0, verbose=0, distribution="uniform"):
    """A compressed copy of a trained model: ADMM (and gradient-aware pruning) fine-tuning on (x, y).

    The ADMM schedule (rho and its growth, one fine-tuning epoch with frozen
    codes) is `tfq.compression.derive_schedule` for these steps and epochs, as
    `tfq.compress` uses; this function exists because the task losses (CTC,
    the detector's focal loss) are not classification losses.

    Args:
        model: the trained float model (not modified).
        x, y: training data.
        loss: the training loss.
        scheme: "binary", "ternary", "pow2_3bit" or "pow2_4bit".
        epochs: epochs in all (ADMM, then one fine-tuning epoch).
        layers: which layers, as for `tfq.ADMMCallback` (None: all but the
            first and the last supported layers).
        sparsity: pruning target in [0, 1), or None.
        block: pruning granularity, as for `tfq.PruningCallback` (None:
            single weights; "auto", "4x4", ...: whole blocks, which
            `tfq.convert(..., sparse="auto")` leaves out of the file); hidden
            channels are permuted first (`tfq.permute_channels`).
        prune_layers: which layers to prune (None: the same as `layers`).
        distribution: how `sparsity` is spread over the pruned kernels, as
            for `tfq.PruningCallback` ("uniform" or "erk").
        batch_size, learning_rate: training settings.
        seed: Keras random seed of the run.

    Returns:
        `(compressed model, seconds)`.
    """
    import keras

    from tfq.callbacks import ADMMCallback, PruningCallback
    from tfq.compression import derive_schedule

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    small = _clone(model)
    if sparsity and block is not None:
        from tfq.permutation import permute_channels

        permute_channels(small, block)
    steps = int(np.ceil(len(x) / batch_size))
    hp = derive_schedule(steps, epochs, learning_rate)
    small.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]), loss=loss)
    callbacks = []
    if sparsity:
        callbacks.append(PruningCallback(target_sparsity=sparsity, layers=prune_layers or layers, end_fraction=0.5,
                                         block=block, distribution=distribution))
    callbacks.append(ADMMCallback(scheme=scheme, layers=layers, rho=hp["rho"], rho_growth=hp["rho_growth"],
                                  rho_max=hp["rho_max"], finetune_epochs=hp["finetune_epochs"]))
    small.fit(x, y, batch_size=batch_size, epochs=hp["epochs"], callbacks=callbacks, verbose=verbose)
    return small, time.perf_counter() - t0


def layers_except(names=(), types=()):
    """A layer policy for `tfq.ADMMCallback` / `compress_with_admm`: every supported layer but these.

    Args:
        names: layer names to keep in float.
        types: layer classes to keep in float (e.g. `keras.layers.LSTM`).
    """
    from tfq.kernels import supported_kernels

    names, types = set(names), tuple(types)

    def policy(layer):
        keep = layer.name in names or (types and isinstance(layer, types)) or supported_kernels(layer) is None
        return None if keep else True

    return policy


def run_tflite(tflite_bytes, x, threads=1, batch=32, delegate_options=None):
    """Runs a .tflite on every input through LiteRT (with the tfq delegate when it has tfq ops).

    Models with a static batch of 1 (recurrent ones) run image by image;
    others in batches of `batch`. `delegate_options`: extra tfq delegate
    options (`tfq.runtime.load_delegate`), e.g. `{"activation_passes": 2}`.

    Returns:
        The stacked outputs of the first output tensor, float32.
    """
    from tfq import report

    interp = report.make_interpreter(tflite_bytes, threads, delegate_options=delegate_options)
    inp = interp.get_input_details()[0]
    fixed = int(inp["shape"][0]) == 1 and int(inp["shape_signature"][0]) == 1
    step = 1 if fixed else batch
    outs = []
    current = None
    for i in range(0, len(x), step):
        chunk = np.asarray(x[i : i + step], dtype=inp["dtype"])
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"], [len(chunk)] + list(inp["shape"][1:]))
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        outs.append(np.array(interp.get_tensor(interp.get_output_details()[0]["index"])))
    return np.concatenate(outs, 0)


def agreement(a, b):
    """Fraction of equal items of two equally long lists (decoded strings, class labels)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"agreement needs two non-empty lists of equal length, got {len(a)} and {len(b)}")
    return sum(list(np.atleast_1d(p)) == list(np.atleast_1d(q)) for p, q in zip(a, b)) / len(a)


def _predict(model, x, batch_size=64):
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


# Batch-norm moving-average momentum of the task models: their runs are a few hundred
# steps, too short for Keras' default 0.99 to reach the data's statistics.
_BN_MOMENTUM = 0.9


# --------------------------------------------------------------------------
# Text recognition: CRNN (conv stack -> bidirectional LSTM/GRU) + CTC
# --------------------------------------------------------------------------

OCR_BLANK = 0  # CTC blank; digit d is class d + 1


def crnn(height=32, width=160, rnn="lstm", units=48, filters=(16, 32, 48)):
    """A small CRNN: three conv-BN-ReLU blocks, then a bidirectional LSTM or GRU over the columns, then per-step logits.

    The conv stack pools height by 8 and width by 4, so the sequence has
    `width // 4` steps of 11 classes (blank + 10 digits).

    Args:
        height, width: input size (height a multiple of 8, width of 4).
        rnn: "lstm" or "gru".
        units: recurrent units per direction.
        filters: channels of the three conv blocks.
    """
    import keras
    from keras import layers

    if rnn not in ("lstm", "gru"):
        raise ValueError(f"rnn must be 'lstm' or 'gru', got {rnn!r}")
    if height % 8 or width % 4:
        raise ValueError(f"need height % 8 == 0 and width % 4 == 0, got {height}x{width}")
    cell = layers.LSTM if rnn == "lstm" else layers.GRU
    inp = keras.Input((height, width, 1), name="image")
    x = inp
    for i, (f, pool) in enumerate(zip(filters, ((2, 2), (2, 2), (2, 1)))):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(pool, name=f"pool{i + 1}")(x)
    x = layers.Permute((2, 1, 3), name="columns")(x)  # (width/4, height/8, filters)
    x = layers.Reshape((width // 4, (height // 8) * filters[-1]), name="sequence")(x)
    x = layers.Dense(64, activation="relu", name="proj")(x)
    x = layers.Bidirectional(cell(units, return_sequences=True, name=rnn), name=f"bi{rnn}")(x)
    out = layers.Dense(11, name="logits")(x)
    return keras.Model(inp, out, name=f"crnn_{rnn}")


def ocr_targets(y):
    """Digit labels padded with -1 -> CTC targets (digit + 1, padded with the blank 0)."""
    y = np.asarray(y)
    return np.where(y >= 0, y + 1, OCR_BLANK).astype(np.int32)


def train_ocr(model, x, y, epochs, batch_size=32, learning_rate=3e-3, seed=0, verbose=0):
    """Trains a CRNN in float with the CTC loss (`keras.losses.CTC`); returns seconds."""
    import keras

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model.compile(keras.optimizers.Adam(learning_rate), loss=keras.losses.CTC())
    model.fit(x, ocr_targets(y), batch_size=batch_size, epochs=epochs, verbose=verbose)
    return time.perf_counter() - t0


def ocr_decode(logits):
    """Greedy CTC decoding to digit lists."""
    return [[c - 1 for c in s] for s in metrics.ctc_greedy_decode(logits, blank=OCR_BLANK)]


def _digits(y):
    return [[int(d) for d in row if d >= 0] for row in np.asarray(y)]


def ocr_scores(logits, y):
    """{"cer": character error rate, "seq_acc": sequence accuracy} of the logits against digit labels."""
    pred, target = ocr_decode(logits), _digits(y)
    return {"cer": metrics.character_error_rate(pred, target), "seq_acc": metrics.sequence_accuracy(pred, target)}


# --------------------------------------------------------------------------
# Detection: a CenterNet-style one-stage detector with a depthwise-separable backbone
# --------------------------------------------------------------------------

DETECTION_STRIDE = 4  # input pixels per output cell
_NUM_CLASSES = 10


def centernet(size=96, width=32, num_classes=_NUM_CLASSES, deep_width=None, deep_blocks=2):
    """A small CenterNet-style detector.

    Backbone: a 3x3 stride-2 convolution, then depthwise-separable blocks
    (3x3 depthwise + 1x1 pointwise, each with batch norm and ReLU), two at
    stride 4 and two at stride 8, one
    nearest-neighbour upsampling back to stride 4 joined with the stride-4
    features. Two heads (depthwise-separable): class-centre heatmap logits
    (`num_classes` channels) and the box (centre offset x, y and size w, h in
    cells), concatenated into one (size/4, size/4, num_classes + 4) output.

    Args:
        size: input side (a multiple of 8).
        width: channels of the stride-4 blocks (the stem has half, the neck twice).
        num_classes: heatmap channels.
        deep_width: channels of the stride-8 blocks (None: `2 * width`). When
            it differs from `2 * width`, a 1x1 convolution reduces the
            stride-8 features to `2 * width` channels before the upsampling,
            so the stride-4 neck stays as cheap as in the default network.
        deep_blocks: depthwise-separable blocks at stride 8.
    """
    import keras
    from keras import layers

    if size % 8:
        raise ValueError(f"size must be a multiple of 8, got {size}")

    def sep(x, filters, stride, name):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_dw_bn")(x)
        x = layers.ReLU(name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_pw_bn")(x)
        return layers.ReLU(name=f"{name}_pw_relu")(x)

    inp = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(width // 2, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    s4 = sep(sep(x, width, 2, "b2"), width * 3 // 2, 1, "b3")
    deep = deep_width or width * 2
    if deep_blocks < 1:
        raise ValueError(f"deep_blocks must be >= 1, got {deep_blocks}")
    x = sep(s4, deep, 2, "b4")
    for i in range(deep_blocks - 1):
        x = sep(x, deep, 1, f"b{5 + i}")
    if deep != width * 2:
        x = layers.Conv2D(width * 2, 1, use_bias=False, name="reduce")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="reduce_bn")(x)
        x = layers.ReLU(name="reduce_relu")(x)
    x = layers.UpSampling2D(2, name="up")(x)
    x = layers.Concatenate(name="merge")([x, s4])
    x = sep(x, width * 2, 1, "neck")
    heads = []
    for name, channels in (("heatmap", num_classes), ("box", 4)):
        h = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(x)
        h = layers.ReLU(name=f"{name}_relu")(h)
        heads.append(layers.Conv2D(channels, 1, name=name, bias_initializer=(
            keras.initializers.Constant(-2.19) if name == "heatmap" else "zeros"))(h))
    out = layers.Concatenate(name="heads")(heads)
    return keras.Model(inp, out, name="centernet")


def detection_prune_layers(model, min_weights=2048):
    """The detector's block-pruning policy: every supported layer with at least `min_weights` weights, but the stem.

    Smaller kernels have a handful of 32x4 blocks (the default detector's
    16 -> 32 pointwise convolution has 4), and 90% of 4 blocks rounds to all
    of them: the layer would be cut off. Depthwise kernels are never
    block-pruned (`tfq.PruningCallback`).
    """
    return layers_except({"stem"} | {layer.name for layer in model.layers if layer.count_params() < min_weights})


def detection_targets(boxes, classes, size=96, num_classes=_NUM_CLASSES):
    """Dense training targets: Gaussian class heatmaps, offsets and sizes at the centre cells, a centre mask.

    Returns:
        float32 (n, size/4, size/4, num_classes + 5): heatmap, offset x/y,
        width/height in cells, mask (1 at each box's centre cell).
    """
    boxes, classes = np.asarray(boxes, np.float32), np.asarray(classes)
    g = size // DETECTION_STRIDE
    out = np.zeros((len(boxes), g, g, num_classes + 5), np.float32)
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float32)
    for i in range(len(boxes)):
        for b, c in zip(boxes[i], classes[i]):
            if c < 0:
                continue
            x0, y0, x1, y1 = b / DETECTION_STRIDE
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ix, iy = min(int(cx), g - 1), min(int(cy), g - 1)
            w, h = x1 - x0, y1 - y0
            sigma = max(0.4, (w + h) / 12.0)  # about a sixth of the box size, as CenterNet's radius rule
            heat = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma**2))
            out[i, :, :, c] = np.maximum(out[i, :, :, c], heat)
            out[i, iy, ix, num_classes : num_classes + 5] = (cx - ix, cy - iy, w, h, 1.0)
    return out


def _register(cls):
    import keras

    # Its own package: the "tfq>" names are the library's layers and quantizers.
    return keras.saving.register_keras_serializable(package="tfq_tasks")(cls)


def detection_loss(num_classes=_NUM_CLASSES, size_weight=0.1):
    """CenterNet's loss: penalty-reduced focal loss on the heatmap, L1 on offset and size at the centres.

    Returns a `keras.losses.Loss` (registered, so compiled models clone and save).
    """
    import keras
    from keras import ops

    @_register
    class CenterNetLoss(keras.losses.Loss):
        def __init__(self, num_classes=_NUM_CLASSES, size_weight=0.1, name="centernet_loss", **kwargs):
            super().__init__(name=name, **kwargs)
            self.num_classes, self.size_weight = int(num_classes), float(size_weight)

        def call(self, y_true, y_pred):
            k = self.num_classes
            heat_t, box_t, mask = y_true[..., :k], y_true[..., k : k + 4], y_true[..., k + 4 :]
            p = ops.clip(ops.sigmoid(y_pred[..., :k]), 1e-4, 1 - 1e-4)
            pos = ops.cast(heat_t >= 1.0 - 1e-6, "float32")
            pos_loss = -ops.log(p) * (1 - p) ** 2 * pos
            neg_loss = -ops.log(1 - p) * p**2 * (1 - heat_t) ** 4 * (1 - pos)
            n = ops.maximum(ops.sum(mask, axis=(1, 2, 3)), 1.0)
            focal = ops.sum(pos_loss + neg_loss, axis=(1, 2, 3)) / n
            diff = ops.abs(y_pred[..., k:] - box_t) * mask
            l1 = ops.sum(diff[..., :2], axis=(1, 2, 3)) + self.size_weight * ops.sum(diff[..., 2:], axis=(1, 2, 3))
            return focal + l1 / n

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes, "size_weight": self.size_weight}

    return CenterNetLoss(num_classes, size_weight)


def train_detector(model, x, boxes, classes, epochs, batch_size=32, learning_rate=2e-3, seed=0, verbose=0,
                   schedule="cosine"):
    """Trains the detector in float; returns seconds.

    `schedule="cosine"` decays the learning rate to 2% of `learning_rate` over
    the `epochs` (Keras' `CosineDecay`), so that the last epochs settle the
    model: at a constant rate the detectors were still improving after 8
    epochs, and compressed copies fine-tuned from them for more epochs came out
    ahead of their float parent (docs/tasks.md). `"constant"` keeps the rate.
    """
    import keras

    if schedule not in ("cosine", "constant"):
        raise ValueError(f"train_detector: unknown schedule {schedule!r}; expected 'cosine' or 'constant'")
    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    size = int(model.inputs[0].shape[1])
    if schedule == "cosine":
        steps = epochs * int(np.ceil(len(x) / batch_size))
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1), alpha=0.02)
    model.compile(keras.optimizers.Adam(learning_rate), loss=detection_loss())
    model.fit(x, detection_targets(boxes, classes, size), batch_size=batch_size, epochs=epochs, verbose=verbose)
    return time.perf_counter() - t0


def detection_decode(outputs, num_classes=_NUM_CLASSES, top_k=100, score_threshold=0.05, iou_threshold=0.5):
    """Post-processing: heatmap peaks (3x3 local maxima), top-k, boxes, class-wise NMS.

    Args:
        outputs: (n, g, g, num_classes + 4) raw model outputs.

    Returns:
        per image `(boxes (k, 4) in input pixels, scores (k,), classes (k,))`.
    """
    from scipy import ndimage

    outputs = np.asarray(outputs, np.float32)
    result = []
    for out in outputs:
        heat = 1.0 / (1.0 + np.exp(-out[..., :num_classes]))
        peaks = heat == ndimage.maximum_filter(heat, size=(3, 3, 1), mode="constant")
        ys, xs, cs = np.nonzero(peaks & (heat > score_threshold))
        scores = heat[ys, xs, cs]
        order = np.argsort(-scores, kind="stable")[:top_k]
        ys, xs, cs, scores = ys[order], xs[order], cs[order], scores[order]
        box = out[ys, xs, num_classes:]
        cx, cy = xs + box[:, 0], ys + box[:, 1]
        w, h = np.maximum(box[:, 2], 0.1), np.maximum(box[:, 3], 0.1)
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * DETECTION_STRIDE
        keep = []
        for c in np.unique(cs):
            idx = np.flatnonzero(cs == c)
            keep.extend(idx[metrics.nms(boxes[idx], scores[idx], iou_threshold)])
        keep = np.asarray(sorted(keep, key=lambda k: -scores[k]), np.int64)
        result.append((boxes[keep], scores[keep], cs[keep]))
    return result


def detection_scores(outputs, boxes, classes):
    """{"map50": VOC-style mAP@0.5, "map": COCO-style mAP@[.5:.95]} of raw outputs against the scenes' boxes."""
    dets = detection_decode(outputs)
    gts = [(b[c >= 0], c[c >= 0]) for b, c in zip(np.asarray(boxes), np.asarray(classes))]
    return {
        "map50": metrics.mean_average_precision(dets, gts, (0.5,), "voc", num_classes=_NUM_CLASSES),
        "map": metrics.mean_average_precision(dets, gts, metrics.COCO_IOU_THRESHOLDS, "coco",
                                              num_classes=_NUM_CLASSES),
    }


# --------------------------------------------------------------------------
# Face / non-face: a small CNN on lfw_subset, cross-validated
# --------------------------------------------------------------------------


def face_cnn(size=25, filters=(16, 32, 32)):
    """A small face / non-face CNN: three conv-BN-ReLU blocks, global average pooling, two logits."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 1), name="crop")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if i < len(filters) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="face_cnn")


def augment_faces(x, y, copies, seed=0, zoom=0.0, rotate=0.0, gamma=0.0):
    """`copies` augmented copies of each crop: horizontal flip, shifts of up to 2 pixels, contrast and brightness jitter.

    Args:
        x, y: crops (n, size, size, 1) in [0, 1] and their labels.
        copies: augmented copies per crop (the originals are kept too).
        seed: seed of the augmentation.
        zoom: also rescale each copy about its centre by a factor in
            [1 - zoom, 1 + zoom] (0: no rescaling). The sliding-window search
            sees faces between two pyramid scales and off-centre.
        rotate: also rotate by up to this many degrees (0: no rotation).
        gamma: also apply a gamma in [1 - gamma, 1 + gamma] (0: none), a
            lighting change that brightness and contrast do not cover.

    Returns:
        `(x, y)` with `(copies + 1) * n` crops, the originals first.
    """
    from scipy import ndimage

    rng = np.random.default_rng([seed, 0xFACE])
    xs, ys = [x], [y]
    centre = (np.asarray(x.shape[1:3], np.float64) - 1) / 2
    for _ in range(copies):
        out = np.empty_like(x)
        for i, img in enumerate(x[..., 0]):
            if rng.random() < 0.5:
                img = img[:, ::-1]
            img = ndimage.shift(img, rng.uniform(-2, 2, size=2), order=1, mode="nearest")
            if rotate:
                img = ndimage.rotate(img, rng.uniform(-rotate, rotate), reshape=False, order=1, mode="nearest")
            if zoom:
                scale = 1.0 / rng.uniform(1 - zoom, 1 + zoom)
                img = ndimage.affine_transform(img, np.eye(2) * scale, offset=centre * (1 - scale), order=1,
                                               mode="nearest")
            if gamma:
                img = np.clip(img, 0, 1) ** rng.uniform(1 - gamma, 1 + gamma)
            img = (img - img.mean()) * rng.uniform(0.7, 1.3) + img.mean() + rng.uniform(-0.1, 0.1)
            out[i, ..., 0] = np.clip(img, 0, 1)
        xs.append(out)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def face_loss():
    """The face classifier's loss: sparse categorical cross-entropy on its two logits."""
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_face(model, x, y, epochs, batch_size=32, learning_rate=2e-3, seed=0, verbose=0):
    """Trains the face CNN in float (sparse categorical cross-entropy on logits); returns seconds."""
    import keras

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model.compile(keras.optimizers.Adam(learning_rate), loss=face_loss())
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, shuffle=True)
    return time.perf_counter() - t0


def face_folds(y, k=5, seed=0):
    """Stratified k-fold split: a list of `(train indices, test indices)`, each class spread evenly."""
    y = np.asarray(y)
    if k < 2:
        raise ValueError(f"need k >= 2 folds, got {k}")
    rng = np.random.default_rng([seed, 0xF01D])
    fold_of = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


# The face in `skimage.data.astronaut()` (512x512), (x0, y0, x1, y1) in pixels, read off the image by hand
# with the tightness of lfw_subset's face crops (eyebrows-to-chin, cheek to cheek): the reference box
# the face search is measured against, never an input of the search.
ASTRONAUT_FACE = (180, 75, 275, 170)


def window_crops(image, window=25, scales=(2.0, 2.5, 3.0, 3.5, 4.0, 5.0), stride=3):
    """Every `window`-sized crop (step `stride`) of an image pyramid.

    Args:
        image: 2-D grayscale image in [0, 1].
        scales: shrink factors of the pyramid levels.

    Returns:
        `(crops (n, window, window, 1), boxes (n, 4) as (x0, y0, x1, y1) in image pixels)`.
    """
    from scipy import ndimage

    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    crops, boxes = [], []
    for s in scales:
        small = np.clip(ndimage.zoom(image, 1.0 / s, order=1), 0, 1)
        h, w = small.shape
        for y in range(0, h - window + 1, stride):
            for x in range(0, w - window + 1, stride):
                crops.append(small[y : y + window, x : x + window])
                boxes.append((x * s, y * s, (x + window) * s, (y + window) * s))
    if not crops:
        raise ValueError(f"image {image.shape} is smaller than one window at every scale")
    return np.stack(crops)[..., None], np.asarray(boxes, np.float32)


def face_probability(logits):
    """P(face) from the face CNN's two logits."""
    logits = np.asarray(logits, np.float64)
    return np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))


def hard_negatives(model, images, count, **window_args):
    """The `count` windows of face-free images that the model scores most face-like (for retraining)."""
    crops = np.concatenate([window_crops(img, **window_args)[0] for img in images])
    prob = face_probability(_predict(model, crops, batch_size=512))
    return crops[np.argsort(-prob, kind="stable")[:count]]


def group_windows(boxes, prob, threshold=0.5, iou=0.3):
    """The face box from scored windows: non-maximum suppression, then the best-supported group, fused.

    A face is found by many overlapping windows (neighbouring positions and
    scales), a false positive by few (the neighbour grouping of Viola-Jones).
    The windows above `threshold` go through greedy non-maximum suppression
    at IoU `iou` (`metrics.nms`); each surviving window's group is the
    candidate windows overlapping it by IoU >= `iou`, its support the sum of
    their probabilities. The group with the highest support wins, and its
    box is the probability-weighted mean of its windows' boxes.

    Returns:
        `(box (x0, y0, x1, y1), probability of the group's best window)`;
        with no window above `threshold`, the most face-like window.
    """
    boxes, prob = np.asarray(boxes, np.float64), np.asarray(prob, np.float64)
    cand = np.flatnonzero(prob > threshold)
    if not len(cand):
        j = int(np.argmax(prob))
        return boxes[j].astype(np.float32), float(prob[j])
    b, p = boxes[cand], prob[cand]
    overlap = metrics.box_iou(b, b) >= iou
    best = max(metrics.nms(b, p, iou), key=lambda k: (p[overlap[k]].sum(), p[k]))
    group = overlap[best]
    box = (b[group] * p[group, None]).sum(0) / p[group].sum()
    return box.astype(np.float32), float(p[best])


def train_face_search(x, y, *, background=3000, copies=6, epochs=10, rounds=2, per_image=300, seed=0, verbose=0):
    """A face / non-face CNN for the sliding-window search, trained with background and hard negatives.

    lfw_subset's 100 non-face crops are far too few for a search over
    thousands of windows. This trains on the given crops plus `background`
    crops of scikit-image's face-free sample images
    (`datasets.background_crops`, up to 8x shrunk), all augmented (flip,
    shift, zoom ±10%, rotation ±10°, gamma, contrast, brightness:
    `augment_faces`), then `rounds` times adds each sample image's
    `per_image` most face-like windows (`hard_negatives`) and trains again
    for `epochs // 2`. No window of the image searched later is used.

    Returns:
        `(model, (x, y))`: the float model and its last training set (for
        compressing it with `compress_with_admm`).
    """
    from tfq import datasets

    def augmented(xs, ys, n, s):
        return augment_faces(xs, ys, n, seed=s, zoom=0.1, rotate=10, gamma=0.3)

    bg = datasets.background_crops(background, seed=seed, max_zoom=8.0)
    xs, ys = np.concatenate([x, bg]), np.concatenate([y, np.zeros(len(bg), np.int64)])
    model = face_cnn()
    last = augmented(xs, ys, copies, seed)
    train_face(model, *last, epochs, seed=seed, verbose=verbose)
    for r in range(rounds):
        hard = np.concatenate([hard_negatives(model, [img], per_image, stride=4, scales=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0))
                               for img in datasets.background_images()])
        xs, ys = np.concatenate([xs, hard]), np.concatenate([ys, np.zeros(len(hard), np.int64)])
        last = augmented(xs, ys, max(copies // 2, 1), seed + r + 1)
        train_face(model, *last, max(epochs // 2, 1), seed=seed + r + 1, verbose=verbose)
    return model, last


def find_face(tflite_bytes, image, threads=1, **window_args):
    """Sliding-window face search through LiteRT: windows of an image pyramid, then `group_windows`.

    Every window of `window_crops(image, **window_args)` is scored by the face /
    non-face model through LiteRT (with the tfq delegate when needed).

    Returns:
        `(box (x0, y0, x1, y1) in image pixels, face probability)`.
    """
    crops, boxes = window_crops(image, **window_args)
    prob = face_probability(run_tflite(tflite_bytes, crops, threads=threads, batch=256))
    return group_windows(boxes, prob)
