"""What the `tfq` commands share: errors, the Command record, argparse helpers and flag checks.

Everything here runs without TensorFlow: paths, suffixes, file formats and
flag values are checked before TensorFlow loads, so a wrong command line
fails at once. Command modules (tfq/cli/*.py) import this module and nothing
else of tfq.cli; tfq/cli/__init__.py imports the command modules.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import zipfile
from typing import Callable

import numpy as np

from tfq import schemes


class UsageError(ValueError):
    """Bad command line: printed without a traceback, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand.

    Attributes:
        fn: `fn(args) -> exit code`, taking the parsed `argparse.Namespace`;
            the first line of its docstring is the description in
            `tfq COMMAND --help`.
        summary: the one line `tfq --help` lists.
        add_flags: `add_flags(parser)` adds the command's flags.
        example: what `tfq COMMAND --help` ends with.
    """

    fn: Callable
    summary: str
    add_flags: Callable
    example: str


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's line breaks; shows a flag's default when it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        # nargs == 0: switches (--help, --portable, --noNAME), whose help says what they do.
        if action.option_strings and action.nargs != 0 and default not in (None, argparse.SUPPRESS):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            text += f" (default: {shown})"
        return text


class Parser(argparse.ArgumentParser):
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


def first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def log(msg):
    print(f"[tfq] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Paths and files
# --------------------------------------------------------------------------


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


def read_tflite(path):
    """The bytes of a .tflite file, after checking it parses as a TFLite model (errors name the file)."""
    existing(path, "a .tflite FILE", (".tflite",))
    from tfq.converter import tflite_io

    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (corrupted or wrong file)")
    tflite_io.load_model(blob, name=path)  # truncated or damaged files fail here, naming the file
    return blob


DELEGATE_HINT = ("this file has tfq custom ops: run it with tfq.Interpreter(path), or pass "
                 "load_delegate(tfq.delegate_path()) to LiteRT's Interpreter (alone, LiteRT reports "
                 "'unresolved custom op TFQ_...')")


def print_inspection(path, as_json=False):
    """The per-op table of a .tflite file (`tfq inspect`, and after `tfq convert`)."""
    from tfq.converter.inspect import format_table, inspect_model

    info = inspect_model(path)
    if as_json:
        print(json.dumps(info, indent=1))
        return
    print(format_table(info))
    if info["tfq_ops"]:
        print(DELEGATE_HINT)


# --------------------------------------------------------------------------
# Flag values
# --------------------------------------------------------------------------


def scheme(value):
    """A --scheme value, lower-cased, after checking it names a scheme of tfq.schemes."""
    name = (value or "").lower()
    if name not in schemes.NAMES:
        raise UsageError(f"unknown scheme {value!r}; valid: {', '.join(schemes.NAMES)}")
    return name


def block(value):
    """A --block value: None, "auto" or "RxC" with sides in tfq.schemes.BLOCK_SIDES (checked before TensorFlow loads)."""
    if value is None or value == "auto":
        return value
    m = re.fullmatch(r"(\d+)x(\d+)", value)
    if not m or int(m.group(1)) not in schemes.BLOCK_SIDES or int(m.group(2)) not in schemes.BLOCK_SIDES:
        raise UsageError(f"--block must be auto or RxC with R and C each one of "
                         f"{', '.join(map(str, schemes.BLOCK_SIDES))} (blocks tile the 32-weight groups), got {value!r}")
    return value


def threads(values):
    """A --threads value (list of strings) as positive integers."""
    joined = ",".join(values)
    try:
        counts = [int(t) for t in values]
    except ValueError:
        counts = []
    if not counts or any(t < 1 for t in counts):
        raise UsageError(f"--threads must be comma-separated positive integers, got {joined}")
    return counts


def positive(name, value):
    """`value` of flag --`name` after checking it is unset or >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"--{name} must be a positive integer, got {value}")
    return value


# --------------------------------------------------------------------------
# Data (--data, --eval_data)
# --------------------------------------------------------------------------

DATA_HELP = ("'mnist' (from $TFQ_DATA_DIR/mnist when set, else the Keras download), a directory holding the "
             "MNIST IDX .gz files, or an .npz with x_train, y_train, x_test, y_test")


def check_data_spec(spec):
    """Usage checks of a --data value that need no loading."""
    if spec is None or spec == "mnist" or os.path.isdir(spec):
        return
    if spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise UsageError(f"{spec}: no such file")
        return
    raise UsageError(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")


def load_data(spec, limit=None):
    """((x_train, y_train), (x_test, y_test)) for a --data value (see DATA_HELP)."""
    from tfq import datasets

    if spec is None:
        raise UsageError("missing --data (mnist, a directory with MNIST files, or an .npz)")
    if spec == "mnist":
        local = os.path.join(os.environ.get("TFQ_DATA_DIR") or "", "mnist")
        if not (os.path.isdir(local) and sum(f.endswith(".gz") for f in os.listdir(local)) >= 4):
            from tfq import quiet

            quiet.import_tensorflow()  # the download goes through Keras: its start-up notices stay quiet
        try:
            (x, y), (xt, yt) = datasets.mnist()
        except Exception as err:  # noqa: BLE001  (urllib, OSError, Keras' own wrappers)
            raise ValueError(f"MNIST: download failed ({first_line(err)}); offline, set TFQ_DATA_DIR to a "
                             "folder whose mnist/ holds the four IDX .gz files") from err
    elif os.path.isdir(spec):
        if os.path.isdir(os.path.join(spec, "mnist")):
            (x, y), (xt, yt) = datasets.mnist(data_dir=spec)
        elif any(f.endswith("idx3-ubyte.gz") for f in os.listdir(spec)):
            (x, y), (xt, yt) = datasets.mnist(data_dir=os.path.dirname(os.path.abspath(spec)))
        else:
            raise UsageError(f"--data {spec}: directory holds no MNIST IDX files (expected mnist/*.gz)")
    elif spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise UsageError(f"{spec}: no such file")
        with np.load(spec) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(f"{spec}: missing arrays {sorted(missing)}")
            x, y, xt, yt = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        x, xt = x.astype(np.float32), xt.astype(np.float32)
    else:
        raise UsageError(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    return (x, y), (xt, yt)
