"""Time W+ inversion steps (MSE + a perceptual distance) on random generators; prints seconds per step.

    python benchmarks/bench_invert.py [--sizes 64,256] [--steps 10] [--device cpu] [--lpips]

``--lpips`` adds LPIPS (VGG) with random weights, the cost of the real-photo path without its downloads.
"""

from __future__ import annotations

import argparse
import time

import torch

from nada.generator.networks import Generator
from nada.photos.invert import InvertConfig, ReconstructionLosses, invert


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lpips", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    losses = ReconstructionLosses()
    if args.lpips:
        from nada.photos.perceptual import LPIPS

        losses = ReconstructionLosses(perceptual=LPIPS("vgg").to(device), perceptual_name="LPIPS (vgg, random)")
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"perceptual: {losses.perceptual_name or 'none'}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(0)
        G = Generator(size, style_dim=512, n_mlp=8).to(device).eval()
        G.compute_mean_latent(1024)
        target = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
        config = InvertConfig(steps=2, lambda_id=0.0, lambda_lpips=0.5 if args.lpips else 0.0)
        invert(G, target, config, losses, progress=False)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        invert(
            G,
            target,
            InvertConfig(steps=args.steps, lambda_id=0.0, lambda_lpips=config.lambda_lpips),
            losses,
            progress=False,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        print(f"size {size:5d}: {dt * 1000:8.1f} ms/step  ({args.steps} steps)")


if __name__ == "__main__":
    main()
