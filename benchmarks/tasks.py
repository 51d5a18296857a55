"""The three example tasks end to end: accuracy, size and speed of float, LiteRT int8 and tfq variants.

For each task (text recognition, digit detection, face / non-face; data and
networks in docs/tasks.md) this trains the float network, compresses it
with ADMM (`tfq.tasks.compress_with_admm`), converts every variant, and
measures through LiteRT: the task metric on the test set, the .tflite size
and its ratio to the float .tflite, the median latency of one input at
`--threads` (interleaved over the rows, tfq rows with the tfq delegate, the
others with LiteRT's XNNPACK), the ratio of LiteRT fp32 and int8 latency to
it, and how long compression took. It prints one table per task.

Usage:
    python benchmarks/tasks.py --quick                 # all three small (minutes on 2 cores)
    python benchmarks/tasks.py                         # the full runs (hours on 2 cores)
    python benchmarks/tasks.py --tasks face --quick    # one task
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, report, tasks  # noqa: E402

# Sizes and epochs: (quick, full).
CONFIG = {
    "ocr": {"train": (3000, 6000), "test": (200, 1000), "epochs": (4, 10), "admm_epochs": (2, 3)},
    # The full run's detector has a wide stride-8 stage (3 blocks of 768 channels, 1.31M parameters): its
    # float file is 98% weights, so the size ratio measures the weights and not the graph, the biases and
    # the per-channel scales (docs/tasks.md, "Detector size"). The quick run keeps the 23k-parameter one.
    # The float detector trains with a cosine-decayed learning rate (tasks.train_detector) until its training
    # loss settles, so that "within 1 point of float" compares with a finished parent, not with one the
    # compressed rows' extra epochs would still improve. 6000 training scenes, 8 float epochs: on 2000 scenes
    # the 1.31M-parameter model overfit after about 12 of its 24 epochs (the same 1500 steps), and the pruned
    # row stopped 2.3 points below float whether it trained 24 or 36 epochs. 6000 scenes lift float and pruned
    # rows by 9-10 points; the gap stays (docs/tasks.md, "Detection on 6000 scenes").
    "detection": {"train": (1500, 6000), "test": (200, 500), "epochs": (5, 8),
                  "model": ({}, {"deep_width": 768, "deep_blocks": 3}),
                  # (scheme, sparsity, ADMM epochs): block-pruned rows use block="auto" and the block-sparse
                  # format and get at least as many epochs as the float model (3 epochs had cost 39-67 points).
                  # pow2_3bit and pow2_4bit codes both take 4-bit fields (docs/format.md): at the same sparsity
                  # the two pruned rows have the same size, the second with 15 levels instead of 7.
                  "variants": ((("ternary", None, 2), ("pow2_3bit", None, 2), ("pow2_3bit", 0.75, 2)),
                               (("ternary", None, 3), ("pow2_3bit", None, 3), ("pow2_3bit", 0.92, 8),
                                ("pow2_4bit", 0.92, 8))),
                  # How the pruned rows spread their sparsity over the kernels (tfq.PruningCallback). "erk"
                  # prunes the two 768x768 kernels to 95% and keeps more of the small ones, the same total: 0.8
                  # points better on 2000 scenes, 1.5 on 6000 (docs/tasks.md). 8 pruning epochs: 24 gave 88.0
                  # against 87.9 after 8 (pow2_3bit): more epochs no longer help.
                  "distribution": ("uniform", "erk")},
    "face": {"copies": (2, 6), "epochs": (8, 30), "admm_epochs": (3, 10), "folds": (5, 5)},
}


def cfg(task, key, quick):
    return CONFIG[task][key][0 if quick else 1]


def log(msg):
    print(f"[tasks {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def latencies(blobs, sample, threads, runs, delegate_options=None):
    return report.interleaved_latency(blobs, sample, threads=threads, runs=runs, warmup=5,
                                      delegate_options=delegate_options)


def print_table(title, metric_names, rows, threads, note=""):
    """rows: dicts with label, metrics {name: str}, size, ms, comp_s."""
    float_size = rows[0]["size"]
    fp32_ms = next(r["ms"] for r in rows if r["label"] == "float")
    int8_ms = next(r["ms"] for r in rows if r["label"] == "LiteRT int8")
    print(f"\n### {title}\n")
    head = ["model"] + metric_names + [".tflite KiB", "smaller than float", f"ms ({threads} thr)",
                                       "fp32 ms / this", "int8 ms / this", "compression s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["label"]] + [r["metrics"][m] for m in metric_names] + [
            f"{r['size'] / 1024:.1f}", f"{float_size / r['size']:.1f}x", f"{r['ms']:.3f}",
            f"{fp32_ms / r['ms']:.2f}x", f"{int8_ms / r['ms']:.2f}x",
            "-" if r.get("comp_s") is None else f"{r['comp_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def stock(model):
    return {"float": report.keras_to_tflite(model), "LiteRT int8": report.keras_to_tflite(model, int8=True)}


# ------------------------------------------------------------------ text recognition


def run_ocr(quick, threads, runs):
    n, nt = cfg("ocr", "train", quick), cfg("ocr", "test", quick)
    log(f"ocr: generating {n} + {nt} digit strings")
    x, y, _ = datasets.digit_strings(n, seed=0)
    xt, yt, _ = datasets.digit_strings(nt, seed=1, split="test")
    model = tasks.crnn()
    secs = tasks.train_ocr(model, x, y, cfg("ocr", "epochs", quick))
    log(f"ocr: float trained in {secs:.0f} s")
    targets = tasks.ocr_targets(y)
    no_rnn = tasks.layers_except({"conv1", "logits"}, (keras.layers.LSTM, keras.layers.GRU))
    variants = [
        ("ternary", "ternary", no_rnn),
        ("pow2_3bit", "pow2_3bit", no_rnn),
        ("ternary + recurrent", "ternary", None),  # None: all but the first and last, the LSTMs included
    ]
    blobs, comp, agree = stock(model), {}, {}
    # LiteRT's int8 model against the float Keras model: what int8 activations alone cost.
    ref_logits = {"LiteRT int8": model.predict(xt, verbose=0)}
    for label, scheme, layers in variants:
        small, secs = tasks.compress_with_admm(model, x, targets, keras.losses.CTC(), scheme,
                                               cfg("ocr", "admm_epochs", quick), layers=layers)
        blobs[label], comp[label] = tfq.convert(small), secs
        ref_logits[label] = small.predict(xt, verbose=0)
        log(f"ocr: {label} compressed in {secs:.0f} s")
    rows = []
    # The tfq rows run with two activation passes (docs/delegate.md, "Activation precision"): a single
    # int8 pass flips close calls of the greedy CTC decoding; its agreement and latency are printed too.
    two = {"activation_passes": 2}
    lat = latencies(blobs, xt[:1], threads, runs, delegate_options=two)
    tfq_blobs = {label: blob for label, blob in blobs.items() if label in comp}
    lat_one = latencies(tfq_blobs, xt[:1], threads, runs)
    agree_one = {}
    for label, blob in blobs.items():
        logits = tasks.run_tflite(blob, xt, threads, delegate_options=two)
        s = tasks.ocr_scores(logits, yt)
        metrics_ = {"CER": f"{100 * s['cer']:.2f}%", "sequence accuracy": f"{100 * s['seq_acc']:.1f}%"}
        if label in ref_logits:
            agree[label] = tasks.agreement(tasks.ocr_decode(logits), tasks.ocr_decode(ref_logits[label]))
        if label in tfq_blobs:
            agree_one[label] = tasks.agreement(tasks.ocr_decode(tasks.run_tflite(blob, xt, threads)),
                                               tasks.ocr_decode(ref_logits[label]))
        rows.append({"label": label, "metrics": metrics_, "size": len(blob), "ms": lat[label],
                     "comp_s": comp.get(label)})
    print_table(f"Text recognition (CRNN, BiLSTM, CTC; {n} train / {nt} test strings, "
                f"{cfg('ocr', 'epochs', quick)} float + {cfg('ocr', 'admm_epochs', quick)} ADMM epochs)",
                ["CER", "sequence accuracy"], rows, threads,
                "Decoded strings equal to Keras' (tfq rows: LiteRT + tfq delegate with activation_passes=2 against "
                "the compressed Keras model; LiteRT int8 against the float one): "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in agree.items())
                + "\nWith one int8 activation pass (the delegate's default): "
                + ", ".join(f"{k} {100 * agree_one[k]:.1f}% at {lat_one[k]:.3f} ms" for k in tfq_blobs))


# ------------------------------------------------------------------ detection


def run_detection(quick, threads, runs):
    n, nt = cfg("detection", "train", quick), cfg("detection", "test", quick)
    log(f"detection: generating {n} + {nt} scenes")
    x, b, c = datasets.digit_scenes(n, seed=0)
    xt, bt, ct = datasets.digit_scenes(nt, seed=1, split="test")
    model = tasks.centernet(**cfg("detection", "model", quick))
    secs = tasks.train_detector(model, x, b, c, cfg("detection", "epochs", quick))
    log(f"detection: float ({model.count_params()} parameters) trained in {secs:.0f} s")
    targets = tasks.detection_targets(b, c)
    layers = tasks.layers_except({"stem"})  # the stem's 9 taps per channel are kept in float
    prune = tasks.detection_prune_layers(model)
    blobs, comp = stock(model), {}
    for scheme, sparsity, admm_epochs in cfg("detection", "variants", quick):
        label = f"pruned {round(100 * sparsity)}% + {scheme}" if sparsity else scheme
        small, secs = tasks.compress_with_admm(model, x, targets, tasks.detection_loss(), scheme,
                                               admm_epochs, layers=layers,
                                               sparsity=sparsity, block="auto", prune_layers=prune,
                                               distribution=cfg("detection", "distribution", quick))
        blobs[label], comp[label] = tfq.convert(small, sparse="auto"), secs
        log(f"detection: {label} compressed in {secs:.0f} s, {len(blobs[label]) / 1024:.1f} KiB, Keras mAP@0.5 "
            f"{100 * tasks.detection_scores(small.predict(xt, verbose=0), bt, ct)['map50']:.1f}")
    lat = latencies(blobs, xt[:1], threads, runs)
    rows, map50 = [], {}
    for label, blob in blobs.items():
        s = tasks.detection_scores(tasks.run_tflite(blob, xt, threads), bt, ct)
        map50[label] = s["map50"]
        rows.append({"label": label, "metrics": {"mAP@0.5": f"{100 * s['map50']:.1f}",
                                                  "mAP@[.5:.95]": f"{100 * s['map']:.1f}"},
                     "size": len(blob), "ms": lat[label], "comp_s": comp.get(label)})
    within = [r for r in rows if r["label"] != "float" and map50[r["label"]] >= map50["float"] - 0.01]
    best = min(within, key=lambda r: r["size"], default=None)
    note = ("Smallest within 1 point of float mAP@0.5: "
            + (f"{best['label']} ({rows[0]['size'] / best['size']:.1f}x smaller than the float .tflite)"
               if best else "none of the compressed ones")
            + "; pruned rows: block pruning (block=\"auto\", distribution=\""
            + cfg("detection", "distribution", quick) + "\") and the block-sparse format (sparse=\"auto\")")
    print_table(f"Digit detection (CenterNet-style, depthwise-separable, {model.count_params()} parameters; "
                f"{n} train / {nt} test scenes 96x96, "
                f"{cfg('detection', 'epochs', quick)} float epochs; ADMM epochs: "
                + ", ".join(f"{s}{'' if not p else f' {round(100 * p)}%'} {e}"
                            for s, p, e in cfg("detection", "variants", quick)) + ")",
                ["mAP@0.5", "mAP@[.5:.95]"], rows, threads, note)


# ------------------------------------------------------------------ face / non-face


def run_face(quick, threads, runs):
    x, y = datasets.lfw_faces()
    folds = tasks.face_folds(y, k=cfg("face", "folds", quick))
    labels = ["float", "LiteRT int8", "binary", "ternary"]
    acc = {k: [] for k in labels}
    comp = {k: [] for k in labels}
    blobs0 = None
    for f, (train, test) in enumerate(folds):
        xa, ya = tasks.augment_faces(x[train], y[train], cfg("face", "copies", quick), seed=f)
        model = tasks.face_cnn()
        tasks.train_face(model, xa, ya, cfg("face", "epochs", quick), seed=f)
        blobs = stock(model)
        for scheme in ("binary", "ternary"):
            small, secs = tasks.compress_with_admm(model, xa, ya, tasks.face_loss(), scheme,
                                                   cfg("face", "admm_epochs", quick), seed=f)
            blobs[scheme] = tfq.convert(small)
            comp[scheme].append(secs)
        for label, blob in blobs.items():
            acc[label].append(float((tasks.run_tflite(blob, x[test], threads).argmax(1) == y[test]).mean()))
        log(f"face: fold {f + 1}/{len(folds)}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in acc.items()))
        blobs0 = blobs0 or blobs
    lat = latencies(blobs0, x[:1], threads, runs)
    rows = [{"label": k, "metrics": {"accuracy (mean ± std)": f"{100 * np.mean(acc[k]):.1f} ± {100 * np.std(acc[k]):.1f}%"},
             "size": len(blobs0[k]), "ms": lat[k], "comp_s": np.mean(comp[k]) if comp[k] else None} for k in labels]
    print_table(f"Face / non-face (lfw_subset, {len(folds)}-fold cross-validation, {cfg('face', 'copies', quick)} "
                f"augmented copies, {cfg('face', 'epochs', quick)} float + {cfg('face', 'admm_epochs', quick)} "
                "ADMM epochs)", ["accuracy (mean ± std)"], rows, threads,
                "Sizes and latencies of the first fold's models; compression time is the mean per fold.")


RUNNERS = {"ocr": run_ocr, "detection": run_detection, "face": run_face}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data and few epochs")
    parser.add_argument("--tasks", default="ocr,detection,face", help="comma-separated subset of " + ",".join(RUNNERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=None, help="timed invokes per model (default 50 quick, 200 full)")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in RUNNERS]
    if unknown or not chosen:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(RUNNERS)}")
    runs = args.runs or (50 if args.quick else 200)
    print(f"tfq tasks benchmark ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{report.machine_summary()}; latency: median of {runs} single-input invokes, interleaved")
    for t in chosen:
        t0 = time.perf_counter()
        keras.utils.set_random_seed(0)
        RUNNERS[t](args.quick, args.threads, runs)
        log(f"{t}: {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
