"""nada.io: the sample-grid layout, PNG compression levels and the background writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nada.errors import NadaError
from nada.io import BackgroundWriter, atomic_save_image, image_grid


def tile_by_tile(rows: list[torch.Tensor], pad: int) -> np.ndarray:
    """The grid layout written out tile by tile: white canvas, image (i, j) at pad + i*(h+pad), pad + j*(w+pad)."""
    n, _, h, w = rows[0].shape
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        pixels = np.round((np.clip(r.numpy().astype(np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = pixels[j].transpose(1, 2, 0)
    return canvas


@pytest.mark.parametrize("n_rows, shape, pad", [(2, (3, 3, 5, 7), 2), (1, (1, 3, 4, 4), 0), (3, (2, 3, 6, 9), 3)])
def test_image_grid_places_every_tile(n_rows: int, shape: tuple, pad: int) -> None:
    gen = torch.Generator().manual_seed(n_rows)
    rows = [torch.randn(*shape, generator=gen) * 1.3 for _ in range(n_rows)]  # some values beyond [-1, 1]
    assert np.array_equal(np.asarray(image_grid(rows, pad)), tile_by_tile(rows, pad))


def test_png_compress_level_keeps_the_pixels(tmp_path: Path) -> None:
    img = image_grid([torch.linspace(-1, 1, 3 * 40 * 40).reshape(1, 3, 40, 40)])
    fast = atomic_save_image(img, tmp_path / "a.png", compress_level=1)
    default = atomic_save_image(img, tmp_path / "b.png")
    with Image.open(fast) as a, Image.open(default) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(img))
    assert fast.read_bytes() != default.read_bytes()  # the level reached the encoder


def test_background_writer_runs_writes_in_order_and_reports_failures(tmp_path: Path) -> None:
    writer = BackgroundWriter()
    done: list[int] = []
    for i in range(5):
        writer.submit(done.append, i)
    writer.wait()
    assert done == [0, 1, 2, 3, 4]

    def fail() -> None:
        raise NadaError("cannot write x: the disk is full: free some space")

    writer.submit(fail)
    with pytest.raises(NadaError, match="disk is full"):
        writer.wait()
    writer.submit(done.append, 5)  # the error was reported once; later writes still run
    writer.wait()
    writer.close()
    assert done[-1] == 5
