"""Read user images (photos, scans, screenshots) robustly into tensors [1, 3, H, W] in [-1, 1].

Real-world files come in many shapes: phone photos store their orientation in EXIF instead of
rotating the pixels, scans are grayscale or CMYK, logos are palette images with transparency,
medical and raw exports are 16-bit. `load_image` turns every one of them into the same thing (an
upright sRGB image, transparency composited on white, 16-bit values scaled, not clipped) and
refuses, with one clear `NadaError` each, files that are not images, truncated files and images
too small to hold a face. Very large images are downscaled (with a message) so that alignment and
inversion never allocate gigabytes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nada.errors import NadaError, one_line
from nada.io import to_uint8_image
from nada.limits import MAX_DECODED_PIXELS, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MIN_IMAGE_SIDE

MIN_SIDE, MAX_SIDE, MAX_PIXELS = MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS  # the limits live in nada.limits
# Files nada reads as images, and the subset it writes (PNG for lossless results, JPEG for small ones).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg")

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def load_image(
    path: str | os.PathLike,
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    log: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Read an image file into float32 [1, 3, H, W] in [-1, 1] (upright, RGB, alpha on white, at most `max_side` px).

    `log` receives notes such as the downscaling of a huge image (default: ``warnings.warn``).
    """

    path = Path(path).expanduser()
    notify = log if log is not None else (lambda msg: warnings.warn(msg, stacklevel=3))
    img = _open(path)
    w, h = img.size
    if min(w, h) < min_side:
        raise NadaError(
            f"image {path} is only {w}x{h} pixels: nada needs at least {min_side} pixels on each side; use a larger "
            "image"
        )
    if max(w, h) > max_side and img.format == "JPEG":
        # JPEG can decode directly at 1/2, 1/4 or 1/8 scale, which saves most of the memory of a huge photo.
        img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
    if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:  # the header's size, checked before a byte is decoded
        raise NadaError(
            f"image {path} is {w}x{h} pixels, more than the {MAX_DECODED_PIXELS:,} nada decodes: "
            f"downscale it to at most {MAX_SIDE} pixels per side first"
        )
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as e:  # Pillow reports truncated data as OSError
        raise NadaError(f"image {path} is truncated or corrupt ({one_line(e)}): copy or export it again") from None
    img = _upright(img)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        new = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        notify(f"image {path} is {w}x{h} pixels; downscaled to {new[0]}x{new[1]} (at most {max_side} pixels per side)")
        img = _resizable(img).resize(new, Image.LANCZOS, reducing_gap=3.0)
    return _to_tensor(_normalise_mode(img))


def _resizable(img: Image.Image) -> Image.Image:
    """A mode Pillow resizes faithfully: palettes and 1-bit to 8-bit, 16/32-bit gray to "F"; alpha is kept.

    Pillow resizes RGBA and LA with premultiplied alpha, so compositing on white after the downscale gives
    the composite of the full image, at the memory of the small one.
    """
    if img.mode in _HIGH_DEPTH_MODES:
        return _normalise_mode(img)
    if img.mode in ("P", "PA") or "transparency" in img.info:
        return img.convert("RGBA")
    if img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("L" if img.mode == "1" else "RGB")
    return img


def _open(path: Path) -> Image.Image:
    """Open (not decode) the file; NadaError for missing files, folders, non-images and decompression bombs."""

    if path.is_dir():
        raise NadaError(f"{path} is a folder, not an image: pass an image file such as photo.jpg")
    if not path.is_file():
        raise NadaError(f"image {path} not found: check the path")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its pixel limit; nada downscales such images anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise NadaError(f"{path} is not an image nada can read: use a PNG, JPEG, WebP, BMP, TIFF or GIF file") from None
    except Image.DecompressionBombError:
        raise NadaError(
            f"image {path} has more than {MAX_PIXELS:,} pixels: downscale it before using it with nada"
        ) from None
    except OSError as e:
        raise NadaError(f"cannot read image {path} ({one_line(e)}): check the file and its permissions") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise NadaError(
            f"image {path} is {w}x{h} pixels, more than {MAX_PIXELS:,}: downscale it before using it with nada"
        )
    return img


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phones store rotation there); images with broken EXIF stay as they are."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not make a readable image unusable
        return img


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit "RGB", or "F" (grayscale in [0, 1]) for 16/32-bit grayscale so no precision is lost."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        a = np.asarray(img).astype(np.float32)
        if mode == "F":
            peak = 1.0 if float(a.max(initial=0.0)) <= 1.0 else 255.0
        else:  # 16-bit modes, and "I" which Pillow also uses for 16-bit PNGs
            peak = 65535.0 if mode.startswith("I;16") or float(a.max(initial=0.0)) > 255 else 255.0
        return Image.fromarray(np.clip(a / peak, 0.0, 1.0).astype(np.float32))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[..., 3:].astype(np.uint16)
        on_white = rgba[..., :3] * alpha + 255 * (255 - alpha)  # composite on white, in 8-bit units times 255
        return Image.fromarray(((on_white + 127) // 255).astype(np.uint8))
    return img.convert("RGB")  # CMYK, palette, 1-bit, L, YCbCr, LAB, HSV ...


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB (uint8) or F (gray in [0, 1]) PIL image -> float32 [1, 3, H, W] in [-1, 1]."""
    if img.mode == "F":
        a = np.array(img, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(a)).clamp(0, 1)[None, None].expand(1, 3, -1, -1)
        return (x * 2 - 1).contiguous()
    assert img.mode == "RGB", f"unexpected mode {img.mode}"
    a = np.array(img, dtype=np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
    return x / 127.5 - 1


def tensor_to_pil(img: torch.Tensor) -> Image.Image:
    """One image [1, 3, H, W] or [3, H, W] in [-1, 1] -> 8-bit RGB PIL image."""

    if img.ndim == 3:
        img = img[None]
    assert img.ndim == 4 and img.shape[:2] == (1, 3), f"expected one image [1, 3, H, W], got {tuple(img.shape)}"
    return Image.fromarray(to_uint8_image(img)[0].numpy())
