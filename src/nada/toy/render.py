"""Procedural 64x64 cartoon faces in several rendering styles: the toy world's ground truth.

A face is described by discrete attributes (``ATTRIBUTES``, each value a short English word) and
continuous parameters (size, position, tilt, skin tone, colours ...). ``FaceParams`` holds a batch
of them as a struct of arrays. Rendering first builds the face's *layers* (soft masks plus flat
colours, shared by every style), then a style turns the layers into pixels: "photo" shades and
fills them, "sketch" draws their outlines in pencil, "watercolor" washes them, "pixel art" blocks
and posterises them, "neon" makes their outlines glow, "pop art" inks and dots them. So the
content of a face is the same in every style; only the look changes.

Everything is vectorised numpy in float32 over the whole batch; all randomness comes from
explicit seeds. Images are uint8 [N, 64, 64, 3] (``render``) or float [N, 3, 64, 64] in [-1, 1]
(``render_tensor``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

from nada.errors import NadaError

if TYPE_CHECKING:  # torch is only needed by the tensor helpers; importing it here would be slow
    import torch

IMAGE_SIZE = 64
STYLES: tuple[str, ...] = ("photo", "sketch", "watercolor", "pixel art", "neon", "pop art")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "face_shape": ("round", "oval", "square"),
    "hair_color": ("black", "brown", "blond", "red"),
    "hair_style": ("short", "long", "curly"),
    "eyes": ("open", "closed"),
    "mouth": ("smiling", "neutral", "frowning"),
    "glasses": ("no", "yes"),
}
# Continuous parameter -> (low, high); each is uniform on its range.
CONTINUOUS: dict[str, tuple[float, float]] = {
    "size": (0.84, 1.06),  # face scale
    "dx": (-0.09, 0.09),  # face centre offset, in units of half the image width
    "dy": (-0.07, 0.07),
    "tilt": (-0.14, 0.14),  # head rotation in radians
    "skin": (0.0, 1.0),  # skin tone, light to dark
    "bg_hue": (0.0, 1.0),
    "bg_sat": (0.2, 0.65),
    "bg_val": (0.5, 0.95),
    "shirt_hue": (0.0, 1.0),
    "eye_spacing": (0.85, 1.15),
    "mouth_width": (0.8, 1.2),
    "hair_shade": (0.85, 1.15),  # brightness factor of the hair colour
}
# Latent coordinates: one per discrete attribute (in ATTRIBUTES order), then one per continuous one.
LATENT_DIM = len(ATTRIBUTES) + len(CONTINUOUS)

# Prompt templates for the toy CLIP, used like the ImageNet templates with real CLIP.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "the {}",
    "a {} of a face",
    "a {} of a person",
    "a {} portrait",
    "a {} image",
    "a {} picture of a face",
    "a {} of a head",
    "this is a {}",
)
# Attribute -> one prompt per value, for zero-shot classification of that attribute.
ATTRIBUTE_PROMPTS: dict[str, tuple[str, ...]] = {
    "face_shape": ("a round face", "an oval face", "a square face"),
    "hair_color": tuple(f"a face with {v} hair" for v in ATTRIBUTES["hair_color"]),
    "hair_style": tuple(f"a face with {v} hair" for v in ATTRIBUTES["hair_style"]),
    "eyes": tuple(f"a face with {v} eyes" for v in ATTRIBUTES["eyes"]),
    "mouth": tuple(f"a {v} face" for v in ATTRIBUTES["mouth"]),
    "glasses": ("a face without glasses", "a face with glasses"),
}

_HAIR_RGB = np.array([[0.10, 0.08, 0.08], [0.42, 0.25, 0.12], [0.93, 0.79, 0.42], [0.80, 0.26, 0.10]], np.float32)
_SKIN_RGB = np.array([[0.99, 0.86, 0.75], [0.89, 0.67, 0.51], [0.70, 0.48, 0.32], [0.44, 0.29, 0.19]], np.float32)
_NEON_HAIR = np.array([[0.55, 0.35, 1.0], [1.0, 0.55, 0.15], [1.0, 1.0, 0.35], [1.0, 0.15, 0.2]], np.float32)
_IRIS_RGB = np.array([0.22, 0.14, 0.08], np.float32)
_MOUTH_RGB = np.array([0.5, 0.08, 0.1], np.float32)
_INK = np.array([0.06, 0.06, 0.07], np.float32)


@dataclass(frozen=True)
class FaceParams:
    """A batch of N faces: discrete attribute indices (int64 [N]) and continuous parameters (float32 [N])."""

    face_shape: np.ndarray
    hair_color: np.ndarray
    hair_style: np.ndarray
    eyes: np.ndarray
    mouth: np.ndarray
    glasses: np.ndarray
    size: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    tilt: np.ndarray
    skin: np.ndarray
    bg_hue: np.ndarray
    bg_sat: np.ndarray
    bg_val: np.ndarray
    shirt_hue: np.ndarray
    eye_spacing: np.ndarray
    mouth_width: np.ndarray
    hair_shade: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.face_shape)
        for f in fields(self):
            v = getattr(self, f.name)
            assert isinstance(v, np.ndarray) and v.shape == (n,), (
                f"FaceParams.{f.name} must be an array of shape ({n},)"
            )
        for name, values in ATTRIBUTES.items():
            idx = getattr(self, name)
            assert idx.dtype == np.int64 and (n == 0 or (idx.min() >= 0 and idx.max() < len(values))), (
                f"bad {name} indices"
            )

    def __len__(self) -> int:
        return len(self.face_shape)

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> "FaceParams":
        """The faces selected by ``index`` (integer array, boolean mask or slice)."""
        return FaceParams(**{f.name: np.asarray(getattr(self, f.name)[index]).reshape(-1) for f in fields(self)})

    def labels(self) -> dict[str, np.ndarray]:
        """Discrete attribute -> int64 [N] value indices into ``ATTRIBUTES[name]``."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def describe(self, i: int) -> dict[str, str]:
        """Discrete attribute -> value word for face ``i``."""
        return {name: ATTRIBUTES[name][int(getattr(self, name)[i])] for name in ATTRIBUTES}

    @staticmethod
    def concat(batches: Sequence["FaceParams"]) -> "FaceParams":
        """Join several batches into one."""
        return FaceParams(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(FaceParams)})


