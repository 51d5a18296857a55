"""Makes (and verifies) the assets the Android demo bundles.

Trains LeNet-5 on MNIST, compresses it to ternary weights with tfq, and
writes into `android_demo/app/src/main/assets/`:

  lenet5_float.tflite            the float network (plain LiteRT)
  lenet5_tfq_ternary.tflite      the same network, tfq custom ops (needs the delegate)
  lenet5_portable_ternary.tflite the same ternary weights as builtin INT2/INT8 ops
  mnist_images.u8                N test images, 28*28 uint8 pixels each, row major
  mnist_labels.u8                their N labels
  manifest.json                  sizes, SHA-256, op lists and x86 accuracies

The accuracies in the manifest are measured here on x86 with LiteRT (and the
tfq delegate), on exactly the bundled images; the app shows them next to what
it measures on the phone. The tfq kernels are bit-exact across x86 and ARM, so
the tfq model's on-device accuracy must match.

`verify_assets(folder)` checks a folder against its manifest (files, hashes,
image/label format, op lists, model sizes, accuracies re-measured); the test
suite runs it on the committed assets and on a fresh quick build.

Usage:
    python android_demo/make_assets.py                 # the committed assets
    python android_demo/make_assets.py --quick --out /tmp/assets   # CI: seconds
    python android_demo/make_assets.py --verify-only   # check the committed assets
"""

import argparse
import hashlib
import json
import os
import pathlib
import sys
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ASSETS = HERE / "app" / "src" / "main" / "assets"
MODELS = {
    "float": "lenet5_float.tflite",
    "tfq_ternary": "lenet5_tfq_ternary.tflite",
    "portable_ternary": "lenet5_portable_ternary.tflite",
}
IMAGES, LABELS, MANIFEST = "mnist_images.u8", "mnist_labels.u8", "manifest.json"
TFQ_OPS = ("TFQ_FULLY_CONNECTED", "TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D")


class AssetError(ValueError):
    """The assets folder does not match its manifest."""


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def op_list(path):
    """Operator names of a .tflite file, in execution order."""
    from tfq.converter import tflite_io

    model, _, _ = tflite_io.load_model(str(path))
    return [tflite_io.op_name(model, op) for op in model.subgraphs[0].operators]


def count_correct(path, images_u8, labels, use_delegate):
    """Top-1 correct predictions of a model on uint8 images (scaled to [0, 1])."""
    import tfq
    from ai_edge_litert.interpreter import Interpreter

    if use_delegate:
        interp = tfq.Interpreter(model_path=str(path), num_threads=1)
    else:
        interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    correct = 0
    for img, label in zip(images_u8, labels):
        x = (img.astype(np.float32) / 255.0).reshape(inp["shape"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])) == int(label))
    return correct


def _train(x, y, epochs, seed):
    import keras
    import tfq

    keras.utils.set_random_seed(seed)
    model = tfq.models.lenet5()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return model


