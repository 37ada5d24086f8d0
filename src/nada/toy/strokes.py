"""An image-tower input stem that shows a guide the strokes of an image, not its colours.

The toy ViT and ResNet guides read a style from the whole image, and an adaptation satisfies them with a
global change (a white page, a tint: docs/toy_quality.md). A tower behind this stem sees only how the
luma changes from pixel to pixel: its horizontal and vertical gradients and its difference from the
local mean (dark lines on a light page stand out, a uniform wash or tint does not exist for it). The
stem has no weights, so a tower trained behind it exports and loads as a plain open_clip state dict;
the config names the stem (``"input_stem": STEM``) and the loader puts it back in front of the tower.
"""

from __future__ import annotations

import torch

from nada.guidance.clip_weights import INPUT_STEM_KEY
from nada.toy import filters as toy_filters

STEM = "luma-strokes"
CONFIG_KEY = INPUT_STEM_KEY  # the config entry that names the stem
LOCAL_SIGMA = 1.5  # pixels: the neighbourhood a line is dark against
# Scales each channel to a spread near 1 on the toy renders (gradients are small numbers per pixel).
GAIN = 8.0


def stroke_channels(x: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] images in [-1,1] -> [N,3,H,W]: luma gradient x, gradient y, luma minus its local mean (scaled)."""
    assert x.ndim == 4 and x.shape[1] == 3, f"expected images [N,3,H,W], got {tuple(x.shape)}"
    y = toy_filters.luminance(x)
    gx, gy = toy_filters.luma_gradients(y)
    local = y - toy_filters.gaussian_blur(y, LOCAL_SIGMA)
    return torch.cat([gx, gy, local], 1) * GAIN


def _stroke_hook(module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the tower's input (the image itself, as the toy CLIPs normalise) becomes its strokes."""
    return (stroke_channels(args[0]), *args[1:])


def see_strokes(model: torch.nn.Module) -> torch.nn.Module:
    """Put the stroke stem in front of ``model.visual`` (an open_clip CLIP); returns the model."""
    model.visual.register_forward_pre_hook(_stroke_hook)
    return model


INPUT_STEMS = {STEM: see_strokes}