# ---------------------------------------------------------------- parameters


def _normal_cdf(u: np.ndarray) -> np.ndarray:
    """Standard normal CDF in float64 (through torch, which numpy lacks)."""

    return torch.special.ndtr(torch.from_numpy(np.asarray(u, dtype=np.float64))).numpy()


def params_from_latent(u: np.ndarray) -> FaceParams:
    """Deterministic map from standard-normal u [N, LATENT_DIM] to faces: discrete attributes by quantiles, continuous
    ones by the CDF."""
    u = np.asarray(u, dtype=np.float64)
    assert u.ndim == 2 and u.shape[1] == LATENT_DIM, f"expected latents [N, {LATENT_DIM}], got {u.shape}"
    p = _normal_cdf(u)
    values: dict[str, np.ndarray] = {}
    for k, (name, choices) in enumerate(ATTRIBUTES.items()):
        values[name] = np.minimum((p[:, k] * len(choices)).astype(np.int64), len(choices) - 1)
    for k, (name, (lo, hi)) in enumerate(CONTINUOUS.items(), start=len(ATTRIBUTES)):
        values[name] = (lo + (hi - lo) * p[:, k]).astype(np.float32)
    return FaceParams(**values)


def sample_params(n: int, seed: int) -> FaceParams:
    """N random faces from a seed; the same distribution as ``params_from_latent`` of standard-normal vectors."""
    rng = np.random.default_rng(seed)
    return params_from_latent(rng.standard_normal((n, LATENT_DIM)))


def with_attributes(params: FaceParams, **values: str | int) -> FaceParams:
    """A copy of ``params`` with some discrete attributes set for every face, e.g. ``mouth="smiling"``."""
    changed = {}
    for name, v in values.items():
        if name not in ATTRIBUTES:
            raise NadaError(f"unknown face attribute {name!r}: use one of {', '.join(ATTRIBUTES)}")
        if isinstance(v, str) and v not in ATTRIBUTES[name]:
            raise NadaError(f"unknown value {v!r} for {name}: use one of {', '.join(ATTRIBUTES[name])}")
        idx = ATTRIBUTES[name].index(v) if isinstance(v, str) else int(v)
        changed[name] = np.full(len(params), idx, dtype=np.int64)
    return FaceParams(**{f.name: changed.get(f.name, getattr(params, f.name)) for f in fields(params)})


# ---------------------------------------------------------------- small array helpers


def _col(v: np.ndarray) -> np.ndarray:
    """Per-image scalars [N] -> [N, 1, 1] for broadcasting over pixels."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _aa(dist: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Antialiased coverage [N,H,W] in [0,1] from a signed distance in face units (negative inside)."""
    return np.clip(0.5 - dist * px, 0.0, 1.0)


def _ellipse_dist(
    x: np.ndarray, y: np.ndarray, a: np.ndarray | float, b: np.ndarray | float, squarish: bool = False
) -> np.ndarray:
    """Approximate signed distance to the ellipse (x/a)^2 + (y/b)^2 = 1, or the superellipse with power 6 when
    ``squarish`` (first order: exact on the boundary, which is all antialiasing needs)."""
    qx, qy = np.abs(x) / a + 1e-6, np.abs(y) / b + 1e-6
    qx2, qy2 = qx * qx, qy * qy
    if not squarish:
        r = np.sqrt(qx2 + qy2)
        grad = np.sqrt(qx2 / (a * a) + qy2 / (b * b)) / r
    else:
        qx4, qy4 = qx2 * qx2, qy2 * qy2
        sp = qx4 * qx2 + qy4 * qy2
        r = np.cbrt(np.sqrt(sp))
        grad = np.sqrt((qx4 * qx / a) ** 2 + (qy4 * qy / b) ** 2) * r / sp
    return (r - 1.0) / grad


def _curve_dist(
    x: np.ndarray,
    y: np.ndarray,
    y0: np.ndarray | float,
    bend: np.ndarray | float,
    half_w: np.ndarray | float,
    thick: float,
) -> np.ndarray:
    """Signed distance to a thick parabolic stroke y = y0 + bend * (x / half_w)^2 for |x| <= half_w."""
    t = x / half_w
    along = np.abs(y - (y0 + bend * t * t)) / np.sqrt(1.0 + (2.0 * bend * t / half_w) ** 2) - thick
    return np.maximum(along, np.abs(x) - half_w)


def _union(*alphas: np.ndarray) -> np.ndarray:
    out = alphas[0]
    for a in alphas[1:]:
        out = np.maximum(out, a)
    return out


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift [..., H, W] by whole pixels (content moves down/right for positive values), replicating the edges."""
    h, w = img.shape[-2:]
    if dy:
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        img = img[..., rows, :]
    if dx:
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        img = img[..., cols]
    return img


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur of radius r over the last two axes of [..., H, W], replicating the edges."""
    h, w = img.shape[-2:]
    rows = np.clip(np.arange(-r, h + r), 0, h - 1)
    padded = img[..., rows, :]
    acc = padded[..., 0:h, :].copy()
    for k in range(1, 2 * r + 1):
        acc += padded[..., k : k + h, :]
    cols = np.clip(np.arange(-r, w + r), 0, w - 1)
    padded = acc[..., cols]
    out = padded[..., 0:w].copy()
    for k in range(1, 2 * r + 1):
        out += padded[..., k : k + w]
    out *= 1.0 / (2 * r + 1) ** 2
    return out


