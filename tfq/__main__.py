"""`python -m tfq COMMAND ...`: see tfq/cli/__init__.py."""

from tfq.cli import run

if __name__ == "__main__":
    run()
