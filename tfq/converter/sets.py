"""Detects, from the values alone, whether a weight tensor lies in a tfq set.

The TFLite converter transposes kernels and folds batch normalization into
them (each output channel multiplied by its own factor), so the set is
detected per output channel: channel c is in a set when every weight equals
`scale[c] * level` with `level` in the set's levels. The per-channel scales
absorb the folded factors. Nothing is rounded: a weight that deviates from
`scale * level` by more than `rtol * scale * |level|` (a few float32 ulps by
default, the error of folding arithmetic) makes the tensor "not in a set".
"""

import dataclasses

import numpy as np

from tfq import schemes as schemes_lib

# Relative deviation accepted between a weight and scale*level: float32
# folding arithmetic (a product rounded once or twice) stays below 2^-22.
DEFAULT_RTOL = 2.0 ** -20


@dataclasses.dataclass
class Detection:
    """A tensor found to lie in a set.

    Attributes:
      scheme: the narrowest scheme that holds every channel exactly.
      levels: float32 array [channels, n]: the integer levels.
      scales: float32 array [channels] (or [1] when all channels share one).
      max_rel_error: the largest |w - scale*level| / (scale*|level|) seen.
      sparsity: fraction of zero levels.
    """
    scheme: str
    levels: np.ndarray
    scales: np.ndarray
    max_rel_error: float
    sparsity: float


def detect(matrix, rtol=DEFAULT_RTOL, schemes=schemes_lib.NAMES):
    """Finds the narrowest set holding a weight matrix exactly, per channel.

    Args:
      matrix: float array [channels, n]; row c holds output channel c.
      rtol: relative tolerance for float32 folding arithmetic.
      schemes: candidate schemes (default: all).

    Returns:
      A Detection, or (None, reason) when no scheme holds the matrix.
    """
    w = np.asarray(matrix, dtype=np.float64)
    if w.ndim != 2 or w.size == 0:
        return None, f"weights of shape {w.shape} are not a non-empty matrix"
    if not np.isfinite(w).all():
        return None, "weights contain non-finite values"
    a = np.abs(w)
    nonzero = a > 0
    # smallest non-zero magnitude per channel: the candidate scale (level 1)
    scale = np.where(nonzero, a, np.inf).min(axis=1)
    zero_channel = ~np.isfinite(scale)
    safe_scale = np.where(zero_channel, 1.0, scale)
    ratio = a / safe_scale[:, None]
    exponent = np.where(nonzero, np.rint(np.log2(np.where(nonzero, ratio, 1.0))), 0.0)
    magnitude = np.where(nonzero, 2.0 ** exponent, 0.0)
    rel_err = np.where(nonzero, np.abs(ratio - magnitude) / np.maximum(magnitude, 1.0), 0.0)
    max_rel = float(rel_err.max())
    if max_rel > rtol:
        c, i = np.unravel_index(int(rel_err.argmax()), rel_err.shape)
        return None, (f"not in any set: weight [{c}, {i}] = {w[c, i]:.9g} is not a power-of-two "
                      f"multiple of its channel's smallest magnitude {scale[c]:.9g} "
                      f"(relative deviation {max_rel:.3g} > {rtol:.3g})")
    max_level = float(magnitude.max())
    has_zero = bool((~nonzero).any())
    for scheme in schemes:
        if max_level > schemes_lib.SCHEMES[scheme].max_level:
            continue
        if scheme == "binary" and has_zero:
            continue
        break
    else:
        return None, (f"not in any set: levels up to {max_level:g} times the channel scale "
                      f"exceed the widest scheme ({schemes_lib.SCHEMES[schemes_lib.NAMES[-1]].max_level})")
    levels = (np.sign(w) * magnitude).astype(np.float32)
    scales = np.where(zero_channel, 0.0, scale)
    if (~zero_channel).any():
        fill = float(np.median(scales[~zero_channel]))
    else:
        fill = 1.0
    scales = np.where(zero_channel, fill, scales).astype(np.float32)
    if np.all(scales == scales[0]):
        scales = scales[:1]
    else:
        levels, scales = _try_per_tensor(levels, scales, scheme, zero_channel)
    sparsity = float(1.0 - nonzero.mean())
    return Detection(scheme, levels, scales, max_rel, sparsity), None


def _try_per_tensor(levels, scales, scheme, zero_channel):
    """One shared scale when channel scales differ by exact powers of two.

    A channel trained with a per-tensor scale that happens to lack level 1
    shows a scale 2, 4, ... times larger; fold that factor back into its
    levels when the scheme stays the same.
    """
    live = ~zero_channel
    base = float(scales[live].min()) if live.any() else 1.0
    ratio = scales.astype(np.float64) / base
    factor = 2.0 ** np.rint(np.log2(ratio))
    if not np.all(ratio[live] == factor[live]):
        return levels, scales
    factor = np.where(zero_channel, 1.0, factor)
    merged = levels * factor[:, None].astype(np.float32)
    if np.abs(merged).max() > schemes_lib.SCHEMES[scheme].max_level:
        return levels, scales
    return merged.astype(np.float32), np.array([base], dtype=np.float32)


def dequantize(levels, scales):
    """Returns the float32 weights scale[c] * level for a [channels, n] matrix."""
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 1)
    return (np.asarray(levels, dtype=np.float32) * scales).astype(np.float32)
