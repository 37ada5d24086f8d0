"""Global photo filters: the hard negatives of the strict toy judge and the filter suite it is measured on.

A global filter changes every pixel by the same rule (colour, tone, blur, noise) and never draws a
stroke, so no filter of a photo is a sketch or a watercolour. The judge (``nada.toy.evaluator``)
learns to answer "none" for filtered photos from random chains of the ``TRAIN_OPS``; the fixed
``SUITE`` it is measured on has a seen part (single filters and pairs, in the training ranges) and a
held-out part: chains of three or four filters and the ``HELD_OUT_OPS`` (sharpen, vignette), neither
of which the training ever draws.

Images are [N, 3, H, W] in [-1, 1]; every filter returns the same layout and range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

Filter = Callable[[torch.Tensor, float], torch.Tensor]
Chain = tuple[tuple[str, float], ...]

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
_SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8  # central difference, smoothed
_TINTS = torch.tensor([[1.0, 0.85, 0.6], [0.6, 0.8, 1.0], [0.7, 1.0, 0.7], [1.0, 0.7, 0.85]])


def _unit(img: torch.Tensor) -> torch.Tensor:
    return (img + 1) / 2


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1) * 2 - 1


def luminance(img: torch.Tensor) -> torch.Tensor:
    """Luma [N, 1, H, W] in [0, 1] of images [N, 3, H, W] in [-1, 1]."""
    return (_unit(img) * _LUMA.to(img)).sum(1, keepdim=True)


def luma_gradients(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel gradients (x, y) of a luma map [N, 1, H, W], each [N, 1, H, W] in luma per pixel; edges replicated."""
    padded = F.pad(y, (1, 1, 1, 1), mode="replicate")
    k = _SOBEL.to(y)
    return F.conv2d(padded, k.view(1, 1, 3, 3)), F.conv2d(padded, k.t().contiguous().view(1, 1, 3, 3))


