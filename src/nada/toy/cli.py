"""`nada toy ...`: toy-world tools on the command line. `nada toy judge IMAGES... --target sketch` prints JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from nada.errors import NadaError
from nada.io import atomic_write
from nada.photos.images import load_image
from nada.toy.evaluator import load_evaluator
from nada.toy.judge import verdicts
from nada.toy.quality import parse_target

if TYPE_CHECKING:
    import torch

TILE_PAD = 2  # the padding nada.io.image_grid puts around every tile


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nada toy`."""
    sub = p.add_subparsers(dest="toy_command", metavar="ACTION", required=True)
    judge = sub.add_parser(
        "judge", help="the strict toy judge's verdicts for images, as JSON (style or none, reject score, attributes)"
    )
    judge.add_argument("images", nargs="+", type=Path, help="image files (any size: each is resized to 64x64)")
    judge.add_argument("--target", default=None, help="a toy style whose rate to report, e.g. sketch")
    judge.add_argument(
        "--grid",
        type=int,
        default=0,
        metavar="SIZE",
        help="each file is a grid of SIZE-pixel tiles with 2-pixel padding (nada's sample grids: 64); judge every tile",
    )
    judge.add_argument("--evaluator", type=Path, default=None, help="judge weights (default: the packaged ones)")
    judge.add_argument(
        "--out", type=Path, default=None, help="also write the JSON to this file (refuses to overwrite one)"
    )


def split_grid(img: "torch.Tensor", size: int, pad: int = TILE_PAD) -> "torch.Tensor":
    """Tiles [K, 3, size, size] of a grid image [1, 3, H, W] laid out by nada.io.image_grid."""
    import torch

    h, w = img.shape[-2:]
    rows, cols = (h - pad) // (size + pad), (w - pad) // (size + pad)
    if rows < 1 or cols < 1 or rows * (size + pad) + pad != h or cols * (size + pad) + pad != w:
        raise NadaError(
            f"a {w}x{h} image is not a grid of {size}-pixel tiles with {pad}-pixel padding: "
            "give the tile size nada wrote (64 for the toy world) or drop --grid"
        )
    corners = [(pad + r * (size + pad), pad + c * (size + pad)) for r in range(rows) for c in range(cols)]
    return torch.cat([img[:, :, y : y + size, x : x + size] for y, x in corners])


def load_images(paths: list[Path], grid: int) -> tuple["torch.Tensor", list[str]]:
    """Images [N, 3, 64, 64] in [-1, 1] and a name per image ("file" or "file#tile")."""
    import torch
    import torch.nn.functional as F

    images, names = [], []
    for path in paths:
        img = load_image(path, min_side=8)
        tiles = split_grid(img, grid) if grid else img
        if tiles.shape[-2:] != (64, 64):
            tiles = F.interpolate(tiles, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        images.append(tiles)
        names += [str(path)] if not grid else [f"{path}#{k}" for k in range(len(tiles))]
    return torch.cat(images), names


def run(args: argparse.Namespace) -> int:
    """Run `nada toy ACTION`."""

    if args.target is not None and not parse_target(args.target).is_style:
        raise NadaError(f"--target {args.target!r} is an attribute; give a toy style such as sketch")
    if args.out is not None and args.out.exists():
        raise NadaError(f"{args.out} already exists: choose another --out or delete it first")
    images, names = load_images(args.images, args.grid)
    result = verdicts(load_evaluator(args.evaluator), images, names, target=args.target)
    text = json.dumps(result, indent=2) + "\n"
    if args.out is not None:
        atomic_write(args.out, lambda p: p.write_text(text, encoding="utf-8"))
    print(text, end="")
    return 0
