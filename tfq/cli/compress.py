"""`tfq compress`: a .keras model to 1-4 bit weights (data-free, or ADMM training with --data)."""

import os

from tfq import schemes
from tfq.cli import common
from tfq.cli.common import UsageError


def add_flags(p):
    p.add_argument("--model", required=True, metavar="PATH.keras", help="the float model")
    p.add_argument("--out", required=True, metavar="PATH.keras", help="where to write the compressed model")
    p.add_argument("--scheme", default="ternary", help=f"weight set: {', '.join(schemes.NAMES)}")
    p.add_argument("--sparsity", type=float, metavar="S", help="fraction of weights set to zero, in [0, 1)")
    p.add_argument("--block", metavar="auto|RxC", help="with --sparsity: prune whole blocks of R output channels x C "
                   "inputs (auto: 16x4 in convolutions, fewer rows in narrow ones, 4x4 in Dense and recurrent "
                   "layers, 16x4 in those with 2**20 weights or more); default: single weights")
    # tfq.pruning.DISTRIBUTIONS, restated: the CLI checks flags before TensorFlow loads (a test keeps the two equal).
    p.add_argument("--distribution", choices=("uniform", "erk"), default="uniform",
                   help="with --sparsity: uniform (every layer that sparse) or erk (the sparsity counts all "
                   "pruned layers together; large layers are pruned harder, small ones keep more)")
    p.add_argument("--data", metavar="DATA", help=f"train with ADMM on this data: {common.DATA_HELP}; without it, "
                   "compression is data-free (seconds)")
    p.add_argument("--eval_data", metavar="DATA", help="data (same forms as --data) used only to report accuracy")
    p.add_argument("--epochs", type=int, help="training epochs with --data (derived from the data size when unset)")
    p.add_argument("--learning_rate", type=float, help="learning rate with --data (1e-3 when unset)")
    p.add_argument("--batch_size", type=int, help="batch size with --data (128 when unset)")
    p.add_argument("--limit", type=int, metavar="N", help="with --eval_data: use only the first N test images")
    common.bool_flag(p, "corrections", True, "data-free bias correction and cross-layer equalization")
    common.bool_flag(p, "skip_first_last", True, "keep the first and last compressible layers in float")
    common.bool_flag(p, "permute", True, "with --block and --data: first reorder hidden channels so that each block "
                     "row joins channels that read the same inputs (the model's function does not change)")
    p.add_argument("--layers", type=common.comma_list, metavar="A,B",
                   help="compress exactly these layers (comma-separated)")
    p.add_argument("--keep_training_state", action="store_true",
                   help="keep the ADMM/pruning state and the optimizer in the saved model, to resume training (a "
                   "file several times larger). By default both are removed: the file is no larger than the "
                   "float model's")


def run(args):
    """Compresses a .keras model: data-free by default, ADMM training with --data."""
    path = common.existing(args.model, "--model PATH.keras", (".keras",))
    scheme = common.scheme(args.scheme)
    sparsity = args.sparsity
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity must be in [0, 1), got {sparsity}")
    block = common.block(args.block)
    if block is not None and not sparsity:
        raise UsageError("--block needs --sparsity (blocks are what is pruned)")
    if args.distribution != "uniform" and not sparsity:
        raise UsageError("--distribution needs --sparsity")
    out = common.out_path(args.out, ".keras")
    common.positive("epochs", args.epochs)
    common.positive("batch_size", args.batch_size)
    common.positive("limit", args.limit)
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.epochs is not None and not args.data:
        raise UsageError("--epochs needs --data (the data-free path does not train)")
    for spec in (args.data, args.eval_data):
        common.check_data_spec(spec)
    common.check_keras_file(path)
    model = common.load_keras_model(path, args.verbose)
    data = validation = None
    if args.data:
        (x, y), (xt, yt) = common.load_data(args.data)
        data, validation = (x, y), (xt, yt)
    elif args.eval_data:
        _, validation = common.load_data(args.eval_data, args.limit)
    layers = {name: True for name in args.layers} if args.layers else None
    import tfq

    common.log(f"compressing {path} to {scheme}" + (f", {sparsity:.0%} sparse" if sparsity else "")
               + (f" in {block} blocks" if block else "")
               + (f" ({args.distribution} over the layers)" if sparsity and args.distribution != "uniform" else "")
               + (" with ADMM training" if data is not None else " (data-free)"))
    small, report = tfq.compress(
        model, scheme, sparsity=sparsity, data=data, validation_data=validation, epochs=args.epochs,
        layers=layers, corrections=args.corrections, skip_first_last=args.skip_first_last,
        learning_rate=args.learning_rate, batch_size=args.batch_size, verbose=1, return_report=True,
        keep_training_state=args.keep_training_state, block=block, distribution=args.distribution,
        permute=None if args.permute else False,
    )
    small.save(out)
    print(report.to_markdown())
    print(f"wrote {out} ({os.path.getsize(out):,} bytes; {os.path.getsize(path):,} bytes for {path})")
    return 0


COMMAND = common.Command(
    run, "compress a .keras model to 1-4 bit weights (data-free, or ADMM training with --data)", add_flags,
    "tfq compress --model M.keras --scheme pow2_4bit --out M_p4.keras              # data-free, seconds\n"
    "tfq compress --model M.keras --scheme ternary --sparsity 0.9 --data mnist --out M_t.keras   # ADMM\n"
    "tfq compress --model M.keras --sparsity 0.9 --block auto --data mnist --out M_s.keras       # block-sparse")
