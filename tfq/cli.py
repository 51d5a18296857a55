"""The `tfq` command line (`tfq COMMAND ...` or `python -m tfq COMMAND ...`).

Each subcommand is a `Command` in `commands()`: a function `fn(args) -> exit
code` taking the parsed `argparse.Namespace`, a one-line summary (what
`tfq --help` lists), a function adding its flags to its own parser, and an
example (what `tfq COMMAND --help` ends with). Adding a subcommand = write
those and add one entry. Errors are raised, not printed: `UsageError` ends
the command with exit code 2, any other exception with exit code 1, each as
one line on stderr (docs/cli.md).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
import warnings
import zipfile
from typing import Callable


class UsageError(ValueError):
    """Bad command line: printed without a traceback, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Command:
    fn: Callable
    summary: str
    add_flags: Callable
    example: str


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's line breaks; shows a flag's default when it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        # nargs == 0: switches (--help, --portable, --noNAME), whose help says what they do.
        if action.option_strings and action.nargs != 0 and default not in (None, argparse.SUPPRESS):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            text += f" (default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised as UsageError (one line, exit 2) instead of usage + exit."""

    def error(self, message):
        raise UsageError(message)


def bool_flag(parser, name, default, help_):
    """`--NAME` / `--noNAME` (the spelling docs/cli.md uses), default shown in the help."""
    group = parser.add_mutually_exclusive_group()
    state = f"on; --no{name} turns it off" if default else "off"
    group.add_argument(f"--{name}", dest=name, action="store_true", default=default, help=f"{help_} (default: {state})")
    group.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def comma_list(value):
    """A comma-separated flag value as a list (empty items dropped)."""
    return [v for v in value.split(",") if v]


# --------------------------------------------------------------------------
# Shared helpers (no TensorFlow)
# --------------------------------------------------------------------------


def first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def log(msg):
    print(f"[tfq] {msg}", file=sys.stderr, flush=True)


def existing(path, what, suffixes=()):
    """`path` after checking it exists and ends with one of `suffixes` (UsageError otherwise)."""
    if not path:
        raise UsageError(f"missing {what}")
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if suffixes and not path.endswith(tuple(suffixes)):
        raise UsageError(f"{path}: expected a {' or '.join(suffixes)} file")
    return path


def out_path(path, suffix):
    """`--out` after checking its suffix and that its directory exists (UsageError otherwise)."""
    if not path:
        raise UsageError(f"missing --out PATH{suffix}")
    if not path.endswith(suffix):
        raise UsageError(f"--out must end with {suffix}, got {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--out: directory {parent} does not exist")
    return path


def check_keras_file(path):
    """A `.keras` file is a zip archive: checked before TensorFlow loads (a failure, exit 1)."""
    existing(path, "a .keras model", (".keras",))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model file (not a .keras zip archive; corrupted or wrong file)")
    return path


def load_keras_model(path, verbose=False):
    """Loads a `.keras` file with tfq's serializable classes registered."""
    check_keras_file(path)
    from tfq import quiet

    quiet.import_tensorflow(verbose)
    from tfq import report

    try:
        return report.load_keras(path)
    except (ValueError, OSError, TypeError) as err:
        # The path was right but the file is not a model: a failure (exit 1), not a usage error.
        raise ValueError(f"{path}: cannot load Keras model ({first_line(err)})") from err


DELEGATE_HINT = ("this file has tfq custom ops: run it with tfq.Interpreter(path), or pass "
                 "load_delegate(tfq.delegate_path()) to LiteRT's Interpreter (alone, LiteRT reports "
                 "'unresolved custom op TFQ_...')")


def print_inspection(path, as_json=False):
    from tfq.converter.inspect import format_table, inspect_model

    info = inspect_model(path)
    if as_json:
        print(json.dumps(info, indent=1))
        return
    print(format_table(info))
    if info["tfq_ops"]:
        print(DELEGATE_HINT)


# --------------------------------------------------------------------------
# convert, inspect
# --------------------------------------------------------------------------


def _convert_flags(p):
    p.add_argument("--model", required=True, metavar="PATH",
                   help="the compressed model: a .keras file (from tfq compress), or a float .tflite")
    p.add_argument("--out", required=True, metavar="PATH.tflite", help="where to write the .tflite file")
    p.add_argument("--portable", action="store_true",
                   help="write builtin INT2/INT4/INT8 weights instead of tfq custom ops (runs without the delegate)")
    p.add_argument("--allow_float", action="store_true",
                   help="write the file even when no weight lies in a tfq set (a plain float model)")


