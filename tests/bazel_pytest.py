"""Entry point of the Bazel target //:pytest: runs the pytest suite in place."""

import pathlib
import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", str(pathlib.Path(__file__).parent)]))