def make_assets(out, quick=False, images=500, epochs=None, train_images=None, seed=0):
    """Trains, compresses, converts and writes the assets; returns the manifest dict."""
    import tfq

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = tfq.datasets.mnist()
    n_train = train_images or (4000 if quick else len(x_train))
    epochs = epochs or (1 if quick else 2)
    model = _train(x_train[:n_train], y_train[:n_train], epochs, seed)
    if quick:
        # Data-free projection: seconds, lower accuracy; enough to test the pipeline.
        ternary = tfq.compress(model, "ternary", verbose=0)
    else:
        ternary = tfq.compress(model, "ternary", data=(x_train[:n_train], y_train[:n_train]),
                               epochs=1, verbose=0)
    with warnings.catch_warnings():
        # The float network has no weights in a tfq set: a plain float model is the point.
        warnings.filterwarnings("ignore", message=".*no weight tensor.*", category=UserWarning)
        (out / MODELS["float"]).write_bytes(tfq.convert(model))
    (out / MODELS["tfq_ternary"]).write_bytes(tfq.convert(ternary))
    (out / MODELS["portable_ternary"]).write_bytes(tfq.convert(ternary, portable=True))
    # Spread over the whole test set (its first images are easier than the rest).
    pick = np.arange(images) * (len(x_test) // images)
    pixels = np.clip(np.rint(x_test[pick, :, :, 0] * 255.0), 0, 255).astype(np.uint8)
    labels = y_test[pick].astype(np.uint8)
    (out / IMAGES).write_bytes(pixels.tobytes())
    (out / LABELS).write_bytes(labels.tobytes())
    manifest = {
        "format": 1,
        "network": "LeNet-5 (conv 20, conv 50, fc 500, fc 10) on MNIST",
        "made_by": "android_demo/make_assets.py" + (" --quick" if quick else ""),
        "training": {"images": int(n_train), "epochs": int(epochs),
                     "compression": "data-free projection" if quick else "ADMM, 1 epoch"},
        "images": {"file": IMAGES, "count": int(images), "height": 28, "width": 28,
                   "source": f"MNIST test images 0, {len(x_test) // images}, ... (every "
                             f"{len(x_test) // images}th)",
                   "dtype": "uint8", "scale": "pixel / 255", "sha256": _sha256(out / IMAGES)},
        "labels": {"file": LABELS, "count": int(images), "sha256": _sha256(out / LABELS)},
        "models": {},
    }
    for key, name in MODELS.items():
        path = out / name
        correct = count_correct(path, pixels, labels, use_delegate=key == "tfq_ternary")
        manifest["models"][key] = {
            "file": name, "bytes": path.stat().st_size, "sha256": _sha256(path),
            "ops": op_list(path), "needs_tfq_delegate": key == "tfq_ternary",
            "x86_correct": correct, "x86_accuracy": round(correct / images, 4),
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_assets(folder, remeasure=True):
    """Checks a folder against its manifest.

    Args:
      folder: the assets folder.
      remeasure: also re-run the models on the bundled images and compare the
        number of correct predictions with the manifest (exact for the tfq
        model, whose kernels are bit-exact; within 1 image for the others,
        whose builtin kernels may round differently on another CPU).

    Returns:
      The manifest dict.

    Raises:
      AssetError: naming the first file or property that does not match.
    """
    folder = pathlib.Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise AssetError(f"{mpath}: missing (run android_demo/make_assets.py)")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != 1:
        raise AssetError(f"{mpath}: unknown manifest format {manifest.get('format')!r} (expected 1)")
    entries = [manifest["images"], manifest["labels"]] + [manifest["models"][k] for k in MODELS]
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            raise AssetError(f"{path}: listed in the manifest but missing")
        if _sha256(path) != entry["sha256"]:
            raise AssetError(f"{path}: SHA-256 differs from the manifest (stale or corrupted asset)")
    n = manifest["images"]["count"]
    pixels = np.frombuffer((folder / IMAGES).read_bytes(), dtype=np.uint8)
    labels = np.frombuffer((folder / LABELS).read_bytes(), dtype=np.uint8)
    if pixels.size != n * 28 * 28:
        raise AssetError(f"{folder / IMAGES}: {pixels.size} bytes, expected {n} images of 28x28")
    if labels.size != n or manifest["labels"]["count"] != n:
        raise AssetError(f"{folder / LABELS}: {labels.size} labels, expected {n}")
    if labels.max(initial=0) > 9:
        raise AssetError(f"{folder / LABELS}: label {labels.max()} out of range 0-9")
    if len(set(labels.tolist())) < 10 and n >= 100:
        raise AssetError(f"{folder / LABELS}: not every digit is present in {n} images")
    pixels = pixels.reshape(n, 28, 28)
    sizes = {}
    for key, name in MODELS.items():
        entry = manifest["models"][key]
        if entry["file"] != name:
            raise AssetError(f"{mpath}: model {key} should be {name}, found {entry['file']}")
        path = folder / name
        ops = op_list(path)
        if ops != entry["ops"]:
            raise AssetError(f"{path}: op list {ops} differs from the manifest {entry['ops']}")
        has_tfq = any(op in TFQ_OPS for op in ops)
        if has_tfq != (key == "tfq_ternary"):
            raise AssetError(f"{path}: {'has' if has_tfq else 'lacks'} tfq custom ops ({ops})")
        sizes[key] = path.stat().st_size
        if remeasure:
            correct = count_correct(path, pixels, labels, use_delegate=key == "tfq_ternary")
            slack = 0 if key == "tfq_ternary" else 1
            if abs(correct - entry["x86_correct"]) > slack:
                raise AssetError(f"{path}: {correct}/{n} correct here, manifest says "
                                 f"{entry['x86_correct']}/{n}")
    if not sizes["tfq_ternary"] * 4 < sizes["float"]:
        raise AssetError(f"{folder}: the ternary model ({sizes['tfq_ternary']} bytes) is not at "
                         f"least 4x smaller than the float one ({sizes['float']} bytes)")
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description="Makes or verifies the Android demo's assets.")
    p.add_argument("--out", type=pathlib.Path, default=ASSETS)
    p.add_argument("--quick", action="store_true", help="small training, data-free compression")
    p.add_argument("--images", type=int, default=500, help="MNIST test images to bundle")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--verify-only", action="store_true", help="only check --out against its manifest")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.verify_only:
        m = make_assets(args.out, args.quick, args.images, args.epochs, args.train_images)
        for key, e in m["models"].items():
            print(f"{e['file']:34s} {e['bytes']:>9d} bytes  x86 accuracy {e['x86_accuracy']:.4f}")
    verify_assets(args.out)
    print(f"{args.out}: assets verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
