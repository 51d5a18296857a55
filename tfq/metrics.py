"""Task metrics: CTC greedy decoding, character error rate, box IoU, NMS, VOC and COCO style mAP.

NumPy only. Boxes are `(x0, y0, x1, y1)` corners in pixels with `x1 > x0`
and `y1 > y0`; areas are `(x1 - x0) * (y1 - y0)` (continuous coordinates,
no "+1" pixel convention).
"""

import numpy as np

__all__ = [
    "ctc_greedy_decode",
    "edit_distance",
    "character_error_rate",
    "sequence_accuracy",
    "box_iou",
    "nms",
    "average_precision",
    "mean_average_precision",
    "COCO_IOU_THRESHOLDS",
]

# COCO's IoU thresholds 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))


def ctc_greedy_decode(logits, blank=0):
    """Best-path CTC decoding: the argmax per step, repeats merged, blanks dropped.

    Args:
        logits: (batch, steps, classes) scores (logits or probabilities).
        blank: index of the blank class.

    Returns:
        A list (one per batch element) of lists of class indices.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"ctc_greedy_decode expects (batch, steps, classes), got shape {logits.shape}")
    best = logits.argmax(-1)
    out = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(c) for c in row[keep] if c != blank])
    return out


def edit_distance(a, b):
    """Levenshtein distance between two sequences (insertions, deletions, substitutions cost 1)."""
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def _check_pairs(predictions, targets):
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return predictions, targets


def character_error_rate(predictions, targets):
    """Total edit distance over total target length (the corpus CER).

    Args:
        predictions, targets: equally long lists of sequences.
    """
    predictions, targets = _check_pairs(predictions, targets)
    total = sum(len(t) for t in targets)
    if total == 0:
        raise ValueError("character_error_rate: the targets have no characters")
    return sum(edit_distance(p, t) for p, t in zip(predictions, targets)) / total


def sequence_accuracy(predictions, targets):
    """Fraction of sequences predicted exactly."""
    predictions, targets = _check_pairs(predictions, targets)
    if not targets:
        raise ValueError("sequence_accuracy: no targets")
    return sum(list(p) == list(t) for p, t in zip(predictions, targets)) / len(targets)


def _boxes(b, what):
    b = np.asarray(b, np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{what}: expected boxes of shape (n, 4), got {b.shape}")
    return b


def box_iou(a, b):
    """Pairwise intersection over union of two box sets.

    Args:
        a: (n, 4) boxes; b: (m, 4) boxes.

    Returns:
        (n, m) float64 IoU; 0 where the union is empty.
    """
    a, b = _boxes(a, "box_iou a"), _boxes(b, "box_iou b")
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes, scores, iou_threshold=0.5):
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score (ties: lower index first) and drops every
    later box whose IoU with a kept box is above `iou_threshold`.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    boxes = _boxes(boxes, "nms")
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    keep = []
    suppressed = np.zeros(len(boxes), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, np.int64)


def average_precision(recall, precision, method="voc"):
    """Area under a precision/recall curve given in detection order.

    Args:
        recall, precision: cumulative values after each detection, sorted by
            decreasing score.
        method: "voc" (all-point interpolation, Pascal VOC 2010 onwards: the
            precision envelope integrated over every recall step) or "coco"
            (101-point interpolation at recall 0, 0.01, ..., 1, as COCO).
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    # Envelope: the best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    if method == "voc":
        r = np.concatenate([[0.0], recall])
        p = np.concatenate([envelope[:1] if len(envelope) else [0.0], envelope])
        return float(np.sum((r[1:] - r[:-1]) * p[1:]))
    if method == "coco":
        points = np.linspace(0.0, 1.0, 101)
        idx = np.searchsorted(recall, points, side="left")
        values = np.where(idx < len(envelope), envelope[np.minimum(idx, max(len(envelope) - 1, 0))], 0.0) \
            if len(envelope) else np.zeros(101)
        return float(np.mean(values))
    raise ValueError(f"average_precision: method must be 'voc' or 'coco', got {method!r}")


def mean_average_precision(detections, ground_truths, iou_thresholds=(0.5,), method="voc", num_classes=None,
                           max_detections=100):
    """Mean average precision over classes (and IoU thresholds).

    Per image, detections are taken by decreasing score (at most
    `max_detections`); each is matched to the unmatched ground-truth box of its
    class with the highest IoU at or above the threshold (a true positive),
    otherwise it is a false positive. Per class, AP is computed from all images'
    detections sorted by score (`average_precision`); classes without any
    ground-truth box are left out of the mean. With several thresholds the
    result is the mean over thresholds of the mAP at each (COCO's
    mAP@[.5:.95] with `COCO_IOU_THRESHOLDS` and method "coco"; no crowd
    regions and no area ranges).

    Args:
        detections: per image a tuple `(boxes (k, 4), scores (k,), classes (k,))`.
        ground_truths: per image a tuple `(boxes (g, 4), classes (g,))`.
        iou_thresholds: IoU thresholds.
        method: "voc" or "coco" interpolation.
        num_classes: classes are 0..num_classes-1 (default: inferred).
        max_detections: detections kept per image.

    Returns:
        The mAP as a float in [0, 1].
    """
    detections, ground_truths = list(detections), list(ground_truths)
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection sets for {len(ground_truths)} images")
    dets, gts = [], []
    for d, g in zip(detections, ground_truths):
        db, ds, dc = _boxes(d[0], "detections"), np.asarray(d[1], np.float64).reshape(-1), np.asarray(d[2]).reshape(-1)
        gb, gc = _boxes(g[0], "ground truth"), np.asarray(g[1]).reshape(-1)
        if not len(db) == len(ds) == len(dc) or len(gb) != len(gc):
            raise ValueError("mean_average_precision: boxes, scores and classes of an image differ in length")
        order = np.argsort(-ds, kind="stable")[:max_detections]
        dets.append((db[order], ds[order], dc[order].astype(np.int64)))
        gts.append((gb, gc.astype(np.int64)))
    if num_classes is None:
        num_classes = 1 + max([int(c.max()) for _, c in gts if len(c)] + [int(c.max()) for _, _, c in dets if len(c)] + [-1])
    per_threshold = []
    for thr in iou_thresholds:
        aps = []
        for cls in range(num_classes):
            n_gt = sum(int((c == cls).sum()) for _, c in gts)
            if n_gt == 0:
                continue
            scores, tp = [], []
            for (db, ds, dc), (gb, gc) in zip(dets, gts):
                sel = dc == cls
                cb, cs = db[sel], ds[sel]
                gsel = gb[gc == cls]
                matched = np.zeros(len(gsel), bool)
                iou = box_iou(cb, gsel) if len(gsel) else np.zeros((len(cb), 0))
                for j in range(len(cb)):
                    candidates = np.where(~matched & (iou[j] >= thr), iou[j], -1.0) if len(gsel) else np.array([])
                    hit = len(candidates) > 0 and candidates.max() >= 0
                    if hit:
                        matched[int(candidates.argmax())] = True
                    scores.append(cs[j])
                    tp.append(hit)
            if not scores:
                aps.append(0.0)
                continue
            order = np.argsort(-np.asarray(scores), kind="stable")
            tp = np.asarray(tp, np.float64)[order]
            ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
            aps.append(average_precision(ctp / n_gt, ctp / (ctp + cfp), method))
        if aps:
            per_threshold.append(float(np.mean(aps)))
    if not per_threshold:
        raise ValueError("mean_average_precision: no ground-truth boxes")
    return float(np.mean(per_threshold))
