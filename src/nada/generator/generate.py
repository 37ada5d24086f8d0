"""Render images for a list of seeds and write them as one grid or one file per seed (the `nada generate` command)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from nada.errors import NadaError
from nada.generator.networks import PRECISIONS
from nada.io import (
    atomic_save_image,
    check_writable_file,
    check_writable_folder,
    image_grid,
    to_uint8_image,
    z_from_seeds,
)
from nada.limits import MAX_GRID_PIXELS, check_truncation
from nada.photos.images import WRITE_SUFFIXES

GRID_COLUMNS = 8  # images per grid row; the last row is padded with white tiles


@torch.no_grad()
def generate_images(
    G: torch.nn.Module,
    seeds: Sequence[int],
    truncation_psi: float = 1.0,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] (float32, CPU) for `seeds`; z is drawn on the CPU so a seed looks the same on any
    device.

    G is moved to `device` when given (else it stays where it is) and put in eval mode; noise is the stored
    constant noise, so the same seed always gives the same image. ``precision`` "bf16" renders with a bf16
    copy of the weights (G itself is left as it is); "fp32" is exact.
    """
    if batch_size < 1:
        raise NadaError(f"batch size {batch_size} is invalid: use 1 or more")
    check_truncation(truncation_psi)
    if len(seeds) == 0:
        raise NadaError("no seeds given: pass at least one seed, e.g. '0-7'")
    G = at_precision(G, precision)
    if device is not None:
        G.to(device)
    G.eval()
    device = next(G.parameters()).device
    seeds = list(seeds)
    batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
    return torch.cat([_render(G, batch, truncation_psi, device) for batch in batches])


def at_precision(G: torch.nn.Module, precision: str) -> torch.nn.Module:
    """G itself when its weights already have ``precision``'s dtype, else a converted copy (G is left as it is)."""

    if precision not in PRECISIONS:
        raise NadaError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if next(G.parameters()).dtype != PRECISIONS[precision]:
        G = copy.deepcopy(G).to(PRECISIONS[precision])
    return G


def _render(G: torch.nn.Module, seeds: list[int], truncation_psi: float, device: torch.device) -> torch.Tensor:
    """One batch: images [N, 3, H, W] in [-1, 1] (float32, CPU) for `seeds`."""
    z = z_from_seeds(seeds, G.style_dim).to(device)
    return G(z, truncation_psi=truncation_psi, noise_mode="const").float().clamp(-1, 1).cpu()


def _grid_rows(images: torch.Tensor, columns: int) -> list[torch.Tensor]:
    """Split [N, 3, H, W] into rows of `columns` images, padding the last row with white ([-1, 1] value 1)."""
    n = images.shape[0]
    cols = min(n, columns)
    pad = (-n) % cols
    if pad:
        images = torch.cat([images, images.new_ones(pad, *images.shape[1:])])
    return list(images.split(cols))


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise NadaError(f"cannot write image {path}: use a file name ending in {', '.join(WRITE_SUFFIXES)}")


def check_outputs(
    seeds: Sequence[int], out: str | os.PathLike | None, out_dir: str | os.PathLike | None, force: bool
) -> tuple[Path | None, Path | None]:
    """The grid file and per-seed folder to write (None: not asked for); checks names, existing files, write access.

    Nothing is written; an existing target is refused unless `force`.
    """
    if len(set(seeds)) != len(seeds) and out_dir is not None:
        raise NadaError(
            "the seed list repeats a seed, so per-seed files would overwrite each other: list each seed once"
        )
    targets: list[Path] = []
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        if folder.exists() and not folder.is_dir():
            raise NadaError(f"{folder} exists and is not a folder: choose another --out-dir")
        check_writable_folder(folder, "--out-dir")
        if folder.is_dir():
            targets += [folder / seed_file(s) for s in seeds]
    grid = Path(out) if out is not None else (Path("grid.png") if out_dir is None else None)
    if grid is not None:
        _check_suffix(grid)
        check_writable_file(grid, "--out")
        targets.append(grid)
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise NadaError(f"{existing[0]}{more} already exists: choose another output or pass --force to overwrite")
    return grid, folder


def seed_file(seed: int) -> str:
    """The file name of one seed's image in --out-dir."""
    return f"seed{seed:04d}.png"


def check_grid_size(n: int, size: int) -> None:
    """NadaError when a grid of `n` images of `size` x `size` pixels exceeds MAX_GRID_PIXELS."""
    if n * size * size > MAX_GRID_PIXELS:
        raise NadaError(
            f"a grid of {n} images of {size}x{size} pixels exceeds the {MAX_GRID_PIXELS:,} pixels nada puts "
            "in one grid: use --out-dir (one file per seed, any number of seeds) or fewer seeds"
        )


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
    grid, folder = check_outputs(seeds, out, out_dir, force)

    written: list[Path] = []
    if folder is not None:
        pixels = to_uint8_image(images)
        for i, seed in enumerate(seeds):
            written.append(atomic_save_image(Image.fromarray(pixels[i].numpy()), folder / seed_file(seed)))
    if grid is not None:
        written.append(atomic_save_image(image_grid(_grid_rows(images, GRID_COLUMNS)), grid))
    return written


@torch.no_grad()
def write_outputs(
    G: torch.nn.Module,
    seeds: Sequence[int],
    grid: Path | None,
    out_dir: Path | None,
    truncation_psi: float = 1.0,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Iterator[Path]:
    """Render `seeds` batch by batch into per-seed files in `out_dir` and/or one grid file; yields each path written.

    Memory holds one batch and the grid's uint8 canvas (bounded by MAX_GRID_PIXELS), whatever the seed count.
    Check the targets with `check_outputs` first. ``precision`` as in `generate_images`.
    """

    check_truncation(truncation_psi)
    if batch_size < 1:
        raise NadaError(f"batch size {batch_size} is invalid: use 1 or more")
    if grid is not None:
        check_grid_size(len(seeds), G.size)
    G = at_precision(G, precision)
    if device is not None:
        G.to(device)
    G.eval()
    device = next(G.parameters()).device
    cols = min(len(seeds), GRID_COLUMNS)
    canvas = _blank_grid(len(seeds), G.size, cols) if grid is not None else None
    for start in range(0, len(seeds), batch_size):
        batch = list(seeds[start : start + batch_size])
        pixels = to_uint8_image(_render(G, batch, truncation_psi, device))
        for i, seed in enumerate(batch):
            if canvas is not None:
                _paste(canvas, start + i, pixels[i], cols)
            if out_dir is not None:
                yield atomic_save_image(Image.fromarray(pixels[i].numpy()), out_dir / seed_file(seed))
    if grid is not None and canvas is not None:
        yield atomic_save_image(Image.fromarray(canvas.numpy()), grid)


def _blank_grid(n: int, size: int, cols: int, pad: int = 2) -> torch.Tensor:
    """The white uint8 canvas [H, W, 3] of a grid of `n` square images, `cols` per row, as `image_grid` lays them."""
    rows = -(-n // cols)
    return torch.full((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), 255, dtype=torch.uint8)


def _paste(canvas: torch.Tensor, index: int, tile: torch.Tensor, cols: int, pad: int = 2) -> None:
    """Put one uint8 image [S, S, 3] into its place (row-major, `cols` per row) on a grid canvas."""
    row, col = divmod(index, cols)
    y, x = pad + row * (tile.shape[0] + pad), pad + col * (tile.shape[1] + pad)
    canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
