"""`tfq evaluate`: top-1 accuracy of a .tflite classifier through LiteRT (+ the tfq delegate)."""

from tfq.cli import common


def add_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="a .tflite classifier")
    p.add_argument("--data", default="mnist", metavar="DATA", help=common.DATA_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    p.add_argument("--threads", type=common.comma_list, default=["1"], metavar="N", help="interpreter threads")


def run(args):
    """Top-1 accuracy of a .tflite classifier through LiteRT (with the tfq delegate when needed)."""
    threads = common.threads(args.threads)[0]
    common.positive("limit", args.limit)
    blob = common.read_tflite(args.file)
    common.check_data_spec(args.data)
    from tfq import report

    _, (xt, yt) = common.load_data(args.data, args.limit)
    runtime = "LiteRT + tfq delegate" if report.has_tfq_ops(blob) else "LiteRT"
    acc = report.tflite_accuracy(blob, xt, yt, threads=threads, progress=report.stderr_progress("evaluate"))
    print(f"{args.file}: accuracy {100 * acc:.2f}% on {len(xt)} images ({runtime}, {threads} thread"
          f"{'s' if threads > 1 else ''})")
    return 0


COMMAND = common.Command(run, "top-1 accuracy of a .tflite through LiteRT (+ the tfq delegate)", add_flags,
                         "tfq evaluate M_t.tflite --data mnist --limit 1000")