def gaussian_blur(img: torch.Tensor, sigma: float, border: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with ``sigma`` pixels (edges replicated, or ``border="reflect"``)."""
    r = max(1, int(round(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-x.pow(2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(img.shape[1], 1)
    c = img.shape[1]
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode=border), k.view(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(img, (0, 0, r, r), mode=border), k.view(c, 1, -1, 1), groups=c)


def grayscale(img: torch.Tensor, amount: float) -> torch.Tensor:
    """Mix ``amount`` (0-1) of the luma into every channel."""
    u = _unit(img)
    return _signed(u + amount * (luminance(img) - u))


def contrast(img: torch.Tensor, k: float) -> torch.Tensor:
    """Scale the distance from mid-grey by ``k``."""
    return _signed(0.5 + k * (_unit(img) - 0.5))


def brightness(img: torch.Tensor, b: float) -> torch.Tensor:
    """Add ``b`` (in [0, 1] units) to every channel."""
    return _signed(_unit(img) + b)


def gamma(img: torch.Tensor, g: float) -> torch.Tensor:
    """Raise [0, 1] intensities to the power ``g`` (< 1 lightens, > 1 darkens)."""
    return _signed(_unit(img).clamp(min=0).pow(g))


def wash(img: torch.Tensor, a: float) -> torch.Tensor:
    """Mix ``a`` (0-1) of white into the image (a faded print)."""
    return _signed(_unit(img) * (1 - a) + a)


def sepia(img: torch.Tensor, amount: float) -> torch.Tensor:
    """Mix ``amount`` of the classic sepia colour matrix."""
    u = _unit(img)
    s = torch.einsum("ij,njhw->nihw", _SEPIA.to(img), u)
    return _signed(u + amount * (s - u))


def tint(img: torch.Tensor, which: float) -> torch.Tensor:
    """Multiply by one of four colour casts (warm, cool, green, pink), chosen by int(which) mod 4."""
    return _signed(_unit(img) * _TINTS[int(which) % len(_TINTS)].view(1, 3, 1, 1).to(img))


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``sigma`` pixels."""
    return gaussian_blur(img, sigma)


def posterize(img: torch.Tensor, levels: float) -> torch.Tensor:
    """Quantise every channel to ``levels`` values."""
    n = max(2, int(round(levels)))
    return _signed(torch.round(_unit(img).clamp(0, 1) * (n - 1)) / (n - 1))


def noise(img: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """Add Gaussian noise of ``std`` ([-1, 1] units), drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return (img + std * torch.randn(img.shape, generator=gen).to(img)).clamp(-1, 1)


def sharpen(img: torch.Tensor, amount: float) -> torch.Tensor:
    """Unsharp mask: add ``amount`` times the detail above a 1-pixel blur."""
    return (img + amount * (img - gaussian_blur(img, 1.0))).clamp(-1, 1)


def vignette(img: torch.Tensor, strength: float) -> torch.Tensor:
    """Darken towards the corners by up to ``strength`` (0-1)."""
    h, w = img.shape[-2:]
    y = torch.linspace(-1, 1, h, device=img.device).view(h, 1)
    x = torch.linspace(-1, 1, w, device=img.device).view(1, w)
    fall = 1 - strength * ((x.pow(2) + y.pow(2)) / 2).clamp(max=1)
    return _signed(_unit(img) * fall)


OPS: dict[str, Filter] = {
    "grayscale": grayscale,
    "contrast": contrast,
    "brightness": brightness,
    "gamma": gamma,
    "wash": wash,
    "sepia": sepia,
    "tint": tint,
    "blur": blur,
    "posterize": posterize,
    "noise": noise,
    "sharpen": sharpen,
    "vignette": vignette,
}
HELD_OUT_OPS = ("sharpen", "vignette")
TRAIN_OPS = tuple(k for k in OPS if k not in HELD_OUT_OPS)


def _draw(rng: np.random.Generator, op: str) -> float:
    """A parameter for ``op`` in its training range: clearly stronger than the judge's label-keeping augmentation."""
    two_sided = {
        "contrast": ((0.3, 0.6), (1.5, 2.8)),
        "brightness": ((-0.4, -0.18), (0.18, 0.45)),
        "gamma": ((0.35, 0.65), (1.6, 2.8)),
    }
    if op in two_sided:
        lo, hi = two_sided[op][int(rng.integers(2))]
        return float(rng.uniform(lo, hi))
    ranges = {
        "grayscale": (0.6, 1.0),
        "wash": (0.3, 0.85),
        "sepia": (0.5, 1.0),
        "tint": (0, 4),
        "blur": (1.8, 3.5),
        "posterize": (2, 5),
        "noise": (0.12, 0.25),
    }
    lo, hi = ranges[op]
    return float(rng.integers(lo, hi)) if op in ("tint", "posterize") else float(rng.uniform(lo, hi))


def random_chain(rng: np.random.Generator, max_ops: int = 2) -> Chain:
    """One to ``max_ops`` distinct training filters with random parameters, in random order."""
    k = int(rng.integers(1, max_ops + 1))
    ops = rng.choice(len(TRAIN_OPS), size=k, replace=False)
    return tuple((TRAIN_OPS[i], _draw(rng, TRAIN_OPS[i])) for i in ops)


def apply_chain(img: torch.Tensor, chain: Chain, seed: int = 0) -> torch.Tensor:
    """Apply the filters of ``chain`` in order to images [N, 3, H, W] in [-1, 1] (``seed``: the noise filter's)."""
    for op, value in chain:
        img = noise(img, value, seed) if op == "noise" else OPS[op](img, value)
    return img


def chain_name(chain: Chain) -> str:
    """Readable name, e.g. "grayscale 1 + wash 0.5"."""
    return " + ".join(f"{op} {value:g}" for op, value in chain)


# The measured suite: the three filters first, then single filters, pairs, and the held-out part.
SEEN: tuple[Chain, ...] = (
    (("grayscale", 1.0),),
    (("grayscale", 1.0), ("wash", 0.5)),
    (("grayscale", 1.0), ("contrast", 2.0)),
    (("contrast", 2.0),),
    (("contrast", 0.5),),
    (("brightness", 0.3),),
    (("gamma", 0.5),),
    (("gamma", 2.0),),
    (("wash", 0.6),),
    (("sepia", 1.0),),
    (("tint", 0),),
    (("tint", 1),),
    (("blur", 2.0),),
    (("posterize", 3),),
    (("noise", 0.15),),
    (("grayscale", 1.0), ("blur", 2.0)),
    (("grayscale", 1.0), ("posterize", 3)),
    (("sepia", 1.0), ("wash", 0.4)),
    (("grayscale", 1.0), ("gamma", 0.5)),
)
HELD_OUT: tuple[Chain, ...] = (
    (("grayscale", 1.0), ("contrast", 2.0), ("wash", 0.5)),
    (("grayscale", 1.0), ("wash", 0.4), ("contrast", 1.8), ("blur", 1.0)),
    (("sepia", 1.0), ("blur", 1.5), ("contrast", 1.8)),
    (("posterize", 3), ("grayscale", 1.0), ("wash", 0.3)),
    (("grayscale", 1.0), ("gamma", 0.6), ("noise", 0.1)),
    (("grayscale", 1.0), ("sharpen", 2.0)),
    (("grayscale", 1.0), ("sharpen", 1.5), ("wash", 0.4)),
    (("vignette", 0.6), ("grayscale", 1.0), ("contrast", 1.6)),
    (("sharpen", 2.0), ("posterize", 3)),
    (("tint", 2), ("vignette", 0.5), ("wash", 0.3)),
    (("grayscale", 1.0), ("gamma", 0.25), ("contrast", 1.5)),
    (("grayscale", 1.0), ("brightness", 0.3), ("contrast", 1.8)),
)
SUITE: dict[str, Chain] = {chain_name(c): c for c in SEEN + HELD_OUT}
