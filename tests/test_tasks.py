"""The three example tasks (OCR, detection, face): metric fixtures, generators, small end-to-end pipelines.

The pipelines are small on purpose (a few hundred samples, one float epoch,
two ADMM epochs): they check that each network trains, compresses, converts
with packed ops and runs through the tfq delegate in agreement with Keras,
not how accurate it gets (that is benchmarks/tasks.py).
"""

import numpy as np
import pytest

from tfq import datasets, metrics


# ------------------------------------------------------------------ metric fixtures (computed by hand)


def _one_hot_path(path, classes=4):
    logits = np.full((1, len(path), classes), -5.0)
    logits[0, np.arange(len(path)), path] = 5.0
    return logits


def test_ctc_greedy_decode():
    assert metrics.ctc_greedy_decode(_one_hot_path([0, 1, 1, 0, 1, 2, 2, 0])) == [[1, 1, 2]]
    assert metrics.ctc_greedy_decode(_one_hot_path([3, 3, 3])) == [[3]]
    assert metrics.ctc_greedy_decode(_one_hot_path([0, 0])) == [[]]
    assert metrics.ctc_greedy_decode(_one_hot_path([2, 2, 1]), blank=2) == [[1]]
    with pytest.raises(ValueError, match="batch, steps, classes"):
        metrics.ctc_greedy_decode(np.zeros((3, 4)))


def test_edit_distance_cer_sequence_accuracy():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance([], [1, 2]) == 2
    preds, targets = [[1, 2, 3], [4]], [[1, 2, 3], [4, 5]]
    assert metrics.character_error_rate(preds, targets) == pytest.approx(1 / 5)
    assert metrics.sequence_accuracy(preds, targets) == 0.5
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        metrics.sequence_accuracy(preds, targets[:1])


def test_box_iou_and_nms():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], float)
    np.testing.assert_allclose(metrics.box_iou(a, b), [[1 / 7, 1, 0], [4 / 16, 4 / 16, 0]])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)  # IoU(0, 1) = 81/119
    np.testing.assert_array_equal(metrics.nms(boxes, [0.9, 0.8, 0.7], 0.5), [0, 2])
    np.testing.assert_array_equal(metrics.nms(boxes, [0.9, 0.8, 0.7], 0.7), [0, 1, 2])
    np.testing.assert_array_equal(metrics.nms(boxes, [0.1, 0.8, 0.7], 0.5), [1, 2])
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        metrics.box_iou(np.zeros((2, 3)), b)


_GT = (np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float), np.array([0, 0, 0]))


def _dets(third_box):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], third_box, [60, 0, 70, 10]], float)
    return boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 0, 0])


def test_average_precision_voc_and_coco_by_hand():
    # TP, FP (duplicate), TP, FP: recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2.
    dets = _dets([20, 0, 30, 10])
    # VOC all-point: 1/3 * 1 + 1/3 * 2/3.
    assert metrics.mean_average_precision([dets], [_GT], (0.5,), "voc") == pytest.approx(5 / 9)
    # COCO 101-point: recall 0..0.33 (34 points) at 1, 0.34..0.66 (33 points) at 2/3, the rest 0.
    assert metrics.mean_average_precision([dets], [_GT], (0.5,), "coco") == pytest.approx(56 / 101)
    assert metrics.average_precision([1 / 3, 1 / 3, 2 / 3, 2 / 3], [1, 0.5, 2 / 3, 0.5], "voc") == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="'voc' or 'coco'"):
        metrics.average_precision([1.0], [1.0], "pascal")


def test_coco_map_over_iou_thresholds_by_hand():
    # The third detection overlaps its box with IoU 80/120 = 2/3: a hit at 0.50-0.65, a miss at 0.70-0.95.
    dets = _dets([22, 0, 32, 10])
    expected = (4 * 56 / 101 + 6 * 34 / 101) / 10
    assert metrics.mean_average_precision([dets], [_GT], metrics.COCO_IOU_THRESHOLDS, "coco") == pytest.approx(expected)


def test_map_classes_and_images():
    # Class 1 has detections but no ground truth (left out); class 2 has ground truth but no detection (AP 0).
    gt2 = (np.array([[0, 0, 5, 5]], float), np.array([2]))
    det2 = (np.array([[0, 0, 5, 5]], float), np.array([0.99]), np.array([1]))
    value = metrics.mean_average_precision([_dets([20, 0, 30, 10]), det2], [_GT, gt2], (0.5,), "voc")
    assert value == pytest.approx((5 / 9 + 0.0) / 2)
    perfect = [(b, np.ones(len(b)), c) for b, c in [_GT, gt2]]
    assert metrics.mean_average_precision(perfect, [_GT, gt2], metrics.COCO_IOU_THRESHOLDS, "coco") == 1.0
    with pytest.raises(ValueError, match="1 detection sets for 2 images"):
        metrics.mean_average_precision(perfect[:1], [_GT, gt2])


