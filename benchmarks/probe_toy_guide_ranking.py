"""Probe: how the recipe's guides rank the oracle against the adaptations, and the way from one to the other.

`rank`: each of the recipe's guides' directional loss photo -> sketch (toy templates; 0 = along the text
direction) on 32 judged latents (seed 0) for the true sketch renders and each NAME=GENERATOR.pt, on plain images
and under the recipe's paired views (8) with paired noise of standard deviation ``--noise`` (the recipe's 0.4;
four draws, seeded). `path`: `toy`'s loss (plain / views) along the straight line in weight space from each
generator of ``--start`` to ``--end`` (both fine-tuned from the packaged toy generator). docs/toy_quality.md,
"The objective, not only the guide".

    python benchmarks/probe_toy_guide_ranking.py rank --noise 0.4 oracle=oracle.pt recipe=runs/toy-sketch/generator.pt
    python benchmarks/probe_toy_guide_ranking.py path --end oracle.pt --start toy runs/toy-sketch/generator.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from nada.adaptation.loop import apply_views, paired_noise, paired_views
from nada.generator.checkpoints import load_generator
from nada.guidance import losses
from nada.guidance.clip import load_clip
from nada.toy import render as R
from nada.toy.clips import register_toy_clips
from nada.toy.judge import true_renders
from nada.toy.plugin import TOY_RECIPE
from nada.toy.quality import latents

RECIPE = dict(TOY_RECIPE)
GUIDES = tuple(spec.split(":")[0] for spec in RECIPE["clip"].split(","))  # the recipe's guides, unweighted


def guide_loss(
    clip: Any, direction: torch.Tensor, photo: torch.Tensor, img: torch.Tensor, noise: float, draws: int
) -> tuple[float, float]:
    """Directional loss of images [N, 3, H, W] against their photos, plain and mean over ``draws`` view draws."""
    plain = float(losses.directional_loss(clip.encode_image(photo), clip.encode_image(img), direction))
    rng, seen = torch.Generator().manual_seed(0), []
    for _ in range(draws):
        views = paired_views(len(photo), RECIPE["clip_views"], rng, "cpu")
        a, b = apply_views(photo, views), apply_views(img, views)
        if noise > 0:
            shared = paired_noise(a.shape, noise, rng, "cpu")
            a, b = a + shared, b + shared
        seen.append(float(losses.directional_loss(clip.encode_image(a), clip.encode_image(b), direction)))
    return plain, sum(seen) / len(seen)


def interpolate(start: torch.nn.Module, end: torch.nn.Module, share: float) -> torch.nn.Module:
    """A generator whose float weights are (1 - share) * start's + share * end's."""
    import copy

    mixed, a, b = copy.deepcopy(start), start.state_dict(), end.state_dict()
    mixed.load_state_dict({k: torch.lerp(a[k], b[k], share) if a[k].is_floating_point() else a[k] for k in a})
    return mixed


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``rank`` or ``path``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rk = sub.add_parser("rank", help="each guide's loss for true sketches and NAME=GENERATOR.pt outputs")
    rk.add_argument("--noise", type=float, default=RECIPE["clip_noise"], help="the paired noise's std")
    rk.add_argument("generators", nargs="*")
    pa = sub.add_parser("path", help="toy's loss along straight lines in weight space")
    pa.add_argument("--end", required=True)
    pa.add_argument("--start", nargs="+", required=True)
    args = parser.parse_args(argv)
    register_toy_clips()
    toy = load_generator("toy").eval()
    z = latents(toy, 128, 0)[:32]
    photo = toy(z, noise_mode="const")
    clips = {name: load_clip(name) for name in GUIDES}
    directions = {name: losses.text_direction(c, "photo", "sketch", R.TEMPLATES) for name, c in clips.items()}
    if args.command == "rank":
        rows = {"true sketch renders": true_renders(z, "sketch")}
        for spec in args.generators:
            name, _, path = spec.partition("=")
            rows[name] = load_generator(path).eval()(z, noise_mode="const").clamp(-1, 1)
        print(f"plain / views + noise {args.noise:g}: " + "  ".join(GUIDES))
        for name, img in rows.items():
            cells = [guide_loss(clips[g], directions[g], photo, img, args.noise, 4) for g in GUIDES]
            print(f"{name:24s} " + "  ".join(f"{p:.3f} / {v:.3f}" for p, v in cells))
        return 0
    end = load_generator(args.end).eval()
    for spec in args.start:
        start = toy if spec == "toy" else load_generator(spec).eval()
        cells = []
        for share in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
            img = interpolate(start, end, share)(z, noise_mode="const").clamp(-1, 1)
            plain, views = guide_loss(clips["toy"], directions["toy"], photo, img, 0.0, 1)
            cells.append(f"{share:.2f}: {plain:.3f} / {views:.3f}")
        print(f"{spec} -> {args.end}: " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
