"""`tfq inspect`: the per-op table of any .tflite file (no TensorFlow: answers in under a second)."""

from tfq.cli import common


def add_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="any .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args):
    """Prints a per-op table (set, bits, sparsity, bytes) of any .tflite file."""
    common.existing(args.file, "FILE")
    common.print_inspection(args.file, args.json)
    return 0


COMMAND = common.Command(run, "per-op table of a .tflite: set, bits, sparsity, bytes", add_flags,
                         "tfq inspect M_t.tflite\ntfq inspect M_t.tflite --json")