# ------------------------------------------------------------------ generators


def test_digit_strings_deterministic_and_valid():
    x, y, w = datasets.digit_strings(24, seed=3)
    x2, y2, w2 = datasets.digit_strings(24, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(w, w2)
    assert not np.array_equal(x, datasets.digit_strings(24, seed=4)[0])
    assert x.shape == (24, 32, 160, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    lengths = (y >= 0).sum(1)
    assert lengths.min() >= 3 and lengths.max() <= 10 and y.max() <= 9
    assert all((y[i, : lengths[i]] >= 0).all() and (y[i, lengths[i] :] == -1).all() for i in range(24))
    for i in range(24):  # nothing right of the used width
        assert (x[i, :, w[i] :] == 0).all() and x[i, :, : w[i]].max() > 0.5
    with pytest.raises(ValueError, match="min_digits"):
        datasets.digit_strings(2, min_digits=5, max_digits=3)


def test_digit_scenes_deterministic_and_boxes_hold_the_ink():
    x, boxes, classes = datasets.digit_scenes(16, seed=5, clutter=0)
    x2, boxes2, classes2 = datasets.digit_scenes(16, seed=5, clutter=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(boxes, boxes2)
    np.testing.assert_array_equal(classes, classes2)
    assert x.shape == (16, 96, 96, 1) and classes.shape == (16, 6)
    for img, bs, cs in zip(x[..., 0], boxes, classes):
        n = int((cs >= 0).sum())
        assert 1 <= n and (cs[n:] == -1).all()
        covered = np.zeros(img.shape, bool)
        for x0, y0, x1, y1 in bs[:n].astype(int):
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            covered[y0:y1, x0:x1] = True
        # Without clutter, only noise lies outside the boxes.
        assert img[~covered].max() < 0.4 and img[covered].max() > 0.5
    with pytest.raises(ValueError, match="min_scale"):
        datasets.digit_scenes(1, min_scale=50, max_scale=40)


def test_lfw_faces_ship_with_scikit_image():
    x, y = datasets.lfw_faces()
    assert x.shape == (200, 25, 25, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [1] * 100 + [0] * 100


# ------------------------------------------------------------------ small pipelines through the delegate


def _packed(blob):
    return [r for r in blob.report if r.packed]


def _check_runs_through_delegate(blob):
    from tfq import report, runtime

    assert report.has_tfq_ops(blob)
    assert isinstance(report.make_interpreter(blob), runtime.Interpreter)


def test_ocr_pipeline_bilstm_ctc():
    import keras

    import tfq
    from tfq import tasks

    x, y, _ = datasets.digit_strings(256, seed=0)
    xt, yt, _ = datasets.digit_strings(64, seed=1, split="test")
    model = tasks.crnn(units=24)
    tasks.train_ocr(model, x, y, epochs=1)
    small, _ = tasks.compress_with_admm(model, x[:128], tasks.ocr_targets(y[:128]), keras.losses.CTC(), "ternary", 2)
    blob = tfq.convert(small)
    packed = _packed(blob)
    # Both directions' kernel and recurrent kernel are packed inside their WHILE bodies (subgraphs > 0).
    recurrent = [r for r in packed if r.subgraph > 0]
    assert {r.layer for r in recurrent} == {"forward_lstm", "backward_lstm"} and len(recurrent) == 4
    assert {"conv2", "conv3", "proj"} <= {r.layer for r in packed}
    _check_runs_through_delegate(blob)
    lite = tasks.run_tflite(blob, xt)
    ref = np.asarray(small.predict(xt, verbose=0))
    assert lite.shape == ref.shape == (64, 40, 11)
    assert np.abs(lite - ref).max() <= 0.05 * np.abs(ref).max()
    assert tasks.agreement(tasks.ocr_decode(lite), tasks.ocr_decode(ref)) >= 0.99
    # Two activation passes (docs/delegate.md): the WHILE bodies' packed ops too; far closer to Keras,
    # and what the reference executor (REVERSE_V2 of the backward direction included) computes.
    from tfq.converter.reference import ReferenceInterpreter

    lite2 = tasks.run_tflite(blob, xt[:8], delegate_options={"activation_passes": 2})
    assert np.abs(lite2 - ref[:8]).max() <= 0.1 * np.abs(lite[:8] - ref[:8]).max()
    ref2 = ReferenceInterpreter(blob, mode="delegate", activation_passes=2).predict(xt[:8])
    np.testing.assert_allclose(lite2, ref2, rtol=1e-3, atol=1e-4 * np.abs(ref2).max())
    scores = tasks.ocr_scores(lite, yt)
    assert 0 <= scores["seq_acc"] <= 1 and scores["cer"] >= 0


def test_ocr_gru_converts_packed():
    import tfq
    from tfq import tasks

    from tfq.kernels import select_kernels

    small = tasks.crnn(rnn="gru", units=16)
    specs = select_kernels(small, "ternary")  # the Bidirectional wrapper's two GRUs included
    assert {s.layer.name for s in specs} >= {"forward_gru", "backward_gru"}
    for spec in specs:  # projected onto the set without training: conversion only
        spec.variable.assign(np.asarray(spec.quantizer.project(spec.variable, channel_axis=spec.channel_axis)[0]))
    blob = tfq.convert(small)
    assert {r.layer for r in _packed(blob) if r.subgraph > 0} == {"forward_gru", "backward_gru"}
    xt = datasets.digit_strings(4, seed=2)[0]
    np.testing.assert_allclose(tasks.run_tflite(blob, xt), small.predict(xt, verbose=0), atol=0.05)


def test_detection_pipeline_depthwise_heads():
    import tfq
    from tfq import tasks

    x, boxes, classes = datasets.digit_scenes(128, seed=0)
    xt, bt, ct = datasets.digit_scenes(32, seed=1, split="test")
    model = tasks.centernet()
    tasks.train_detector(model, x, boxes, classes, epochs=1)
    # The cosine schedule ends the training at 2% of the initial learning rate.
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.02 * 2e-3, rtol=1e-3)
    keep_float = {"stem", "heatmap", "box"}
    small, _ = tasks.compress_with_admm(
        model, x, tasks.detection_targets(boxes, classes), tasks.detection_loss(), "pow2_3bit", 2,
        layers=tasks.layers_except(keep_float))
    blob = tfq.convert(small)
    packed = {r.layer: r for r in _packed(blob)}
    assert {"b2_dw", "b2_pw", "neck_dw", "heatmap_dw", "box_dw"} <= set(packed)
    assert packed["b2_dw"].op == "DEPTHWISE_CONV_2D" and not keep_float & set(packed)
    _check_runs_through_delegate(blob)
    lite = tasks.run_tflite(blob, xt)
    ref = np.asarray(small.predict(xt, verbose=0))
    assert lite.shape == ref.shape == (32, 24, 24, 14)
    assert np.abs(lite - ref).max() <= 0.05 * np.abs(ref).max()
    a, b = tasks.detection_scores(lite, bt, ct), tasks.detection_scores(ref, bt, ct)
    assert abs(a["map50"] - b["map50"]) <= 0.02 and 0 <= a["map"] <= a["map50"] + 1e-9


def test_train_detector_refuses_an_unknown_schedule():
    from tfq import tasks

    x, boxes, classes = datasets.digit_scenes(4, seed=0)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        tasks.train_detector(tasks.centernet(), x, boxes, classes, epochs=1, schedule="linear")


def test_detection_targets_decode_round_trip():
    from tfq import tasks

    _, boxes, classes = datasets.digit_scenes(8, seed=7)
    t = tasks.detection_targets(boxes, classes)
    logits = np.log(np.clip(t[..., :10], 1e-6, 1 - 1e-6) / np.clip(1 - t[..., :10], 1e-6, 1))
    outputs = np.concatenate([logits, t[..., 10:14]], -1)
    # The targets themselves decode to the boxes: mAP@0.5 of 1 (two digits whose centres share a cell aside).
    assert tasks.detection_scores(outputs, boxes, classes)["map50"] >= 0.95


def test_detection_block_pruned_sparse_format():
    import tfq
    from tfq import tasks

    x, boxes, classes = datasets.digit_scenes(96, seed=0)
    model = tasks.centernet(deep_width=128)  # a stride-8 stage wider than 2 * width: the 1x1 reduce layer
    assert "reduce" in {layer.name for layer in model.layers}
    tasks.train_detector(model, x, boxes, classes, epochs=1)
    small, _ = tasks.compress_with_admm(
        model, x, tasks.detection_targets(boxes, classes), tasks.detection_loss(), "ternary", 2,
        layers=tasks.layers_except({"stem"}), sparsity=0.9, block="auto",
        prune_layers=tasks.detection_prune_layers(model))
    blob = tfq.convert(small, sparse="auto")
    layout = {r.layer: r.layout for r in _packed(blob)}
    # The large pointwise kernels are stored block-sparse; the small ones and the depthwise ones stay dense.
    assert all(layout[n].startswith("block_sparse") for n in ("b4_pw", "b5_pw", "reduce"))
    assert layout["b2_dw"] == "dense"
    assert len(blob) < len(tfq.convert(small))
    _check_runs_through_delegate(blob)
    xt = datasets.digit_scenes(8, seed=1, split="test")[0]
    lite, ref = tasks.run_tflite(blob, xt), np.asarray(small.predict(xt, verbose=0))
    assert np.abs(lite - ref).max() <= 0.05 * np.abs(ref).max()


def test_compress_with_admm_spreads_sparsity_by_distribution():
    import keras

    from tfq import pruning, tasks

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, name="wide"),
                              keras.layers.Dense(16, name="narrow"), keras.layers.Dense(4, name="out")])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 64)).astype("float32"), rng.standard_normal((256, 4)).astype("float32")
    every = tasks.layers_except()
    small, _ = tasks.compress_with_admm(model, x, y, "mse", "ternary", 2, layers=every, sparsity=0.75,
                                        block=(4, 4), distribution="erk")
    kernels = [small.get_layer(n).kernel for n in ("wide", "narrow", "out")]
    want = pruning.layer_sparsities([tuple(k.shape) for k in kernels], 0.75, "erk")

    def zero_blocks(k):  # ternary levels add single zeros: whole 4x4 blocks are what pruning removed
        k = np.asarray(k)
        return float(np.mean(np.all(k.reshape(k.shape[0] // 4, 4, k.shape[1] // 4, 4) == 0, axis=(1, 3))))

    got = [zero_blocks(k) for k in kernels]
    # Erdős–Rényi-Kernel: the large kernel pruned harder than the target, the small ones less.
    assert want[0] > 0.75 > want[2]
    np.testing.assert_allclose(got, want, atol=0.05)


def test_group_windows_prefers_the_supported_cluster_and_fuses_it():
    from tfq import tasks

    # Three overlapping windows of 0.8 (support 2.4) against an isolated one of 0.99 (support 0.99),
    # and one below the threshold.
    boxes = np.array([[10, 10, 40, 40], [12, 10, 42, 40], [10, 14, 40, 44], [100, 100, 130, 130], [0, 0, 5, 5]],
                     np.float32)
    prob = np.array([0.8, 0.8, 0.8, 0.99, 0.4])
    box, p = tasks.group_windows(boxes, prob)
    np.testing.assert_allclose(box, [32 / 3, 34 / 3, 122 / 3, 124 / 3], rtol=1e-6)  # the mean of the three
    assert p == pytest.approx(0.8)
    box, p = tasks.group_windows(boxes, np.array([0.1, 0.2, 0.3, 0.45, 0.4]))  # nothing above 0.5: the best one
    np.testing.assert_array_equal(box, boxes[3])
    assert p == pytest.approx(0.45)


def test_face_pipeline_binary_and_demo():
    import tfq
    from tfq import tasks

    x, y = datasets.lfw_faces()
    (train, test), *_ = tasks.face_folds(y, k=5)
    assert len(test) == 40 and y[test].sum() == 20 and not set(train) & set(test)
    xa, ya = tasks.augment_faces(x[train], y[train], copies=1)
    np.testing.assert_array_equal(xa, tasks.augment_faces(x[train], y[train], copies=1)[0])
    model = tasks.face_cnn()
    tasks.train_face(model, xa, ya, epochs=1)
    small, _ = tasks.compress_with_admm(model, xa, ya, tasks.face_loss(), "binary", 2)
    blob = tfq.convert(small)
    assert [r.layer for r in _packed(blob)] == ["conv2", "conv3"]
    _check_runs_through_delegate(blob)
    lite = tasks.run_tflite(blob, x[test])
    ref = np.asarray(small.predict(x[test], verbose=0))
    assert tasks.agreement(lite.argmax(1), ref.argmax(1)) >= 0.95
    from skimage import data

    box, prob = tasks.find_face(blob, data.astronaut().mean(-1) / 255.0, scales=(4.0,), stride=8)
    assert 0 <= box[0] < box[2] <= 512 and 0 <= box[1] < box[3] <= 512 and 0 <= prob <= 1
