"""Sizes and counts nada accepts, so that memory stays bounded whatever the input.

docs/adapt.md ("Limits") lists them for users. They sit below every other module: image reading, seed
lists, grids and the adaptation settings all check against them.
"""

from __future__ import annotations

import math

from nada.errors import NadaError

MAX_SEEDS = 1_000_000  # seeds in one seed list (the list itself: about 40 MB); images stream to --out-dir
MAX_GRID_PIXELS = 64 * 1024 * 1024  # image pixels in one grid file (its uint8 canvas: about 200 MB)
TRUNCATION_RANGE = (-1.0, 2.0)  # truncation psi; beyond it images leave the generator's range and turn to noise
MIN_IMAGE_SIDE = 32  # smaller images hold too little detail to align or invert
MAX_IMAGE_SIDE = 4096  # larger images are downscaled to this longer side before anything else
MAX_IMAGE_PIXELS = 2 * 89_478_485  # pixels an image header may declare (Pillow's decompression-bomb limit)
MAX_DECODED_PIXELS = 8192 * 8192  # pixels decoded from one file (RGBA: 256 MB); JPEG decodes reduced first


def check_truncation(psi: float, flag: str = "--truncation") -> float:
    """``psi`` if it is a finite number inside TRUNCATION_RANGE, else a NadaError naming ``flag``."""
    lo, hi = TRUNCATION_RANGE
    if not (math.isfinite(psi) and lo <= psi <= hi):
        raise NadaError(f"{flag} {psi} is outside [{lo}, {hi}]: use e.g. 0.7 (1 means no truncation)")
    return psi
