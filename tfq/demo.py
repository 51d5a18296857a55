"""The first step of the tfq demo: train LeNet-5 on MNIST in float and save it.

`bash scripts/demo.sh` runs this, then the `tfq` command line end to end on
the saved models (compress -> convert -> inspect -> evaluate -> benchmark ->
report). The float model trains for `--epochs` (6); its checkpoint after
`--parent_epochs` (3) is saved too, and is what the ternary model is trained
from with `--epochs 3` of ADMM, so the float and the ternary model in the
report had the same training budget (6 epochs on the same data).
Run alone: `python -m tfq.demo --out artifacts/demo/lenet5.keras`.
"""

import argparse
import os
import time

from tfq import quiet


def load_data(limit=None):
    """MNIST, optionally only the first `limit` training images."""
    from tfq import datasets

    (x, y), (xt, yt) = datasets.mnist()
    if limit:
        x, y = x[:limit], y[:limit]
    return (x, y), (xt, yt)


def train_float(data, epochs=6, batch_size=128, seed=0, parent_epochs=None, parent_out=None):
    """Trains LeNet-5 in float; returns the compiled model.

    With `parent_epochs` and `parent_out`, the model after that many epochs
    is also saved to `parent_out`.
    """
    import keras

    from tfq import models

    keras.utils.set_random_seed(seed)
    (x, y), _ = data
    model = models.lenet5()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    callbacks = []
    if parent_epochs and parent_out:
        def save_parent(epoch, logs):
            if epoch + 1 == parent_epochs:
                model.save(parent_out)
                print(f"[demo] saved the {parent_epochs}-epoch checkpoint to {parent_out}", flush=True)

        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=save_parent))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2, callbacks=callbacks)
    return model


def evaluate(model, data):
    _, (xt, yt) = data
    return float(model.evaluate(xt, yt, verbose=0)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="artifacts/demo/lenet5.keras", help="where to save the float model")
    parser.add_argument("--epochs", type=int, default=6, help="float training epochs")
    parser.add_argument("--parent_epochs", type=int, default=3,
                        help="also save the model after this many epochs (the compressors' starting point)")
    parser.add_argument("--parent_out", default=None,
                        help="where to save that checkpoint (default: --out with _<N>ep before .keras)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    args = parser.parse_args(argv)
    quiet.import_tensorflow()
    from tfq import record

    t0 = time.time()
    parent_out = args.parent_out or args.out.replace(".keras", f"_{args.parent_epochs}ep.keras")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    try:
        data = load_data(args.limit)
    except Exception as err:  # noqa: BLE001  (no network: urllib, OSError, Keras' own wrappers)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SystemExit(f"[demo] MNIST: {first}; offline, set TFQ_DATA_DIR to a folder whose mnist/ holds "
                         "the four IDX .gz files") from err
    print(f"[demo] training LeNet-5 in float for {args.epochs} epochs on {len(data[0][0])} MNIST images")
    model = train_float(data, args.epochs, parent_epochs=args.parent_epochs, parent_out=parent_out)
    acc = evaluate(model, data)
    model.save(args.out)
    float_bytes = record.weight_bytes(model).float
    print(f"[demo] float LeNet-5: test accuracy {acc * 100:.2f}%, {float_bytes:,} bytes of weights, "
          f"saved to {args.out} ({time.time() - t0:.0f} s)")
    return model


if __name__ == "__main__":
    main()