def _blur(img: np.ndarray, r: int, passes: int = 2) -> np.ndarray:
    """Roughly Gaussian blur of [..., H, W]: repeated box blurs."""
    for _ in range(passes):
        img = _box_blur(img, r)
    return img


def _edges(alpha: np.ndarray) -> np.ndarray:
    """Outline band of a soft mask [N,H,W]: 3x3 (cross) max minus min, about 2 px wide, in [0, 1]."""
    h, w = alpha.shape[-2:]
    rows, cols = np.clip(np.arange(-1, h + 1), 0, h - 1), np.clip(np.arange(-1, w + 1), 0, w - 1)
    pad = alpha[..., rows, :][..., cols]
    c = pad[..., 1:-1, 1:-1]
    up, down, left, right = pad[..., :-2, 1:-1], pad[..., 2:, 1:-1], pad[..., 1:-1, :-2], pad[..., 1:-1, 2:]
    hi = np.maximum(np.maximum(np.maximum(up, down), np.maximum(left, right)), c)
    lo = np.minimum(np.minimum(np.minimum(up, down), np.minimum(left, right)), c)
    return hi - lo


def _smooth_noise(rng: np.random.Generator, n: int, cells: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Smooth random field [N,size,size], about N(0,1), with `cells` bilinear cells across the image."""
    grid = rng.standard_normal((n, cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    w = pos - i0
    m = np.zeros((size, cells + 1), np.float32)
    m[np.arange(size), i0] = 1 - w
    m[np.arange(size), i0 + 1] = w
    return (m @ grid @ m.T) * 1.6


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV [N] each in [0,1] -> RGB [N,3] in [0,1]."""
    h6 = (np.asarray(h, np.float32) % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0], np.float32)[None, :] + h6[:, None]) % 6.0
    return (v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _rgb(color: np.ndarray) -> np.ndarray:
    """Colour [N,3] -> [N,3,1,1] for broadcasting over channel-first images; [N,3,H,W] passes through."""
    return color[:, :, None, None] if color.ndim == 2 else color


def _over(base: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite colour ([N,3] or [N,3,H,W]) with coverage [N,H,W] over base [N,3,H,W]."""
    return base + (_rgb(color) - base) * alpha[:, None]


def _fill(color: np.ndarray) -> np.ndarray:
    """Canvas [N,3,H,W] filled with colour [N,3]."""
    return np.broadcast_to(_rgb(color), (len(color), 3, IMAGE_SIZE, IMAGE_SIZE)).copy()


# ---------------------------------------------------------------- face geometry


@dataclass
class _Layers:
    """Soft masks [N,H,W] of each face part (front-to-back order decided by ``compose``), their flat colours [N,3]
    and the face-space coordinates [N,H,W] that styles use for shading and textures."""

    masks: dict[str, np.ndarray]
    colors: dict[str, np.ndarray]
    fx: np.ndarray
    fy: np.ndarray
    px: np.ndarray  # pixels per face unit, [N,1,1]


# Painting order, back to front. "lens" is glass: composited with partial opacity.
_ORDER = (
    "shirt",
    "neck",
    "hair_back",
    "ears",
    "face",
    "hair_front",
    "brows",
    "eye_white",
    "iris",
    "lids",
    "mouth",
    "teeth",
    "lens",
    "glasses",
)


def _face_layers(p: FaceParams, warp: tuple[np.ndarray, np.ndarray] | None = None) -> _Layers:
    """Build the masks of every face part; ``warp`` optionally displaces the pixel grid (hand-drawn wobble)."""
    n, s = len(p), IMAGE_SIZE
    c = (np.arange(s, dtype=np.float32) + 0.5) / (s / 2) - 1.0
    gx, gy = np.broadcast_to(c[None, None, :], (n, s, s)), np.broadcast_to(c[None, :, None], (n, s, s))
    if warp is not None:
        gx, gy = gx + warp[0], gy + warp[1]
    scale = _col(p.size)
    cos, sin = _col(np.cos(p.tilt)), _col(np.sin(p.tilt))
    rx, ry = gx - _col(p.dx), gy - (_col(p.dy) + 0.08)
    x = (rx * cos + ry * sin) / scale
    y = (-rx * sin + ry * cos) / scale
    px = scale * (s / 2)

    shape = p.face_shape
    fa = _col(np.choose(shape, [0.43, 0.35, 0.42]).astype(np.float32))  # face half-width
    fb = _col(np.choose(shape, [0.43, 0.55, 0.46]).astype(np.float32))  # face half-height
    face_d = _ellipse_dist(x, y, fa, fb)
    square = shape == 2
    if square.any():
        face_d[square] = _ellipse_dist(x[square], y[square], fa[square], fb[square], squarish=True)
    m: dict[str, np.ndarray] = {}
    m["face"] = _aa(face_d, px)

    # Shirt and neck: a wide rounded body below the head, and a neck joining them.
    m["shirt"] = _aa(_ellipse_dist(x, y - 1.12, 0.78, 0.42), px)
    m["neck"] = _aa(np.maximum(np.abs(x) - 0.15, np.abs(y - 0.55) - 0.35), px)
    m["ears"] = _aa(_ellipse_dist(np.abs(x) - fa, y - 0.03, 0.07, 0.11), px)

    # Hair: a back part (behind the face) and a front part (fringe over the forehead).
    style = _col(p.hair_style)
    theta = np.arctan2(y, x)
    bumps = 0.035 * np.cos(theta * 14.0)
    top = y + 0.08
    cap = _ellipse_dist(x, top, fa + 0.07, fb + 0.06)
    short_back = np.maximum(cap, y - 0.02)
    long_back = np.minimum(np.maximum(cap, y - 0.05), np.maximum(np.abs(x) - (fa + 0.08), np.abs(y - 0.35) - 0.45))
    below_chin = np.maximum(np.abs(x) - 0.8 * fa, 0.1 - y)
    long_back = np.maximum(long_back, -below_chin)  # long hair falls beside the neck, not under the chin
    curly_back = _ellipse_dist(x, top + 0.05, fa + 0.2, fb + 0.14) - bumps
    curly_back = np.maximum(curly_back, y - 0.25 - 0.04 * np.cos(x * 30))
    back = np.where(style == 0, short_back, np.where(style == 1, long_back, curly_back))
    m["hair_back"] = _aa(back, px)
    fringe_line = (
        -fb * 0.42
        + np.where(style == 2, 0.04 * np.cos(x * 34.0), 0.05 * np.abs(np.sin(x * 9.0 + 0.6)))
        + np.float32(0.03) * (style == 1)
    )
    front = np.maximum(face_d - 0.01, y - fringe_line)
    m["hair_front"] = _aa(front, px)

    # Eyes and brows, mirrored about the face axis.
    ex = np.abs(x) - 0.155 * _col(p.eye_spacing)
    ey = y + 0.02
    open_eye = _col(p.eyes) == 0
    white = _aa(_ellipse_dist(ex, ey, 0.085, 0.06), px)
    m["eye_white"] = np.where(open_eye, white, 0.0)
    m["iris"] = np.where(open_eye, _aa(_ellipse_dist(ex, ey + 0.005, 0.042, 0.05), px) * white, 0.0)
    m["lids"] = np.where(open_eye, 0.0, _aa(_curve_dist(ex, ey, -0.02, 0.035, 0.085, 0.016), px))
    m["brows"] = _aa(_curve_dist(ex, y + 0.15, 0.0, 0.02, 0.08, 0.016), px)

    # Mouth: smiling (open crescent with teeth), neutral (straight), frowning (arched down at the corners).
    mw = 0.2 * _col(p.mouth_width)
    my = y - 0.27 - 0.6 * (fb - 0.44)
    mood = _col(p.mouth)
    bend = _col(np.array([-0.09, 0.0, 0.11], np.float32)[p.mouth])
    stroke = _curve_dist(x, my, 0.0, bend, mw, 0.028)
    crescent = np.maximum(
        np.maximum(-(my - (-0.015 + bend * (x / mw) ** 2)), my - (0.09 - 0.1 * (x / mw) ** 2)), np.abs(x) - mw
    )
    m["mouth"] = _aa(np.where(mood == 0, np.minimum(stroke, crescent), stroke), px)
    teeth = np.maximum(crescent + 0.015, my - 0.02)
    m["teeth"] = np.where(mood == 0, _aa(teeth, px), 0.0)

    # Glasses: two rings, a bridge and the temples.
    has = _col(p.glasses) == 1
    ring_r = _ellipse_dist(ex, ey, 0.115, 0.095)
    rings = np.abs(ring_r) - 0.017
    bridge = np.maximum(np.abs(ey + 0.01) - 0.014, np.abs(x) - (0.155 * _col(p.eye_spacing) - 0.1))
    temples = np.maximum(
        np.abs(ey + 0.02) - 0.014, np.maximum(ex - (fa - 0.155 * _col(p.eye_spacing)) - 0.02, -(ex - 0.1))
    )
    m["glasses"] = np.where(has, _aa(np.minimum(np.minimum(rings, bridge), temples), px), 0.0)
    m["lens"] = np.where(has, _aa(ring_r, px), 0.0)

    colors = _part_colors(p)
    return _Layers(masks=m, colors=colors, fx=x, fy=y, px=px)


def _part_colors(p: FaceParams) -> dict[str, np.ndarray]:
    """Flat colour [N,3] in [0,1] of each part."""
    n = len(p)
    t = np.clip(p.skin, 0.0, 1.0) * (len(_SKIN_RGB) - 1)
    i0 = np.minimum(t.astype(np.int64), len(_SKIN_RGB) - 2)
    w = (t - i0)[:, None].astype(np.float32)
    skin = _SKIN_RGB[i0] * (1 - w) + _SKIN_RGB[i0 + 1] * w
    hair = np.clip(_HAIR_RGB[p.hair_color] * p.hair_shade[:, None], 0.0, 1.0)
    ones = np.ones((n, 1), np.float32)
    return {
        "background": _hsv_to_rgb(p.bg_hue, p.bg_sat, p.bg_val),
        "shirt": _hsv_to_rgb(p.shirt_hue, np.full(n, 0.55, np.float32), np.full(n, 0.62, np.float32)),
        "neck": skin * 0.9,
        "hair_back": hair,
        "ears": skin * 0.95,
        "face": skin,
        "hair_front": hair,
        "brows": hair * 0.6,
        "eye_white": ones * np.array([0.97, 0.97, 0.95], np.float32),
        "iris": ones * _IRIS_RGB,
        "lids": ones * np.array([0.15, 0.1, 0.08], np.float32),
        "mouth": ones * _MOUTH_RGB,
        "teeth": ones * np.array([0.98, 0.98, 0.96], np.float32),
        "lens": ones * np.array([0.75, 0.88, 1.0], np.float32),
        "glasses": ones * np.array([0.08, 0.08, 0.1], np.float32),
    }


def _compose(
    layers: _Layers, base: np.ndarray, color_of: Callable[[str], np.ndarray] | None = None, lens_alpha: float = 0.25
) -> np.ndarray:
    """Paint every part over ``base`` [N,H,W,3] back to front; ``color_of(part)`` may override the flat colours."""
    img = base
    for name in _ORDER:
        color = layers.colors[name] if color_of is None else color_of(name)
        alpha = layers.masks[name] * (lens_alpha if name == "lens" else 1.0)
        img = _over(img, color, alpha)
    return img


def _silhouette(layers: _Layers) -> np.ndarray:
    """Coverage [N,H,W] of the whole person (head, hair, neck, shirt)."""
    m = layers.masks
    return _union(m["shirt"], m["neck"], m["hair_back"], m["face"], m["ears"])


def _visible(layers: _Layers) -> dict[str, np.ndarray]:
    """Coverage of each part after occlusion by the parts painted over it."""
    out: dict[str, np.ndarray] = {}
    cover = np.zeros_like(layers.fx)
    for name in reversed(_ORDER):
        a = layers.masks[name]
        out[name] = a * (1.0 - cover)
        if name != "lens":
            cover = cover + (1.0 - cover) * a
    return out


# ---------------------------------------------------------------- styles


def _paint(color: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    """A fixed colour for every face: [N,3]."""
    return np.tile(np.asarray(color, np.float32)[None], (n, 1))


def _style_photo(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    layers = _face_layers(p)
    n, s = len(p), IMAGE_SIZE
    x, y = layers.fx, layers.fy
    rows = np.linspace(-1, 1, s, dtype=np.float32)[None, None, :, None]
    bg = _rgb(layers.colors["background"]) * (1.05 - 0.18 * rows) + 0.03 * _smooth_noise(rng, n, 4)[:, None]
    # A soft drop shadow of the person on the backdrop.
    shadow = _blur(_shift(_silhouette(layers), 2, 2), 2)
    bg = bg * (1.0 - 0.3 * shadow[:, None])
    light_x, light_y = _col(rng.uniform(-0.4, -0.1, n)), _col(rng.uniform(-0.5, -0.2, n))
    shade = np.clip(1.12 - 0.55 * ((x - light_x) ** 2 + (y - light_y) ** 2), 0.6, 1.15)
    strands = shade * (
        1.0 + 0.14 * np.sin(x * 55.0 + 3.0 * np.sin(y * 9.0)) + 0.08 * np.sin(np.sqrt(x * x + (y + 0.3) ** 2) * 60.0)
    )
    grain = 1.0 + 0.04 * rng.standard_normal((n, s, s)).astype(np.float32)
    skin_light = (shade * grain)[:, None]
    fold = ((1.1 - 0.25 * np.clip(y - 0.7, 0, 1)) * grain)[:, None]

    def color_of(name: str) -> np.ndarray:
        col = _rgb(layers.colors[name])
        if name in ("face", "ears", "neck"):
            return col * skin_light
        if name in ("hair_back", "hair_front"):
            return col * strands[:, None]
        if name == "shirt":
            return col * fold
        return col

    img = _compose(layers, bg, color_of)
    return _blur(img, 1, 1) * 0.35 + img * 0.65  # a little optical softness


def _style_sketch(p: FaceParams, rng: np.random.Generator, hatch: str = "lines", outlines: bool = True) -> np.ndarray:
    """The sketch style; ``hatch`` ("lines", "tone": the lines' mean cover as a flat tone, "none") and ``outlines``
    take parts of it away for probes of what a judge needs (the texture draws are the same either way)."""
    n, s = len(p), IMAGE_SIZE
    wobble = (0.012 * _smooth_noise(rng, n, 6), 0.012 * _smooth_noise(rng, n, 6))
    layers = _face_layers(p, warp=wobble)
    vis = _visible(layers)
    tone = (1.0 + 0.015 * _smooth_noise(rng, n, 12) + 0.02 * rng.standard_normal((n, s, s)).astype(np.float32))[:, None]
    img = _rgb(_paint([0.95, 0.93, 0.88], n)) * tone
    ink_parts = ("shirt", "neck", "hair_back", "ears", "face", "hair_front", "eye_white", "mouth", "glasses")
    lines = _union(*[_edges(layers.masks[k]) * (vis[k] > 0.02) for k in ink_parts])
    pressure = np.clip(0.75 + 0.25 * _smooth_noise(rng, n, 8), 0.4, 1.0)
    lines = lines * pressure * np.clip(0.8 + 0.3 * rng.standard_normal((n, s, s)), 0.0, 1.0).astype(np.float32)
    solid = _union(vis["iris"], vis["lids"], vis["brows"], vis["glasses"], vis["mouth"] * 0.8)
    gx, gy = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32))
    angle = _col(rng.uniform(0.6, 1.0, n))
    cover = (np.sin((gx[None] * angle + gy[None]) * 1.9) > 0.1).astype(np.float32)
    cover = {"lines": cover, "tone": np.full_like(cover, cover.mean()), "none": np.zeros_like(cover)}[hatch]
    hair = _union(vis["hair_back"], vis["hair_front"])
    dens = _col(np.choose(p.hair_color, [0.95, 0.75, 0.5, 0.8]).astype(np.float32))
    cheek = vis["face"] * np.clip((layers.fx - 0.05) * 3.0, 0.0, 1.0) * 0.35
    # Coloured pencil for hair (so its colour survives), graphite for everything else.
    img = _over(img, layers.colors["hair_back"] * 0.9, hair * cover * dens)
    img = _over(img, _paint([0.45, 0.45, 0.45], n), cheek * cover)
    return _over(img, _paint([0.18, 0.18, 0.18], n), np.clip(lines * 0.9 * outlines + solid, 0.0, 1.0))


def _style_watercolor(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    n, s = len(p), IMAGE_SIZE
    wobble = (0.015 * _smooth_noise(rng, n, 4), 0.015 * _smooth_noise(rng, n, 4))
    layers = _face_layers(p, warp=wobble)
    img = _rgb(_paint([0.98, 0.97, 0.93], n)) * (1.0 - 0.025 * np.abs(_smooth_noise(rng, n, 16)))[:, None]
    density = np.clip(0.85 + 0.15 * _smooth_noise(rng, n, 6), 0.55, 1.0)
    # The background wash fades out towards the borders, as a painted vignette.
    c = np.linspace(-1, 1, s, dtype=np.float32)
    border = np.clip(1.7 - 1.2 * np.maximum(np.abs(c)[None, :, None], np.abs(c)[None, None, :]), 0, 1)
    img = _over(img, 0.3 + 0.7 * layers.colors["background"], _blur(border * density, 2) * 0.75)
    wet = ("shirt", "neck", "hair_back", "ears", "face", "hair_front")
    for name in _ORDER:
        mask = layers.masks[name] * (0.25 if name == "lens" else 1.0)
        if name in wet:
            soft = _box_blur(mask, 1)
            rim = _edges(soft) * soft  # pigment pools at the inner edge of a wash
            pigment = layers.colors[name] * 0.9 + 0.08
            img = _over(img, pigment, np.clip(soft * density, 0, 1))
            img = _over(img, pigment * 0.6, np.clip(rim * 0.5, 0, 1))
        else:  # details are painted with a fine brush, nearly crisp
            img = _over(img, layers.colors[name] * 0.85, mask)
    img = 0.5 * img + 0.5 * _box_blur(img, 1)  # everything bleeds a little into the wet paper
    return img * (1.0 + 0.035 * _smooth_noise(rng, n, 24))[:, None]


@functools.lru_cache(maxsize=1)
def _pixel_palette() -> np.ndarray:
    """The pixel-art palette [K,3]: greys, the world's hair and skin colours, and a wheel of hues at two strengths."""
    hues = np.arange(12, dtype=np.float32) / 12
    wheel = [
        _hsv_to_rgb(hues, np.full(12, sat, np.float32), np.full(12, val, np.float32))
        for sat, val in ((0.3, 0.88), (0.55, 0.68), (0.6, 0.45))
    ]
    greys = np.array([[0.08, 0.08, 0.1], [0.35, 0.35, 0.38], [0.65, 0.65, 0.66], [0.96, 0.96, 0.94]], np.float32)
    return np.concatenate([greys, _HAIR_RGB, _SKIN_RGB, _SKIN_RGB * 0.85, _MOUTH_RGB[None], *wheel])


def _to_palette(img: np.ndarray) -> np.ndarray:
    """Replace each pixel of [N,3,H,W] by the nearest palette colour."""
    n, _, h, w = img.shape
    flat = img.transpose(0, 2, 3, 1).reshape(-1, 1, 3)
    palette = _pixel_palette()
    # argmin |x - c|^2 = argmin (|c|^2 - 2 x.c): one small matrix product instead of a [P,K,3] difference.
    nearest = np.argmin((palette * palette).sum(1)[None] - 2.0 * (flat[:, 0] @ palette.T), axis=1)
    return palette[nearest].reshape(n, h, w, 3).transpose(0, 3, 1, 2)


def _style_pixel_art(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    n, s, block = len(p), IMAGE_SIZE, 2
    layers = _face_layers(p)
    for k in ("brows", "iris", "lids", "mouth", "glasses"):  # thicken thin parts so they survive the big pixels
        layers.masks[k] = np.clip(layers.masks[k] * 2.5, 0.0, 1.0)
    flat = _compose(layers, _fill(layers.colors["background"]), lens_alpha=0.0)
    # Area-average into big pixels (thin parts such as glasses survive as darker pixels), then posterise.
    small = flat.reshape(n, 3, s // block, block, s // block, block).mean((3, 5))
    small = _to_palette(small)
    sil = _silhouette(layers).reshape(n, s // block, block, s // block, block).mean((2, 4)) > 0.5
    inner = sil & _shift(sil, 1, 0) & _shift(sil, -1, 0) & _shift(sil, 0, 1) & _shift(sil, 0, -1)
    small = _over(small, _paint([0.08, 0.08, 0.08], n), (sil & ~inner).astype(np.float32))
    return small.repeat(block, 2).repeat(block, 3)


def _style_neon(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    n = len(p)
    layers = _face_layers(p)
    vis = _visible(layers)
    img = _rgb(layers.colors["background"] * 0.12 + 0.01) * (1.0 + 0.3 * _smooth_noise(rng, n, 3))[:, None]
    tint = _hsv_to_rgb(
        rng.uniform(0.45, 0.6, n).astype(np.float32), np.full(n, 0.8, np.float32), np.ones(n, np.float32)
    )
    hair = _union(vis["hair_back"], vis["hair_front"])
    seen = {k: (vis[k] > 0.01) for k in ("face", "neck", "ears", "shirt")}
    strokes = [
        (
            _union(
                _edges(layers.masks["face"]) * seen["face"],
                _edges(layers.masks["neck"]) * seen["neck"],
                _edges(layers.masks["ears"]) * seen["ears"],
            ),
            tint,
        ),
        (_edges(layers.masks["shirt"]) * seen["shirt"], tint * 0.7),
        (_union(_edges(hair), hair * (np.sin(layers.fx * 70.0) > 0.6)), _NEON_HAIR[p.hair_color]),
        (_union(_edges(vis["eye_white"]), vis["iris"], vis["lids"], vis["brows"] * 0.8), _paint([0.95, 0.95, 1.0], n)),
        (vis["mouth"], _paint([1.0, 0.3, 0.75], n)),
        (vis["glasses"], _paint([0.3, 1.0, 0.45], n)),
    ]
    for alpha, color in strokes:
        img = img + _rgb(color) * (_blur(alpha, 2) * 0.9)[:, None]
        img = _over(img, 0.35 + 0.65 * color, alpha * 0.9)
    return img


def _style_pop_art(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    n, s = len(p), IMAGE_SIZE
    layers = _face_layers(p)
    vis = _visible(layers)
    gx, gy = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32))
    period = _col(rng.choice([4.0, 5.0], size=n).astype(np.float32))
    cx, cy = (gx[None] % period) - period / 2 + 0.5, (gy[None] % period) - period / 2 + 0.5
    dots = (cx * cx + cy * cy < (period * 0.32) ** 2).astype(np.float32)
    bg_col = _hsv_to_rgb(p.bg_hue, np.full(n, 0.85, np.float32), np.full(n, 1.0, np.float32))
    img = _over(_fill(bg_col), bg_col * 0.55, dots)

    def color_of(name: str) -> np.ndarray:
        col = layers.colors[name]
        if name in ("face", "ears", "neck", "shirt", "hair_back", "hair_front"):
            mean = col.mean(1, keepdims=True)
            return np.clip(mean + (col - mean) * 1.8 + 0.06, 0, 1)  # saturated printing inks
        return col

    img = _compose(layers, img, color_of, lens_alpha=0.4)
    skin = _union(vis["face"], vis["ears"], vis["neck"])
    fine = ((gx % 3 - 1) ** 2 + (gy % 3 - 1) ** 2 < 1.0).astype(np.float32)[None]
    img = _over(img, _paint([0.95, 0.35, 0.35], n), skin * fine * 0.35)
    parts = ("shirt", "neck", "hair_back", "ears", "face", "hair_front", "eye_white", "mouth", "glasses")
    ink = _union(*[_edges(layers.masks[k]) * (vis[k] > 0.02) for k in parts])
    ink = _union(ink, vis["iris"], vis["lids"], vis["brows"])
    return _over(img, _paint(_INK, n), np.clip(ink * 1.3, 0, 1))


_STYLE_FUNCS: dict[str, Callable[[FaceParams, np.random.Generator], np.ndarray]] = {
    "photo": _style_photo,
    "sketch": _style_sketch,
    "watercolor": _style_watercolor,
    "pixel art": _style_pixel_art,
    "neon": _style_neon,
    "pop art": _style_pop_art,
}


# ---------------------------------------------------------------- public rendering


_CHUNK = 32


def render(params: FaceParams, style: str, seed: int = 0) -> np.ndarray:
    """Render faces in one style: uint8 [N, 64, 64, 3]; texture randomness (paper, grain, strokes) comes from
    ``seed``."""
    if style not in _STYLE_FUNCS:
        raise NadaError(f"unknown toy style {style!r}: use one of {', '.join(STYLES)}")
    if len(params) == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    out = np.empty((len(params), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    # Chunks keep the per-pixel temporaries in the CPU cache; each chunk has its own texture stream.
    for k, start in enumerate(range(0, len(params), _CHUNK)):
        rng = np.random.default_rng([seed, STYLES.index(style), k])
        chunk = params.subset(slice(start, start + _CHUNK))
        img = _STYLE_FUNCS[style](chunk, rng)
        assert img.shape == (len(chunk), 3, IMAGE_SIZE, IMAGE_SIZE), img.shape
        out[start : start + len(chunk)] = np.clip(img * 255.0 + 0.5, 0.0, 255.0).transpose(0, 2, 3, 1)
    return out


def render_mixed(params: FaceParams, styles: Sequence[str], seed: int = 0) -> np.ndarray:
    """Render face i in ``styles[i]``: uint8 [N, 64, 64, 3] (one ``render`` call per distinct style)."""
    assert len(styles) == len(params), "need one style per face"
    unknown = set(styles) - set(STYLES)
    if unknown:
        raise NadaError(f"unknown toy styles {sorted(unknown)}: use any of {', '.join(STYLES)}")
    out = np.zeros((len(params), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    styles_arr = np.asarray(styles, dtype=object)
    for style in STYLES:
        idx = np.nonzero(styles_arr == style)[0]
        if len(idx):
            out[idx] = render(params.subset(idx), style, seed=seed)
    return out


# Small parts that carry the attributes eyes, mouth and glasses (and the brows that frame the eyes).
DETAIL_PARTS = ("brows", "eye_white", "iris", "lids", "mouth", "teeth", "lens", "glasses")


def _photo_part_map(params: FaceParams, combine: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
    """float32 [N, ..., 64, 64]: ``combine`` of the visible part coverages [n, 64, 64], chunk by chunk, in the photo
    render's geometry."""
    chunks = range(0, len(params), _CHUNK)
    maps = [combine(_visible(_face_layers(params.subset(slice(i, i + _CHUNK))))) for i in chunks]
    return np.concatenate(maps).astype(np.float32, copy=False)


def detail_mask(params: FaceParams) -> np.ndarray:
    """Visible coverage float32 [N, 64, 64] in [0, 1] of DETAIL_PARTS, aligned with the photo render (no hand-drawn
    wobble)."""
    return _photo_part_map(params, lambda visible: np.clip(sum(visible[name] for name in DETAIL_PARTS), 0.0, 1.0))


def outline_mask(params: FaceParams) -> np.ndarray:
    """Outline band float32 [N, 64, 64] in [0, 1] of the visible face and ears (what tells face shapes apart),
    photo-aligned."""
    return _photo_part_map(
        params, lambda visible: np.clip(_edges(np.clip(visible["face"] + visible["ears"], 0.0, 1.0)), 0.0, 1.0)
    )


# Part groups of `part_maps`, one channel each: what a segmentation of a face into its regions would name.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "hair": ("hair_back", "hair_front"),
    "skin": ("neck", "ears", "face"),
    "eye_white": ("eye_white",),
    "eye_dark": ("iris", "lids", "brows"),
    "mouth": ("mouth", "teeth"),
    "glasses": ("glasses", "lens"),
    "shirt": ("shirt",),
}


def part_maps(params: FaceParams) -> np.ndarray:
    """Visible coverage float32 [N, len(PART_GROUPS), 64, 64] in [0, 1] of each part group, photo-aligned; the same
    for every style of a face (a segmentation, no colour or texture)."""
    return _photo_part_map(
        params,
        lambda visible: np.stack([np.clip(sum(visible[k] for k in names), 0, 1) for names in PART_GROUPS.values()], 1),
    )


def hair_rgb(params: FaceParams) -> np.ndarray:
    """The face's own hair colour float32 [N, 3] in [0, 1] (the photo's flat colour), whatever the style draws."""
    return _part_colors(params)["hair_back"]


def to_tensor(images: np.ndarray, device: "torch.device | str" = "cpu") -> "torch.Tensor":
    """uint8 [N, 64, 64, 3] -> float32 [N, 3, 64, 64] in [-1, 1]."""

    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3, (
        f"expected uint8 [N,H,W,3], got {images.dtype} {images.shape}"
    )
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def render_tensor(
    params: FaceParams, style: str, seed: int = 0, device: "torch.device | str" = "cpu"
) -> "torch.Tensor":
    """Render faces in one style as float32 [N, 3, 64, 64] in [-1, 1] on ``device``."""
    return to_tensor(render(params, style, seed=seed), device=device)


# ---------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_parts(params: FaceParams, style: str | Sequence[str], seed: int) -> list[dict[str, str]]:
    """For each face, the facts (style and attribute words) one caption will state, chosen at random."""
    rng = np.random.default_rng([seed, 7])
    styles = [style] * len(params) if isinstance(style, str) else list(style)
    assert len(styles) == len(params), "need one style per face"
    out = []
    for i in range(len(params)):
        facts: dict[str, str] = {}
        kind = rng.random()
        if kind < 0.12:  # style alone: "sketch", "a sketch"
            facts["style"] = styles[i]
        else:
            if rng.random() < 0.7:
                facts["style"] = styles[i]
            words = params.describe(i)
            k = rng.choice([0, 1, 1, 2, 2, 3, 4])
            for name in rng.permutation(list(ATTRIBUTES))[:k]:
                facts[str(name)] = words[str(name)]
        out.append(facts)
    return out


def caption_from_parts(facts: dict[str, str], rng: np.random.Generator) -> str:
    """Phrase a set of facts as an English caption, with varied wording."""
    style = facts.get("style")
    content = {k: v for k, v in facts.items() if k != "style"}
    if not content and style is not None and rng.random() < 0.6:
        return rng.choice([style, f"a {style}", f"the {style}", f"a {style} image"])
    adjectives = []
    if "mouth" in content:
        adjectives.append(content["mouth"])
    if "face_shape" in content:
        adjectives.append(content["face_shape"])
    noun = "face" if rng.random() < 0.8 else rng.choice(["person", "head", "portrait"])
    subject = " ".join(adjectives + [noun])
    extras = []
    hair_words = [content[k] for k in ("hair_color", "hair_style") if k in content]
    if hair_words:
        if len(hair_words) == 2 and rng.random() < 0.5:
            hair_words = hair_words[::-1]
        extras.append(" ".join(hair_words) + " hair")
    if "eyes" in content:
        extras.append(f"{content['eyes']} eyes")
    if "glasses" in content:
        extras.append("glasses" if content["glasses"] == "yes" else "no glasses")
    rng.shuffle(extras)
    phrase = subject
    if extras:
        if extras == ["no glasses"] and rng.random() < 0.5:
            phrase = f"{subject} without glasses"
        else:
            phrase = f"{subject} with " + (
                ", ".join(extras[:-1]) + " and " + extras[-1] if len(extras) > 1 else extras[0]
            )
    bare = rng.random() < 0.15
    article = "" if bare else _article(phrase) + " "
    if style is None:
        return f"{article}{phrase}"
    form = rng.random()
    if form < 0.6:
        return f"{_article(style)} {style} of {_article(phrase)} {phrase}"
    if form < 0.8:
        return f"{article}{phrase}, {style}"
    return f"{article}{phrase} in {style} style"


def captions(params: FaceParams, style: str | Sequence[str], seed: int) -> list[str]:
    """One varied caption per face, e.g. "a sketch of a smiling face with glasses", "sketch", "a face with red long
    hair"."""
    rng = np.random.default_rng([seed, 11])
    return [caption_from_parts(f, rng) for f in caption_parts(params, style, seed)]
