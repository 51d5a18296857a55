"""Face / non-face end to end: lfw_subset -> small CNN -> ADMM ternary -> .tflite -> LiteRT + tfq delegate -> find the face in astronaut().

    python examples/face/run.py [--epochs 30] [--admm-epochs 10] [--scheme ternary] [--out artifacts/face]

Trains on all 200 crops but 40 held out (one stratified fold) and measures
the compressed classifier through LiteRT; then trains a second classifier
for the search (`tfq.tasks.train_face_search`: background crops of
scikit-image's face-free sample images and two rounds of hard negatives),
slides its compressed version over an image pyramid of
`skimage.data.astronaut()` (`tfq.tasks.find_face`), prints the IoU of the
found box with the face box measured by hand (`tfq.tasks.ASTRONAUT_FACE`)
and draws it to `<out>/astronaut_face.png`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, metrics, report, tasks  # noqa: E402
from tfq.tasks import ASTRONAUT_FACE  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--admm-epochs", type=int, default=10)
    p.add_argument("--copies", type=int, default=6, help="augmented copies of each training crop")
    p.add_argument("--scheme", default="ternary")
    p.add_argument("--background", type=int, default=3000, help="background crops for the search model")
    p.add_argument("--out", default="artifacts/face")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    x, y = datasets.lfw_faces()
    train, test = tasks.face_folds(y, k=5)[0]
    xa, ya = tasks.augment_faces(x[train], y[train], a.copies)
    model = tasks.face_cnn()
    print(f"float training: {tasks.train_face(model, xa, ya, a.epochs, verbose=2):.0f} s")
    small, secs = tasks.compress_with_admm(model, xa, ya, tasks.face_loss(), a.scheme, a.admm_epochs)
    print(f"ADMM {a.scheme}: {secs:.0f} s")
    blob = tfq.convert(small)
    print(blob.summary())
    for name, data in (("float.tflite", report.keras_to_tflite(model)), (f"{a.scheme}.tflite", blob)):
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data) / 1024:.1f} KiB")
    acc = (tasks.run_tflite(blob, x[test]).argmax(1) == y[test]).mean()
    print(f"held-out accuracy, {a.scheme} through LiteRT + tfq delegate: {acc:.1%}")

    # The sliding-window search sees far more backgrounds than lfw_subset's 100 non-faces: a second
    # classifier is trained with crops of scikit-image's face-free sample images and two rounds of hard
    # negatives mined from them (never from astronaut()), then compressed and converted too.
    from PIL import Image, ImageDraw
    from skimage import data

    search, (xs, ys) = tasks.train_face_search(x, y, background=a.background, copies=a.copies, epochs=a.epochs // 3,
                                               rounds=2)
    search_blob = tfq.convert(tasks.compress_with_admm(search, xs, ys, tasks.face_loss(), a.scheme,
                                                       max(a.admm_epochs // 2, 1))[0])
    rgb = data.astronaut()
    box, prob = tasks.find_face(search_blob, rgb.mean(-1) / 255.0)
    iou = float(metrics.box_iou(box[None], np.asarray(ASTRONAUT_FACE, np.float32)[None])[0, 0])
    print(f"found box {np.round(box).astype(int).tolist()} (x0, y0, x1, y1), face probability {prob:.3f}, "
          f"IoU {iou:.2f} with the face box {list(ASTRONAUT_FACE)} (docs/tasks.md)")
    img = Image.fromarray(rgb)
    ImageDraw.Draw(img).rectangle([float(v) for v in box], outline=(255, 0, 0), width=3)
    path = os.path.join(a.out, "astronaut_face.png")
    img.save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
