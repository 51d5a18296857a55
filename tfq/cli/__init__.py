"""The `tfq` command line (`tfq COMMAND ...` or `python -m tfq COMMAND ...`).

One module per subcommand (compress, convert, inspect, evaluate, benchmark,
report), each defining `COMMAND`, a `common.Command`: a function
`fn(args) -> exit code` taking the parsed `argparse.Namespace`, a one-line
summary (what `tfq --help` lists), a function adding its flags to its own
parser, and an example (what `tfq COMMAND --help` ends with). What the
commands share (UsageError, path and flag checks, data loading) is in
`tfq.cli.common`. Imports go one way: command modules import `common`, this
module imports the command modules; none imports TensorFlow at import time,
so `tfq --help` and `tfq inspect` start fast. Adding a subcommand = write
its module and add one entry to `COMMANDS`.

Errors are raised, not printed: `UsageError` ends the command with exit
code 2, any other exception with exit code 1, each as one line on stderr
(docs/cli.md).
"""

import logging
import os
import sys
import traceback
import warnings

from tfq.cli import benchmark, common, compress, convert, evaluate, inspect, report
from tfq.cli.common import UsageError

# name -> Command, in the order `tfq --help` lists them (the workflow's)
COMMANDS = {
    "compress": compress.COMMAND,
    "convert": convert.COMMAND,
    "inspect": inspect.COMMAND,
    "evaluate": evaluate.COMMAND,
    "benchmark": benchmark.COMMAND,
    "report": report.COMMAND,
}

_ABOUT = "tfq: 1-4 bit weights for Keras 3 models, packed into TFLite, run by a LiteRT delegate."


def usage():
    """The text of `tfq --help`: one line per command."""
    lines = ["usage: tfq COMMAND [flags]        (or: python -m tfq COMMAND [flags])", "", _ABOUT, "", "commands:"]
    lines += [f"  {name:10s} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "`tfq COMMAND --help` shows a command's flags, their defaults and an example.",
              "Exit codes: 0 success, 1 failure, 2 wrong command line. Docs: docs/cli.md"]
    return "\n".join(lines)


def command_parser(name):
    """The argparse parser of one command (its `--help` is the command's help)."""
    cmd = COMMANDS[name]
    doc = (cmd.fn.__doc__ or "").strip().splitlines()[0]
    parser = common.Parser(prog=f"tfq {name}", description=doc, epilog="example:\n" + "\n".join(
        "  " + line for line in cmd.example.splitlines()), formatter_class=common.HelpFormatter)
    cmd.add_flags(parser)
    parser.add_argument("--verbose", action="store_true",
                        help="print tracebacks, library logs and the converter's per-op notes")
    return parser


def main(argv):
    """Runs `tfq ARGS` (argv without the program name); returns the exit code."""
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from tfq import __version__

        print(f"tfq {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"tfq: unknown command {name!r} (tfq --help lists the commands)", file=sys.stderr)
        return 2
    verbose = "--verbose" in argv[1:]
    try:
        args = command_parser(name).parse_args(argv[1:])
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except UsageError as err:
        print(f"tfq {name}: {err} (tfq {name} --help)", file=sys.stderr)
        return 2
    if not verbose:
        # Library INFO logs (TensorFlow's converter, tfq's own) only with --verbose.
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        logging.getLogger("absl").setLevel(logging.WARNING)
        logging.getLogger("tfq").setLevel(logging.WARNING)
    warnings.showwarning = _one_line_warning
    try:
        return COMMANDS[name].fn(args)
    except UsageError as err:
        if verbose:
            traceback.print_exc()
        print(f"tfq {name}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfq {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  every failure ends the command with exit code 1
        if verbose:
            traceback.print_exc()
        print(f"tfq {name}: error: {common.first_line(err)}"
              + ("" if verbose else " (--verbose shows the traceback)"), file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings as `[tfq] note: message` (no source line) while a command runs."""
    print(f"[tfq] note: {message}", file=file or sys.stderr)


def run():
    """Console-script entry point (`tfq = tfq.cli:run`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
