"""Sharpen the toy generator's attribute borders by distilling its mapping network (the last stage of the toy
generator).

Each discrete attribute of a toy face is a quantile bin of one coordinate of z (`generator_train.face_latent`).
A smooth generator cannot switch from one value to the next at a point: around every border it draws
in-between faces (a jaw between oval and square, a half-smile), which no reader, person or evaluator,
can call: the mapping network of stage 3 changes w linearly across a border, while the same generator
draws faces that read right when given latents moved away from every border (the numbers are in
src/nada/toy/README.md, "Generator").

So this stage trains the mapping network alone to do that move: w_new(z) = w_old(snap(z)), where
`snap_latent` clamps each attribute coordinate to its own bin shrunk by `margin` on both sides (its
value never changes) and keeps the direction of the rest of z. The synthesis network is untouched and
the faces stay the same faces; only the in-between ones commit to a side. A squared error on w, a
high learning rate (the mapping's equalised learning rate of 0.01 makes its weights slow to grow,
and a steep step needs large ones), a cosine decay; the mean latent is recomputed. The evaluator is
never used.

    python -m nada.toy.sharpen --base runs/toy_gen_rn/generator.pt --out src/nada/assets/toy/generator.pt
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from nada.errors import NadaError
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, field_helps, option
from nada.generator.checkpoints import load_generator, read_metadata, save_checkpoint
from nada.toy import render as R
from nada.toy.generator_train import (
    EVAL_SEED,
    MEAN_LATENT_SAMPLES,
    MEAN_LATENT_SEED,
    evaluate,
    render_targets,
)  # as stages 1-3


@dataclass(frozen=True)
class SharpenConfig:
    """Settings of the distillation (all of them recorded in the exported checkpoint)."""

    base: str = option("toy", "generator to sharpen (checkpoint path or registered name)")
    # how far from its bin's borders `snap_latent` puts each attribute coordinate
    margin: float = option(0.15, "distance (probability) from the borders of each attribute's bin")
    steps: int = option(40_000, "distillation steps")
    batch_size: int = option(1024, "latents per step")
    # Adam on the equalised (lr_mul 0.01) weights: an effective step of about 0.02 per weight
    lr: float = option(15.0, "Adam learning rate of the mapping's raw weights")
    seed: int = option(0, "seed of the training latents")


def snap_latent(z: torch.Tensor, margin: float) -> torch.Tensor:
    """Pixel-normalised latents [N, D] whose attribute coordinates sit at least `margin` (probability) inside their
    bins.

    z [N, D] as the generator takes it. Coordinate k < len(render.ATTRIBUTES) of u = z / rms(z) holds
    attribute k in n equal-probability bins; its probability p = Phi(u_k) is clamped to
    [b / n + m, (b + 1) / n - m] of its own bin b, m = min(margin, 1 / (2n)) (a bin narrower than
    2 margin sends it to its centre), so the attribute keeps its value. The other coordinates are
    rescaled together so that the result has rms 1 again (the mapping's pixel norm then leaves it
    as it is).
    """

    n_attr = len(R.ATTRIBUTES)
    assert z.ndim == 2 and z.shape[1] > n_attr, f"z must be [N, > {n_attr}], got {tuple(z.shape)}"
    if not 0 <= margin <= 0.5:
        raise NadaError(f"margin {margin} is not a probability distance inside a bin: use 0 <= margin <= 0.5")
    sizes = [len(v) for v in R.ATTRIBUTES.values()]
    u = z.double() * torch.rsqrt(z.double().pow(2).mean(dim=1, keepdim=True))
    out = u.clone()
    for k, n in enumerate(sizes):
        p = torch.special.ndtr(u[:, k])
        b, m = (p * n).floor().clamp(max=n - 1), min(margin, 0.5 / n)
        out[:, k] = torch.special.ndtri(torch.minimum(torch.maximum(p, b / n + m), (b + 1) / n - m))
    d = z.shape[1]
    room = d - out[:, :n_attr].pow(2).sum(dim=1, keepdim=True)  # what the other coordinates may add to the squared norm
    out[:, n_attr:] = u[:, n_attr:] * torch.sqrt(room / u[:, n_attr:].pow(2).sum(dim=1, keepdim=True))
    return out.to(z.dtype)


def distill_mapping(
    G: torch.nn.Module, cfg: SharpenConfig, progress: bool = True, log_every: int = 2000
) -> list[dict[str, float]]:
    """Train G's mapping network in place towards its own copy applied to snapped latents; returns the logged errors."""

    teacher = copy.deepcopy(G.style).requires_grad_(False)
    G.requires_grad_(False)
    G.style.requires_grad_(True)
    opt = torch.optim.Adam(G.style.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(cfg.seed)
    z_eval = torch.randn(4096, G.style_dim, generator=torch.Generator().manual_seed(EVAL_SEED))
    with torch.no_grad():
        w_eval = teacher(snap_latent(z_eval, cfg.margin))
    history = []
    for step in tqdm(range(cfg.steps), desc="sharpen mapping", disable=not progress, dynamic_ncols=True):
        for group in opt.param_groups:  # cosine from lr down to 5 % of it
            group["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        z = torch.randn(cfg.batch_size, G.style_dim, generator=rng)
        with torch.no_grad():
            target = teacher(snap_latent(z, cfg.margin))
        loss = (G.style(z) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                history.append(
                    {"step": step + 1, "loss": loss.item(), "eval_mse": (G.style(z_eval) - w_eval).pow(2).mean().item()}
                )
    G.requires_grad_(False)
    return history


def sharpen(cfg: SharpenConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Sharpen `cfg.base` and save it as a nada checkpoint at `out` (with its settings, errors and training time)."""

    if Path(out).exists() and not overwrite:
        raise NadaError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    G = load_generator(cfg.base)
    try:
        meta = read_metadata(cfg.base)
    except NadaError:  # a generator without nada metadata: the stage records only its own settings
        meta = {}
    t0 = time.time()
    history = distill_mapping(G, cfg, progress=progress)
    seconds = time.time() - t0
    G.compute_mean_latent(MEAN_LATENT_SAMPLES, seed=MEAN_LATENT_SEED)
    if G.size == 64:  # the pixel error against the renders of its faces, as generator_train logs it
        z_eval = torch.randn(64, G.style_dim, generator=torch.Generator().manual_seed(EVAL_SEED))
        meta["eval_l1"] = round(evaluate(G, z_eval, render_targets(z_eval, seed=EVAL_SEED)), 5)
    metadata = {
        **meta,
        "method": f"{meta.get('method', 'toy generator')}; mapping network distilled to w(snap(z)) (nada.toy.sharpen)",
        "sharpen_config": asdict(cfg),
        "sharpen_history": history,
        "sharpen_time_s": round(seconds, 1),
        "mean_latent": f"{MEAN_LATENT_SAMPLES} samples, seed {MEAN_LATENT_SEED}",
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": str(torch.__version__),
    }
    return save_checkpoint(out, G, metadata, overwrite=overwrite)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; the SharpenConfig flags, their defaults and help come from SharpenConfig's fields."""
    p = argparse.ArgumentParser(prog="python -m nada.toy.sharpen", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint to write")
    add_dataclass_arguments(p, SharpenConfig, keep_defaults=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: distil, then write the checkpoint; user errors print one line and return 2."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclass_from_args(SharpenConfig, args, list(field_helps(SharpenConfig)))
    try:
        path = sharpen(cfg, args.out, overwrite=args.overwrite)
    except NadaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sharpened generator: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
