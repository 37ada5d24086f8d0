"""Small I/O helpers shared by every module: atomic writes, seeds, devices, images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from nada.errors import NadaError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_image(img: "PIL.Image.Image", path: str | os.PathLike) -> Path:  # noqa: F821
    """Save a PIL image atomically; the format follows the file extension of ``path``."""
    fmt = Path(path).suffix.lstrip(".").upper() or "PNG"
    fmt = {"JPG": "JPEG"}.get(fmt, fmt)
    return atomic_write(path, lambda tmp: img.save(tmp, format=fmt))


def parse_seeds(spec: str) -> list[int]:
    """Parse ``"0-15"``, ``"1,5,9"`` or ``"0-3,10"`` into a list of non-negative seeds."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise NadaError(f"bad seed range {part!r}: the end is smaller than the start (write e.g. '0-15')")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise NadaError(f"bad seed list {spec!r}: use non-negative integers like '0-15' or '1,5,9'") from None
    if not seeds:
        raise NadaError(f"bad seed list {spec!r}: it names no seed (write e.g. '0-15')")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise NadaError(f"bad seed list {spec!r}: seeds must lie in 0 .. 2**32-1")
    return seeds


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, with a clear error when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NadaError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NadaError(f"device {name!r} asked for, but no CUDA device is available: use --device cpu")
    return device


def z_from_seeds(seeds: list[int], dim: int) -> torch.Tensor:
    """Latents [N, dim] drawn on the CPU from each seed, so a seed gives the same image on any device."""
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def to_uint8_image(img: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] on the CPU."""
    return ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> "PIL.Image.Image":  # noqa: F821
    """Make a PIL grid from rows of images, each [N, 3, H, W] in [-1, 1]; every row must have the same N, H, W."""
    from PIL import Image

    if not rows:
        raise ValueError("image_grid needs at least one row")
    n, _, h, w = rows[0].shape
    for r in rows:
        assert r.shape[0] == n and r.shape[2:] == (h, w), "every row of a grid needs the same count and size"
    canvas = torch.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=torch.uint8)
    for i, r in enumerate(rows):
        imgs = to_uint8_image(r)
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = imgs[j]
    return Image.fromarray(canvas.numpy())
