"""Probe: does a guide's gradient point towards the sketch the judge accepts?

For 32 judged latents (seed 0) and a current generator (`--at`: the packaged toy generator or a fine-tuned
one), each objective's descent direction is compared with the way to the goal, by cosine:

- pixels: minus the objective's gradient with respect to the current images [N, 3, H, W] against the true
  sketch render minus the current image, per image (mean over images), whole and split into a low band
  (Gaussian blur, sigma 3 px) and the high band that remains;
- weights: minus the gradient with respect to every trained weight against the oracle's weights minus the
  current ones (`--oracle`, fine-tuned from the packaged generator on the true sketch renders), and the same
  for Adam's first step (the gradient's sign).

An objective is ``GUIDE[+GUIDE...]@VIEWS@NOISE[@global]`` (a guide by name or folder): the directional term
photo -> sketch (or the global term towards "sketch") of the guides, under VIEWS paired views and paired
noise of std NOISE, as `nada adapt` computes them; ``prior:PATH@T_LO@T_HI@GUIDANCE`` the denoising prior's term of
`probe_toy_denoiser.py`. ``mse`` is the supervised oracle's own objective, the
reference for how well a gradient can point. docs/toy_quality.md, "Which way the guides point".

    python benchmarks/probe_toy_guide_alignment.py --oracle oracle.pt --at toy mse toy@8@0.4 toy@8@0 toy-robust@8@0.4
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nada.adaptation.loop import apply_views, directional_term, images_at_rest, paired_noise, paired_views
from nada.generator.checkpoints import load_generator
from nada.guidance import losses
from nada.guidance.clip import load_clip
from nada.toy import render as R
from nada.toy.clips import register_toy_clips
from nada.toy.filters import gaussian_blur
from nada.toy.judge import true_renders
from nada.toy.quality import latents


@functools.cache
def guide(name: str) -> Any:
    """The toy CLIP ``name``, loaded once."""
    return load_clip(name)


@functools.cache
def texts(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Guide ``name``'s direction photo -> sketch [1, D] and its "sketch" text features [T, D] (toy templates)."""
    clip = guide(name)
    direction = losses.text_direction(clip, "photo", "sketch", R.TEMPLATES)
    return direction, losses.text_features(clip, "sketch", R.TEMPLATES)


def low_band(img: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """Gaussian blur of images [N, C, H, W] (reflected borders): the band a wash or tint changes."""
    return gaussian_blur(img, sigma, border="reflect")


def objective(spec: str, frozen: torch.Tensor, img: torch.Tensor, target: torch.Tensor, draws: int) -> torch.Tensor:
    """The objective named by ``spec`` for images ``img`` [N, 3, H, W] in [-1, 1] (frozen photos ``frozen``)."""
    if spec == "mse":
        return (img - target).square().mean()
    if spec.startswith("prior:"):  # the denoising prior's term (probe_toy_denoiser.py): PATH@T_LO@T_HI@GUIDANCE
        from probe_toy_denoiser import DeltaDenoising, load_denoiser

        path, lo, hi, cfg = spec[len("prior:") :].split("@")
        term = DeltaDenoising(load_denoiser(path), "photo", "sketch", float(cfg), (float(lo), float(hi)))
        return sum(term(frozen, img) for _ in range(draws)) / draws
    parts = spec.split("@")
    names, views, noise = parts[0].split("+"), int(parts[1]), float(parts[2])
    total = img.new_zeros(())
    rng = torch.Generator().manual_seed(0)
    at_rest = images_at_rest(frozen, img)
    for _ in range(draws):
        a, b, rest = frozen, img, at_rest
        if views > 0:
            theta = paired_views(len(img), views, rng, "cpu")
            a, b, rest = apply_views(a, theta), apply_views(b, theta), rest.repeat_interleave(views)
        if noise > 0:
            shared = paired_noise(a.shape, noise, rng, "cpu")
            a, b = a + shared, b + shared
        for name in names:
            clip = guide(name)
            with torch.no_grad():
                f_src = clip.encode_image(a)
            f_tgt = clip.encode_image(b)
            direction, sketch = texts(name)
            if parts[3:] == ["global"]:
                total = total + losses.global_loss(f_tgt, sketch, clip.logit_scale)
            else:
                total = total + directional_term(f_src, f_tgt, direction, rest)
    return total / draws


def per_image_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the cosine between [N, ...] tensors a and b."""
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one row per objective."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", required=True, help="generator fine-tuned on the true sketch renders")
    parser.add_argument("--at", default="toy", help="the current generator: 'toy' or a generator file")
    parser.add_argument("--draws", type=int, default=4, help="view and noise draws averaged per objective")
    parser.add_argument("objectives", nargs="+")
    args = parser.parse_args(argv)
    register_toy_clips()
    torch.manual_seed(0)
    frozen_g = load_generator("toy").eval()
    current = load_generator(args.at).eval()
    oracle = load_generator(args.oracle).eval()
    z = latents(frozen_g, 128, 0)[:32]
    with torch.no_grad():
        frozen = frozen_g(z, noise_mode="const")
        truth = true_renders(z, "sketch")
        ends = oracle.state_dict()
        to_oracle = {k: ends[k] - v for k, v in current.state_dict().items() if v.is_floating_point()}
    params = {k: p for k, p in current.named_parameters() if k in to_oracle}
    way = torch.cat([to_oracle[k].flatten() for k in params])
    print("objective                 pixels: whole / low / high   weights: gradient / sign")
    for spec in args.objectives:
        current.zero_grad(set_to_none=True)
        img = current(z, noise_mode="const")
        img.retain_grad()
        objective(spec, frozen, img, truth, args.draws).backward()
        step, goal = -img.grad, truth - img.detach()
        step_low, goal_low = low_band(step), low_band(goal)
        pixels = [per_image_cos(step, goal), per_image_cos(step_low, goal_low)]
        pixels.append(per_image_cos(step - step_low, goal - goal_low))
        grad = torch.cat([(-p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params.values()])
        weights = [float(F.cosine_similarity(grad, way, dim=0)), float(F.cosine_similarity(grad.sign(), way, dim=0))]
        print(
            f"{spec:25s} " + " / ".join(f"{c:+.3f}" for c in pixels) + "   " + " / ".join(f"{c:+.3f}" for c in weights)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
