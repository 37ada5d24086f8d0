"""Render images for a list of seeds and write them as one grid or one file per seed (the `nada generate` command)."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from nada.errors import NadaError
from nada.io import atomic_save_image, image_grid, z_from_seeds

GRID_COLUMNS = 8  # images per grid row; the last row is padded with white tiles
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@torch.no_grad()
def generate_images(
    G: torch.nn.Module,
    seeds: Sequence[int],
    truncation_psi: float = 1.0,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] (float32, CPU) for `seeds`; z is drawn on the CPU so a seed looks the same on any device.

    G is moved to `device` when given (else it stays where it is) and put in eval mode; noise is the stored
    constant noise, so the same seed always gives the same image. ``precision`` "bf16" renders with a bf16
    copy of the weights (G itself is left as it is); "fp32" is exact.
    """
    from nada.networks import PRECISIONS

    if batch_size < 1:
        raise NadaError(f"batch size {batch_size} is invalid: use 1 or more")
    if not math.isfinite(truncation_psi):
        raise NadaError(f"truncation {truncation_psi} is not a finite number: use e.g. 0.7 or 1")
    if len(seeds) == 0:
        raise NadaError("no seeds given: pass at least one seed, e.g. '0-7'")
    if precision not in PRECISIONS:
        raise NadaError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if next(G.parameters()).dtype != PRECISIONS[precision]:
        G = copy.deepcopy(G).to(PRECISIONS[precision])
    if device is not None:
        G.to(device)
    G.eval()
    device = next(G.parameters()).device
    z = z_from_seeds(list(seeds), G.style_dim)
    images = [
        G(chunk.to(device), truncation_psi=truncation_psi, noise_mode="const").float().clamp(-1, 1).cpu()
        for chunk in z.split(batch_size)
    ]
    return torch.cat(images)


def _grid_rows(images: torch.Tensor, columns: int) -> list[torch.Tensor]:
    """Split [N, 3, H, W] into rows of `columns` images, padding the last row with white ([-1, 1] value 1)."""
    n = images.shape[0]
    cols = min(n, columns)
    pad = (-n) % cols
    if pad:
        images = torch.cat([images, images.new_ones(pad, *images.shape[1:])])
    return list(images.split(cols))


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise NadaError(f"cannot write image {path}: use a file name ending in {', '.join(IMAGE_SUFFIXES)}")


def save_outputs(
    images: torch.Tensor,
    seeds: Sequence[int],
    out: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> list[Path]:
    """Write images [N, 3, H, W] in [-1, 1]: a grid at `out` (default grid.png) and/or `out_dir/seed0000.png` per seed.

    Every target is checked before anything is written, so a refusal (existing file without `force`) leaves
    the disk untouched; each file is written atomically.
    """
    assert images.ndim == 4 and images.shape[1] == 3, f"images must be [N, 3, H, W], got {tuple(images.shape)}"
    if images.shape[0] != len(seeds):
        raise ValueError(f"{images.shape[0]} images for {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds) and out_dir is not None:
        raise NadaError("the seed list repeats a seed, so per-seed files would overwrite each other: list each seed once")
    targets: list[Path] = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise NadaError(f"{out_dir} exists and is not a folder: choose another --out-dir")
        targets += [out_dir / f"seed{s:04d}.png" for s in seeds]
    grid = Path(out) if out is not None else (Path("grid.png") if out_dir is None else None)
    if grid is not None:
        _check_suffix(grid)
        targets.append(grid)
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise NadaError(f"{existing[0]}{more} already exists: choose another output or pass --force to overwrite")

    from PIL import Image

    from nada.io import to_uint8_image

    written: list[Path] = []
    if out_dir is not None:
        pixels = to_uint8_image(images)
        for i, seed in enumerate(seeds):
            written.append(atomic_save_image(Image.fromarray(pixels[i].numpy()), out_dir / f"seed{seed:04d}.png"))
    if grid is not None:
        written.append(atomic_save_image(image_grid(_grid_rows(images, GRID_COLUMNS)), grid))
    return written
