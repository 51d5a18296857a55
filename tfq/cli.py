"""The `tfq` command line (`python -m tfq COMMAND ...` or the `tfq` script).

Each subcommand is a function `fn(args) -> exit code` registered in
`COMMANDS` with a one-line help; flags are absl flags defined at module
level. Adding a subcommand = define its flags, write the function, add one
entry to COMMANDS.
"""

import importlib
import json
import logging
import os
import sys
import traceback
import zipfile

from absl import app
from absl import flags
from absl import logging as absl_logging

FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "convert: input model (.keras file, or a float .tflite).")
flags.DEFINE_string("out", None, "convert: output .tflite path.")
flags.DEFINE_bool("portable", False, "convert: builtin INT2/INT4/INT8 weights, no custom ops.")
flags.DEFINE_bool("json", False, "inspect: print JSON instead of a table.")
flags.DEFINE_bool("verbose", False, "all commands: print the full traceback of an error.")


class UsageError(ValueError):
    """Bad command line: printed without a traceback, exit code 2."""


def _load_keras_model(path):
    # File checks first: they need no TensorFlow.
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model file (not a .keras zip archive; corrupted or wrong file)")
    from tfq.cli_commands import quiet_tensorflow

    quiet_tensorflow()
    import keras
    # Registers tfq's serializable classes before deserialization.
    for module in ("tfq.quantizers", "tfq.layers", "tfq.admm", "tfq.pruning", "tfq.callbacks"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as err:
        # The path was right but the file is not a model: a failure (exit 1), not a usage error.
        raise ValueError(f"{path}: cannot load Keras model ({_first_line(err)})") from err


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def cmd_convert(args):
    """Converts a Keras model (or float .tflite) into a tfq .tflite."""
    if args:
        raise UsageError(f"convert takes no positional arguments, got {args}")
    if not FLAGS.model or not FLAGS.out:
        raise UsageError("convert needs --model PATH and --out PATH")
    from tfq.converter import convert
    from tfq.converter.inspect import format_table, inspect_model
    if FLAGS.model.endswith(".tflite"):
        result = convert(FLAGS.model, portable=FLAGS.portable)
    else:
        result = convert(_load_keras_model(FLAGS.model), portable=FLAGS.portable)
    with open(FLAGS.out, "wb") as f:
        f.write(result)
    for r in result.report:
        if not r.packed:
            print(f"kept in float ({r.op} {r.weight}): {r.reason}", file=sys.stderr)
    print(format_table(inspect_model(FLAGS.out)))
    print(f"wrote {FLAGS.out} ({len(result)} bytes)")
    return 0


def cmd_inspect(args):
    """Prints a per-op table (set, bits, sparsity, bytes) of any .tflite file."""
    if len(args) != 1:
        raise UsageError("inspect takes exactly one FILE")
    if not os.path.exists(args[0]):
        raise UsageError(f"{args[0]}: no such file")
    from tfq.converter.inspect import format_table, inspect_model
    info = inspect_model(args[0])
    print(json.dumps(info, indent=1) if FLAGS.json else format_table(info))
    return 0


# name -> (function, one-line help); later subcommands are appended here
COMMANDS = {
    "convert": (cmd_convert, "convert --model M.keras --out M.tflite [--portable]"),
    "inspect": (cmd_inspect, "inspect FILE.tflite [--json]"),
}
from tfq import cli_commands as _cli_commands  # noqa: E402  (compress, evaluate, benchmark, report)

COMMANDS.update(_cli_commands.COMMANDS)


def usage():
    lines = ["usage: python -m tfq COMMAND [flags]", "", "commands:"]
    lines += [f"  {name:10s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2 or argv[1] in ("help", "-h"):
        print(usage())
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        print(f"tfq: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if not FLAGS.verbose:
        # Library INFO logs (TensorFlow's converter, tfq's own) only with --verbose.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        return COMMANDS[command][0](argv[2:])
    except UsageError as err:
        if FLAGS.verbose:
            traceback.print_exc()
        print(f"tfq {command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfq {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  every failure ends the command with exit code 1
        if FLAGS.verbose:
            traceback.print_exc()
        print(f"tfq {command}: error: {_first_line(err)}"
              + ("" if FLAGS.verbose else " (--verbose shows the traceback)"), file=sys.stderr)
        return 1


def _parse_flags(argv):
    """absl flag parsing with usage errors as one line and exit code 2 (absl would exit 1)."""
    try:
        return FLAGS(argv)
    except flags.Error as err:
        command = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else ""
        print(f"tfq {command}: {_first_line(err)}".replace("tfq :", "tfq:"), file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point (`tfq = tfq.cli:run`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
