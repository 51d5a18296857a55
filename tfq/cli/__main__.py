"""`python -m tfq.cli COMMAND ...`, the same as `python -m tfq COMMAND ...`."""

from tfq.cli import run

if __name__ == "__main__":
    run()
