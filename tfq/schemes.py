"""The low-bit weight schemes: the one table the rest of tfq derives from.

A scheme is a set of integer levels; a compressed kernel holds
`scale[c] * level` per output channel `c`. The packed format (docs/format.md)
gives every level a code: a few bits per weight, and one code that means 0.
Everything about a scheme (its levels, how many bits it needs, how the file
stores it) is read from `SCHEMES` here: the quantizers, the converter, the
reference executor, the size accounting and the command line.

Pure NumPy: importing it loads neither TensorFlow nor Keras.
"""

import dataclasses

import numpy as np

__all__ = ["Scheme", "SCHEMES", "NAMES", "BLOCK_SIDES", "get", "check", "widest"]


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One weight set and its packed encoding.

    Attributes:
        name: "binary", "ternary", "pow2_3bit" or "pow2_4bit".
        levels: the sorted integer levels, e.g. (-1, 0, 1).
        bits: information bits per weight (1, 2, 3, 4).
        storage_bits: bits of one code in the packed format (1, 2 or 4: a
            pow2_3bit code takes a 4-bit field, like pow2_4bit).
        codes: 16 entries, the level of each code (None: not a valid code).
        zero_code: the code of level 0 (written into padding; binary, which
            has no 0, pads with code 0 and the kernels never read padding).
    """

    name: str
    levels: tuple
    bits: int
    storage_bits: int
    codes: tuple
    zero_code: int

    @property
    def max_level(self):
        """The largest |level| (bounds the integer accumulators)."""
        return max(abs(v) for v in self.levels)

    @property
    def has_zero(self):
        return 0 in self.levels

    def levels_array(self):
        """The levels as a sorted NumPy int32 array."""
        return np.array(self.levels, dtype=np.int32)

    def code_table(self):
        """float32 [16]: the level of each code, NaN for an invalid code."""
        return np.array([np.nan if v is None else v for v in self.codes], dtype=np.float32)


def _pow2(name, bits):
    exps = 2 ** (bits - 1) - 1  # 3 bits: 1, 2, 4; 4 bits: 1 .. 64
    pos = tuple(2 ** e for e in range(exps))
    # code 0 is 0; codes 1..7 are +2^(c-1), codes 9..15 their negatives.
    codes = [None] * 16
    codes[0] = 0
    for e, level in enumerate(pos):
        codes[1 + e] = level
        codes[9 + e] = -level
    levels = tuple(sorted({0, *pos, *(-p for p in pos)}))
    return Scheme(name, levels, bits, 4, tuple(codes), 0)


# Narrowest first: each scheme's levels contain the previous one's, so a
# kernel in several sets is stored in the first (`widest` picks the last).
SCHEMES = {
    s.name: s
    for s in (
        Scheme("binary", (-1, 1), 1, 1, (-1, 1) + (None,) * 14, 0),
        Scheme("ternary", (-1, 0, 1), 2, 2, (-1, 0, 1) + (None,) * 13, 1),
        _pow2("pow2_3bit", 3),
        _pow2("pow2_4bit", 4),
    )
}
NAMES = tuple(SCHEMES)

# Sides of the blocks of block-sparse weights (rows and columns of a block):
# powers of two up to 32, so that blocks tile the packed format's 32-weight
# groups (docs/format.md, version 2).
BLOCK_SIDES = (1, 2, 4, 8, 16, 32)


def check(name):
    """Returns `name` when it names a scheme; else a ValueError listing the valid names."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; valid: {', '.join(NAMES)}")
    return name


def get(name):
    """The `Scheme` called `name` (ValueError names the valid ones)."""
    return SCHEMES[check(name)]


def widest(names):
    """The widest of some scheme names (None for none): the one whose set holds the others."""
    found = [n for n in names if n in SCHEMES]
    return max(found, key=NAMES.index) if found else None