def _summary_line(reports):
    """One line: which ops were packed (by scheme) and which stayed float (by reason)."""
    packed = [r for r in reports if r.packed]
    by_scheme = {}
    for r in packed:
        by_scheme.setdefault(r.scheme, []).append(r.layer or r.weight)
    parts = [f"{len(packed)} of {len(reports)} weighted ops packed"]
    parts += [f"{scheme}: {', '.join(names)}" for scheme, names in by_scheme.items()]
    floats = [r.layer or r.weight for r in reports if not r.packed]
    if floats:
        parts.append(f"float: {', '.join(floats)}")
    return "; ".join(parts)


def cmd_convert(args):
    """Converts a compressed Keras model (or a float .tflite) into a tfq .tflite."""
    is_tflite = args.model.endswith(".tflite")
    existing(args.model, "--model PATH", (".keras", ".tflite"))
    out = out_path(args.out, ".tflite")
    if not is_tflite:
        check_keras_file(args.model)
    from tfq import quiet

    quiet.import_tensorflow(args.verbose)
    from tfq.converter import convert

    source = args.model if is_tflite else load_keras_model(args.model, args.verbose)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(source, portable=args.portable)
    packed = [r for r in result.report if r.packed]
    if args.verbose:
        for w in caught:
            print(f"tfq convert: note: {w.message}", file=sys.stderr)
        for r in result.report:
            if not r.packed:
                print(f"  kept in float ({r.op} {r.weight}): {r.reason}", file=sys.stderr)
    if not packed and not args.allow_float:
        raise ValueError(
            f"{args.model}: nothing to pack, no weight lies in a tfq set (not compressed?); compress it first "
            f"(tfq compress --model {args.model} --out M_t.keras) or pass --allow_float for a float .tflite")
    with open(out, "wb") as f:
        f.write(result)
    print_inspection(out)
    print(f"converted: {_summary_line(result.report)}")
    print(f"wrote {out} ({len(result)} bytes)" + ("" if packed else ", a plain float model (--allow_float)"))
    return 0


def _inspect_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="any .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_inspect(args):
    """Prints a per-op table (set, bits, sparsity, bytes) of any .tflite file."""
    existing(args.file, "FILE")
    print_inspection(args.file, args.json)
    return 0


_COMMANDS_HERE = {
    "convert": Command(cmd_convert, "write a .tflite with packed low-bit weights (tfq custom ops or --portable)",
                       _convert_flags,
                       "tfq convert --model M_t.keras --out M_t.tflite\n"
                       "tfq convert --model M_t.keras --portable --out M_t_portable.tflite   # builtin ops only"),
    "inspect": Command(cmd_inspect, "per-op table of a .tflite: set, bits, sparsity, bytes",
                       _inspect_flags, "tfq inspect M_t.tflite\ntfq inspect M_t.tflite --json"),
}


def commands():
    """name -> Command, in the order `tfq --help` lists them (the workflow's)."""
    from tfq import cli_commands  # compress, evaluate, benchmark, report (imported here: it imports this module)

    more = dict(cli_commands.COMMANDS)
    return {"compress": more.pop("compress"), **_COMMANDS_HERE, **more}


_ABOUT = "tfq: 1-4 bit weights for Keras 3 models, packed into TFLite, run by a LiteRT delegate."


def usage():
    """The text of `tfq --help`: one line per command."""
    lines = ["usage: tfq COMMAND [flags]        (or: python -m tfq COMMAND [flags])", "", _ABOUT, "", "commands:"]
    lines += [f"  {name:10s} {cmd.summary}" for name, cmd in commands().items()]
    lines += ["", "`tfq COMMAND --help` shows a command's flags, their defaults and an example.",
              "Exit codes: 0 success, 1 failure, 2 wrong command line. Docs: docs/cli.md"]
    return "\n".join(lines)


def command_parser(name):
    """The argparse parser of one command (its `--help` is the command's help)."""
    cmd = commands()[name]
    doc = (cmd.fn.__doc__ or "").strip().splitlines()[0]
    parser = _Parser(prog=f"tfq {name}", description=doc, epilog="example:\n" + "\n".join(
        "  " + line for line in cmd.example.splitlines()), formatter_class=_HelpFormatter)
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
    if name not in commands():
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
        return commands()[name].fn(args)
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
        print(f"tfq {name}: error: {first_line(err)}"
              + ("" if verbose else " (--verbose shows the traceback)"), file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings as `[tfq] note: message` (no source line) while a command runs."""
    print(f"[tfq] note: {message}", file=file or sys.stderr)


def run():
    """Console-script entry point (`tfq = tfq.cli:run`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    from tfq.cli import run as _run  # the module instance tfq.cli_commands shares (its UsageError)

    _run()
