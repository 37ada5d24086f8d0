"""Train the toy world's small StyleGAN2 generator on "photo" faces by supervised latent-to-image regression.

Adversarial training of even a small StyleGAN2 needs far more compute than the project's CPU budget
(about 40 minutes on one core). The toy world lets us do better: its renderer is a known,
deterministic map from Gaussian vectors to faces (`params_from_latent`). So the generator is
trained as a regressor: draw z ~ N(0, I), read the face latent u = face_latent(z) off it, render
the target `render(params_from_latent(u), "photo")` and minimise a squared-error loss (full
resolution and two coarser scales) between G(z, noise_mode="const") and the target.
The generator then covers every attribute by construction, and the content of G(z) is known,
which the toy-world metrics rely on. The per-pixel texture noise of the photo style cannot be
predicted from z, so regression averages it out: samples are clean, slightly flat photo faces.
Only the photo style is ever rendered here, and the evaluator network is never used.

A second stage (`--init-from` a trained generator, `--teacher toy-robust`) adds a CLIP's zero-shot
reading of each attribute of G(z) as a cross-entropy against the face's true values: small parts
whose pixels weigh little (a mouth's curve, the jaw line) are then drawn as the label says.

Run `python -m nada.toy.generator_train --out DIR --steps N --seed S` (add `--device cuda --workers 8`
on a GPU machine: rendering the targets then needs the CPU cores). The run is resumable:
DIR/state.pt (atomic, every --ckpt-every steps) holds the weights, the EMA weights and the
optimiser; each step's batch is a function of (seed, step), so rerunning the same command continues
exactly where it stopped, also after `--max-minutes`. DIR/train.log gets the
losses, DIR/samples/ the sample grids (top row: renders, bottom row: generator). At the end the
mean latent is set (4096 samples, seed 0) and the EMA generator is exported with
`nada.generator.checkpoints.save_checkpoint`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nada.dataclass_dict import strict_from_dict
from nada.errors import NadaError
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, field_helps, option
from nada.generator.checkpoints import load_generator, read_metadata, save_checkpoint
from nada.generator.networks import Generator
from nada.guidance.clip import load_clip
from nada.io import atomic_save_image, image_grid, resolve_device
from nada.toy import render as R
from nada.toy import runs
from nada.toy.render import LATENT_DIM

STYLE = "photo"  # the only style the toy generator ever sees
MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED = 4096, 0
EVAL_SEED = 1_000_003  # seed of the held-out latents for the logged error, never used for training
STATE_FILE = "state.pt"
STATE_VERSION = 3  # 3: the layout of nada.toy.runs.save_state, the EMA weights under "G_ema"
LOSSES = ("mse", "l1")
RESUME_FREE = ("steps", "ckpt_every", "sample_every", "eval_size")  # settings a resumed run may change


CHANNELS = ((4, 128), (8, 128), (16, 96), (32, 64), (64, 32))  # the shipped generator's channel table


def parse_channels(text: str) -> tuple[tuple[int, int], ...]:
    """Parse a channel table "4:128,8:128,...,64:32" into ((4, 128), ..., (64, 32)): every resolution 4-64, positive
    counts."""
    try:
        table = tuple((int(r), int(c)) for r, c in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad channel table {text!r}: write RES:COUNT pairs, e.g. 4:128,8:128,16:96,32:64,64:32"
        ) from None
    if [r for r, _ in table] != [4, 8, 16, 32, 64] or any(c < 1 for _, c in table):
        raise argparse.ArgumentTypeError(
            f"bad channel table {text!r}: give a positive count for each of 4, 8, 16, 32 and 64"
        )
    return table


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; a resumed run must have the same values (except `steps`)."""

    steps: int = option(6000, "total optimisation steps")
    seed: int = option(0, "seed of the initialisation and the latents")
    batch_size: int = option(16, "latents per step")
    # high for StyleGAN, but the best for this regression within a CPU budget (toy README)
    lr: float = option(2e-2, "Adam learning rate")
    # Effective learning-rate factor of the mapping network relative to synthesis. The network keeps
    # rosinality's lr_mlp=0.01 parameterisation; the optimiser group rescales so the factor applies.
    mapping_lr: float = 3.0
    style_dim: int = 64
    n_mlp: int = 4
    channels: tuple[tuple[int, int], ...] = option(
        CHANNELS,
        "feature maps per resolution, e.g. 4:128,8:128,16:128,32:96,64:64",
        type=parse_channels,
        metavar="RES:C,...",
        shown=",".join(f"{r}:{c}" for r, c in CHANNELS),
    )
    ema_half_life: float = 50.0  # in steps
    # Squared error, not L1: its gradient fades on pixels that are already right (background, texture
    # noise), so the optimiser's step goes to what is still wrong: eyes, mouth, glasses.
    loss: str = option("mse", "pixel error of the regression", choices=LOSSES)
    multiscale_weight: float = 1.0
    gradient_weight: float = option(0.0, "weight of the error on image differences (edges)")
    # Extra weight of the pixels of eyes, brows, mouth and glasses (render.detail_mask): they are a small
    # share of the image, so a plain pixel loss barely notices them drawn half-open and half-there.
    detail_weight: float = option(10.0, "extra loss weight of eye, brow, mouth and glasses pixels")
    # Extra weight of the face outline (render.outline_mask); face shape is learnt through LATENT_ORDER
    # instead, so it stays off (toy README, "Generator").
    outline_weight: float = option(0.0, "extra loss weight of the face outline pixels")
    # A fine-tuning stage: start from this generator's weights (a path or registered name) instead of a
    # seeded random initialisation. The channel table and mapping settings must match it.
    init_from: str = option(
        "", "start from this generator (path or name, e.g. toy) instead of random weights", metavar="GENERATOR"
    )
    # CLIP (load_clip name) whose zero-shot reading of each attribute of G(z) joins the loss as a cross-entropy
    # against the face's true values, times `teacher_weight`. Pixel errors on a thin mouth stroke are
    # tiny, so the regression leaves mouths half-smiling; the teacher asks for the mouth that the face's
    # label names. The evaluator is a different network and never used.
    teacher: str = option(
        "", "CLIP (e.g. toy-robust) whose zero-shot attribute reading of G(z) joins the loss", metavar="CLIP"
    )
    teacher_weight: float = option(0.1, "weight of the teacher's cross-entropy")
    # Share of each batch's latents with one attribute's coordinate moved to within `border_width` (in
    # probability, along z) of a border between two of its values, where a smooth generator draws
    # in-between faces. It did not help (toy README); `nada.toy.sharpen` is the stage that removes them.
    border_share: float = option(0.0, "share of latents moved next to a border between two values of one attribute")
    border_width: float = option(0.05, "how close, in probability along z, those latents lie to the border")
    # after it the learning rate follows a cosine down to 5 % of its peak
    decay_start: float = option(0.5, "fraction of --steps after which the learning rate decays")
    ckpt_every: int = option(50, "steps between state checkpoints")
    sample_every: int = option(500, "steps between sample grids and logged errors")
    eval_size: int = 64  # held-out latents behind the logged error (the first 8 also make the sample grids)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (channels as [[res, count], ...]) for checkpoints and metadata."""
        d = asdict(self)
        d["channels"] = [list(rc) for rc in self.channels]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple((int(r), int(c)) for r, c in d["channels"])
        return strict_from_dict(cls, d, "toy generator training settings", "the run comes from another version of nada")


# ---------------------------------------------------------------- the supervised target


# Order of each discrete attribute's values along its latent coordinate, low to high, where it differs from
# render.ATTRIBUTES. The renderer's own order for face shape (round, oval, square) makes the face's width
# go wide-narrow-wide along the coordinate, which a smooth map from z follows only with a sharp up-and-down
# bump; the regression never found one, its mapping network learnt to ignore the coordinate (the same
# sensitivity of w to it as to an unused one) and every face got one in-between jaw. In this order width
# grows and height shrinks, a monotone change the regression learns.
LATENT_ORDER: dict[str, tuple[str, ...]] = {"face_shape": ("oval", "square", "round")}


def face_latent(z: torch.Tensor, latent_dim: int) -> np.ndarray:
    """Face latent u [N, latent_dim] (float64, about N(0, 1)) that G(z) is trained to draw, from z [N, style_dim].

    u is the first `latent_dim` coordinates of z after the mapping network's pixel norm
    (z / rms(z)), so it depends only on what the generator sees: the pixel norm discards |z|, and a
    target depending on |z| could not be learnt exactly. The quantile bins of the attributes in
    LATENT_ORDER are permuted (a measure-preserving map, so u stays standard normal) so that
    `params_from_latent(u)` meets their values in that order along z.
    """

    assert z.ndim == 2 and z.shape[1] >= latent_dim, f"z must be [N, >= {latent_dim}], got {tuple(z.shape)}"
    zn = z.double() * torch.rsqrt(z.double().pow(2).mean(dim=1, keepdim=True) + 1e-8)
    u = zn[:, :latent_dim].cpu()
    for name, order in LATENT_ORDER.items():
        k, values = list(R.ATTRIBUTES).index(name), R.ATTRIBUTES[name]
        if k >= latent_dim:
            continue
        n = len(values)
        p = torch.special.ndtr(u[:, k]) * n
        bin_ = p.floor().clamp(max=n - 1)
        to_bin = torch.tensor([float(values.index(v)) for v in order], dtype=torch.float64)[bin_.long()]
        u[:, k] = torch.special.ndtri(((to_bin + p - bin_) / n).clamp(1e-12, 1 - 1e-12))
    return u.numpy()


def face_params(z: torch.Tensor) -> "FaceParams":  # noqa: F821
    """The faces (render.FaceParams, N of them) that latents z [N, style_dim] stand for."""

    return R.params_from_latent(face_latent(z.cpu(), R.LATENT_DIM))


def render_targets(z: torch.Tensor, seed: int) -> torch.Tensor:
    """Photo renders [N, 3, 64, 64] in [-1, 1] of the faces that latents z [N, style_dim] stand for."""

    return R.render_tensor(face_params(z), STYLE, seed=seed)


def pixel_weights(z: torch.Tensor, detail_weight: float, outline_weight: float = 0.0) -> torch.Tensor:
    """Loss weight per pixel [N, 1, 64, 64] for the faces of z [N, style_dim]: 1, plus `detail_weight` on eyes,
    brows, mouth and glasses, plus `outline_weight` on the face outline."""

    params = face_params(z)
    weight = 1.0 + detail_weight * torch.from_numpy(R.detail_mask(params))
    if outline_weight:
        weight = weight + outline_weight * torch.from_numpy(R.outline_mask(params))
    return weight[:, None]


def near_borders(z: torch.Tensor, share: float, width: float, gen: torch.Generator) -> torch.Tensor:
    """A copy of latents z [B, style_dim] in which a random share has one discrete attribute's coordinate
    moved so that its quantile (after the pixel norm, as ``face_latent`` reads it) lies within ``width``
    of a border between two values of that attribute; the other latents are returned unchanged."""

    b, dim = z.shape
    n_values = [len(values) for values in R.ATTRIBUTES.values()]
    pick = torch.rand(b, generator=gen) < share
    key = torch.randint(len(R.ATTRIBUTES), (b,), generator=gen)
    where = torch.rand(b, generator=gen)
    offset = (torch.rand(b, generator=gen) * 2 - 1) * width
    out = z.clone().double()
    for i in torch.nonzero(pick).flatten().tolist():
        k = int(key[i])
        n = n_values[k]
        border = 1 + min(int(where[i] * (n - 1)), n - 2)  # interior borders lie at quantiles 1/n ... (n-1)/n
        t = torch.special.ndtri(torch.tensor(border / n + float(offset[i]), dtype=torch.float64))
        rest = out[i].pow(2).sum() - out[i, k].pow(2)
        # z_k / rms(z) = t  <=>  z_k = t * sqrt(rest / (dim - t^2)), with rest the other coordinates' squares
        out[i, k] = t * torch.sqrt(rest / (dim - t * t))
    return out.to(z.dtype)


def batch_for_step(cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents z [B, style_dim], their photo renders [B, 3, 64, 64] in [-1, 1] and pixel weights [B, 1, 64, 64] for
    `step`.

    A pure function of (cfg.seed, step), so data-loading workers can make any step's batch, a resumed
    run sees the batches an uninterrupted one would, and the result does not depend on the device.
    """
    seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(cfg.batch_size, cfg.style_dim, generator=gen)
    if cfg.border_share > 0:  # drawn only when enabled, so runs without it keep their batches
        z = near_borders(z, cfg.border_share, cfg.border_width, gen)
    # A fresh texture seed per step: the photo texture is noise the regression should average out.
    return (
        z,
        render_targets(z, seed=cfg.seed * 1_000_000 + step),
        pixel_weights(z, cfg.detail_weight, cfg.outline_weight),
    )


class StepBatches(torch.utils.data.Dataset):
    """The batches of steps first, first + 1, ..., last - 1, for a DataLoader with worker processes."""

    def __init__(self, cfg: TrainConfig, first: int, last: int) -> None:
        self.cfg, self.first, self.last = cfg, first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return batch_for_step(self.cfg, self.first + i)


def _one_thread_worker(_: int) -> None:
    # Rendering is numpy; torch threads in every worker would only compete for the same cores.
    torch.set_num_threads(1)


def step_batches(
    cfg: TrainConfig, first: int, last: int, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """Iterate the batches of steps [first, last) in order, rendered by `workers` processes (0: in this process)."""
    return torch.utils.data.DataLoader(
        StepBatches(cfg, first, last),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread_worker if workers else None,
        pin_memory=pin_memory,
    )


# ---------------------------------------------------------------- loss and schedule


def regression_loss(
    img: torch.Tensor,
    target: torch.Tensor,
    kind: str = "mse",
    multiscale_weight: float = 1.0,
    gradient_weight: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel error (`kind` "mse" or "l1") at full, 1/2 and 1/4 resolution plus the error of horizontal/vertical
    differences.

    img, target [N, 3, H, W]; `weight` [N, 1, H, W] (default 1) weighs each pixel's error, pooled along at coarse
    scales.
    """
    assert img.shape == target.shape, f"image {tuple(img.shape)} and target {tuple(target.shape)} differ"
    if kind not in LOSSES:
        raise NadaError(f"unknown regression loss {kind!r}: use one of {', '.join(LOSSES)}")

    def err(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        e = (a - b).square() if kind == "mse" else (a - b).abs()
        return e.mean() if w is None else (w * e).mean()

    loss = err(img, target, weight)
    # Coarse scales weigh the face layout (position, shape, hair mass) more than pixel detail.
    a, b, w = img, target, weight
    for _ in range(2):
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        w = None if w is None else F.avg_pool2d(w, 2)
        loss = loss + 0.5 * multiscale_weight * err(a, b, w)
    if gradient_weight:
        # Differences weigh edges (eyes, mouth, glasses frames) more than flat areas.
        dx = err(img[..., :, 1:] - img[..., :, :-1], target[..., :, 1:] - target[..., :, :-1], None)
        dy = err(img[..., 1:, :] - img[..., :-1, :], target[..., 1:, :] - target[..., :-1, :], None)
        loss = loss + gradient_weight * (dx + dy)
    return loss


def face_labels(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """True attribute indices (int64 [N] per render.ATTRIBUTES key) of the faces that latents z [N, style_dim] stand
    for."""
    labels = face_params(z).labels()
    return {k: torch.from_numpy(v).to(z.device) for k, v in labels.items()}


@torch.no_grad()
def attribute_text_features(clip: "torch.nn.Module") -> dict[str, torch.Tensor]:
    """Unit text features [V, D] of the class prompts (render.ATTRIBUTE_PROMPTS) of every attribute, for zero-shot
    reading."""

    return {k: F.normalize(clip.encode_text(list(prompts)), dim=-1) for k, prompts in R.ATTRIBUTE_PROMPTS.items()}


def teacher_logits(
    clip: "torch.nn.Module", text: dict[str, torch.Tensor], img: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Zero-shot logits [N, V] per attribute of images [N, 3, 64, 64] in [-1, 1], scaled by the CLIP's logit scale."""
    feats = F.normalize(clip.encode_image(img), dim=-1)
    return {k: clip.logit_scale * feats @ t.T for k, t in text.items()}


def teacher_loss(
    clip: "torch.nn.Module", text: dict[str, torch.Tensor], img: torch.Tensor, labels: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Sum over attributes of the cross-entropy between the CLIP's zero-shot reading of img and the true labels."""
    logits = teacher_logits(clip, text, img)
    return sum(F.cross_entropy(logits[k], labels[k]) for k in text)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at `step`: 1, then a cosine from `decay_start * steps` down to 0.05 at `steps`."""
    start = cfg.decay_start * cfg.steps
    if step < start:
        return 1.0
    t = min(1.0, (step - start) / max(1.0, cfg.steps - start))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------- model, optimiser, state


def build_generator(cfg: TrainConfig) -> "torch.nn.Module":
    """The project's Generator at 64x64 with the run's small channel table (random init seeded by cfg.seed)."""

    # Seed a forked RNG so the initialisation is reproducible without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Generator(64, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp, channels=dict(cfg.channels))


def initial_weights(G: torch.nn.Module, source: str) -> None:
    """Copy the weights of the generator `source` (path or registered name) into G; their architectures must match."""

    base = load_generator(source)
    if base.config != G.config:
        raise NadaError(
            f"--init-from {source} is a {base.config} generator, the run builds {G.config}: give the run its --channels"
        )
    G.load_state_dict(base.state_dict())


def build_optimizer(G: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with two groups: synthesis at cfg.lr, mapping ("style.*") scaled so its effective rate is cfg.mapping_lr *
    cfg.lr."""
    mapping = [p for n, p in G.named_parameters() if n.startswith("style.")]
    synthesis = [p for n, p in G.named_parameters() if not n.startswith("style.")]
    # Equalised lr: a mapping weight w is used as w * lr_mlp, so Adam steps of size lr/lr_mlp move it like lr.
    lr_mlp = G.config.lr_mlp
    groups = [
        {"params": synthesis, "lr": cfg.lr, "base_lr": cfg.lr},
        {"params": mapping, "lr": cfg.lr * cfg.mapping_lr / lr_mlp, "base_lr": cfg.lr * cfg.mapping_lr / lr_mlp},
    ]
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-8)


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G, parameters only (buffers are identical and fixed)."""
    # One multi-tensor kernel instead of one per parameter: on a GPU, per-parameter launches cost more than the math.
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)


# ---------------------------------------------------------------- monitoring


@torch.no_grad()
def evaluate(G: torch.nn.Module, z: torch.Tensor, target: torch.Tensor, batch_size: int = 32) -> float:
    """Mean absolute pixel error (images in [-1, 1]) between G(z) with const noise and the targets [N, 3, 64, 64]."""
    err = 0.0
    for zc, tc in zip(z.split(batch_size), target.split(batch_size)):
        err += (G(zc, noise_mode="const") - tc).abs().mean().item() * zc.shape[0]
    return err / z.shape[0]


@torch.no_grad()
def teacher_accuracy(
    clip: "torch.nn.Module", text: dict[str, torch.Tensor], G: torch.nn.Module, z: torch.Tensor
) -> float:
    """Share of (latent, attribute) pairs of G(z) (const noise) whose zero-shot reading by the teacher is the true
    value."""
    logits = teacher_logits(clip, text, G(z, noise_mode="const"))
    labels = face_labels(z)
    return torch.stack([(logits[k].argmax(1) == labels[k]).float().mean() for k in text]).mean().item()


@torch.no_grad()
def save_samples(path: Path, G: torch.nn.Module, z: torch.Tensor, target: torch.Tensor) -> None:
    """Write a two-row grid PNG: renders of the faces of z on top, G(z) below; z [8, style_dim]."""

    atomic_save_image(image_grid([target, G(z, noise_mode="const")]), path)


# ---------------------------------------------------------------- training loop


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    workers: int = 0,
) -> Path:
    """Train (or resume) in `out_dir` up to cfg.steps; returns the state file.

    A call stops early after `stop_after` steps, or after the step during which it passed
    `time_limit_s` seconds (the state is saved first); calling again continues. `workers` processes
    render the batches.
    """

    device = torch.device(device)
    out_dir = Path(out_dir)
    (runs.make_run_dir(out_dir) / "samples").mkdir(exist_ok=True)
    log = logging.getLogger(__name__)
    runs.setup_logging(log, out_dir / "train.log", echo=False)  # the progress bar owns the terminal
    state_path = out_dir / STATE_FILE

    G = build_generator(cfg).to(device)
    G_ema = build_generator(cfg).to(device).eval()
    G_ema.load_state_dict(G.state_dict())
    G_ema.requires_grad_(False)
    opt = build_optimizer(G, cfg)
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = runs.load_state(state_path, STATE_VERSION)
        runs.check_resume(TrainConfig.from_dict(state["config"]).to_dict(), cfg.to_dict(), RESUME_FREE, state_path)
        G.load_state_dict(state["model"])
        G_ema.load_state_dict(state["G_ema"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        log.info(f"resumed from {state_path} at step {step} ({elapsed:.0f} s trained so far)")
    else:
        if cfg.init_from:
            initial_weights(G, cfg.init_from)
            G_ema.load_state_dict(G.state_dict())
        log.info(f"new run: {cfg.to_dict()} on {device}")
    teacher, text = None, None
    if cfg.teacher:
        teacher = load_clip(cfg.teacher, device)
        text = attribute_text_features(teacher)

    # Fixed held-out latents (own seed) for the logged error and the sample grids.
    z_eval = torch.randn(cfg.eval_size, cfg.style_dim, generator=torch.Generator().manual_seed(EVAL_SEED))
    t_eval = render_targets(z_eval, seed=EVAL_SEED)
    z_eval, t_eval = z_eval.to(device), t_eval.to(device)
    beta = 0.5 ** (1.0 / cfg.ema_half_life)

    last = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="toy generator", disable=not progress, dynamic_ncols=True)
    t_call, t0, running = time.time(), time.time() - elapsed, None
    for z, target, weight in step_batches(cfg, step, last, workers, pin_memory=device.type == "cuda"):
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, cfg)
        z = z.to(device, non_blocking=True)
        img = G(z, noise_mode="const")
        loss = regression_loss(
            img,
            target.to(device, non_blocking=True),
            cfg.loss,
            cfg.multiscale_weight,
            cfg.gradient_weight,
            weight.to(device, non_blocking=True),
        )
        if teacher is not None:
            loss = loss + cfg.teacher_weight * teacher_loss(teacher, text, img, face_labels(z))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(G_ema, G, beta)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % cfg.sample_every == 0 or step == cfg.steps:
            err = evaluate(G_ema, z_eval, t_eval)
            save_samples(out_dir / "samples" / f"step{step:06d}.png", G_ema, z_eval[:8], t_eval[:8])
            read = "" if teacher is None else f" teacher_acc {teacher_accuracy(teacher, text, G_ema, z_eval):.3f}"
            log.info(
                f"step {step} loss {running:.4f} eval_l1 {err:.4f}{read} lr_factor {lr_factor(step, cfg):.3f} elapsed "
                f"{time.time() - t0:.0f} s"
            )
        out_of_time = time_limit_s is not None and time.time() - t_call > time_limit_s
        if step % cfg.ckpt_every == 0 or step == last or out_of_time:
            extra = {"G_ema": G_ema.state_dict()}
            runs.save_state(state_path, STATE_VERSION, cfg.to_dict(), step, time.time() - t0, G, opt, extra)
        if out_of_time:
            log.info(f"time limit of {time_limit_s:.0f} s reached at step {step}: rerun the command to continue")
            break
    bar.close()
    return state_path


def is_finished(state_path: Path) -> bool:
    """Whether the run whose state is at `state_path` has done all its steps."""
    state = runs.load_state(state_path, STATE_VERSION)
    return int(state["step"]) >= int(state["config"]["steps"])


def _train_time_of(source: str) -> float | None:
    """The recorded training time of the generator a fine-tuning stage started from, its own earlier
    stages included (None when it records none)."""

    try:
        meta = read_metadata(source)
    except NadaError:
        return None
    if not isinstance(meta, dict) or meta.get("train_time_s") is None:
        return None
    return round(float(meta["train_time_s"]) + float(meta.get("init_train_time_s") or 0.0), 1)


def export_generator(state_path: Path, export_path: str | Path, overwrite: bool = False) -> Path:
    """Load the EMA generator from a finished state, set its mean latent and save it as a nada checkpoint."""

    state = runs.load_state(state_path, STATE_VERSION)
    cfg = TrainConfig.from_dict(state["config"])
    G = build_generator(cfg)
    G.load_state_dict(state["G_ema"])
    G.eval().requires_grad_(False)
    G.compute_mean_latent(MEAN_LATENT_SAMPLES, seed=MEAN_LATENT_SEED)
    z_eval = torch.randn(cfg.eval_size, cfg.style_dim, generator=torch.Generator().manual_seed(EVAL_SEED))
    err = evaluate(G, z_eval, render_targets(z_eval, seed=EVAL_SEED))

    metadata = {
        "base": "toy",
        "style": STYLE,
        "method": (
            f"supervised regression z -> render(params_from_latent(face_latent(z)), 'photo'): {cfg.loss} at 3 scales"
            + (f" + {cfg.loss} of image differences" if cfg.gradient_weight else "")
            + (f", eye/brow/mouth/glasses pixels weighted {1 + cfg.detail_weight:g}x" if cfg.detail_weight else "")
            + (f", face outline +{cfg.outline_weight:g}" if cfg.outline_weight else "")
            + (
                f", {cfg.teacher_weight:g} x zero-shot attribute cross-entropy of CLIP {cfg.teacher!r}"
                if cfg.teacher
                else ""
            )
            + (
                f", {cfg.border_share:g} of the latents within {cfg.border_width:g} of a border between attribute "
                "values"
                if cfg.border_share
                else ""
            )
            + (f", fine-tuned from {cfg.init_from}" if cfg.init_from else "")
            + ", Adam, EMA weights exported; no adversarial loss, evaluator never used"
        ),
        "face_latent": (
            f"u = (z / rms(z))[:, :{LATENT_DIM}] (pixel-normalised z, first LATENT_DIM coordinates), quantile bins "
            "reordered so that"
            + "; ".join(f" {name} runs {', '.join(order)} along z" for name, order in LATENT_ORDER.items())
        ),
        "latent_dim": LATENT_DIM,
        "steps": int(state["step"]),
        "seed": cfg.seed,
        "train_config": cfg.to_dict(),
        "train_time_s": round(float(state["elapsed_s"]), 1),
        **({"init_train_time_s": _train_time_of(cfg.init_from)} if cfg.init_from else {}),
        "eval_l1": round(err, 5),
        "mean_latent": f"{MEAN_LATENT_SAMPLES} samples, seed {MEAN_LATENT_SEED}",
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": str(torch.__version__),  # TorchVersion is a str subclass that weights_only loading refuses
    }
    return save_checkpoint(export_path, G, metadata, overwrite=overwrite)


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; the TrainConfig flags, their defaults and help come from TrainConfig's fields."""
    p = argparse.ArgumentParser(
        prog="python -m nada.toy.generator_train",
        description="Train the toy StyleGAN2 generator on photo-style faces (resumable).",
    )
    p.add_argument("--out", required=True, help="run folder: state.pt, train.log, samples/ (rerun to resume)")
    add_dataclass_arguments(p, TrainConfig, keep_defaults=True)
    p.add_argument("--export", default=None, help="nada checkpoint written at the end (default: OUT/generator.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --export file")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default: %(default)s, leaving the other cores free)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes rendering the training batches (default: %(default)s, render in the training process)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop (resumably) after this many minutes of this call (default: run to the end)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: train or resume, then export; user errors print one line and return 2."""

    args = parse_args(argv)
    try:
        if args.steps < 1 or args.batch_size < 1 or args.workers < 0:
            raise NadaError(
                f"--steps ({args.steps}) and --batch-size ({args.batch_size}) must be positive, --workers "
                f"({args.workers}) at least 0"
            )
        if args.teacher_weight < 0:
            raise NadaError(f"--teacher-weight must be 0 or more (got {args.teacher_weight})")
        if not (0 <= args.border_share <= 1 and 0 < args.border_width <= 0.15):
            raise NadaError(
                f"--border-share must lie in [0, 1] and --border-width in (0, 0.15] (got {args.border_share}, "
                f"{args.border_width})"
            )
        export = Path(args.export) if args.export else Path(args.out) / "generator.pt"
        if export.exists() and not args.force:
            raise NadaError(f"{export} exists: pass --force to replace it or choose another --export path")
        torch.set_num_threads(args.threads)
        cfg = dataclass_from_args(TrainConfig, args, list(field_helps(TrainConfig)))
        limit = None if args.max_minutes is None else 60.0 * args.max_minutes
        state_path = train(
            cfg,
            args.out,
            device=resolve_device(args.device),
            progress=not args.no_progress,
            time_limit_s=limit,
            workers=args.workers,
        )
        if not is_finished(state_path):
            print(
                f"stopped after --max-minutes {args.max_minutes:g}: rerun the same command to continue from "
                f"{state_path}"
            )
            return 0
        path = export_generator(state_path, export, overwrite=args.force)
        print(f"wrote {path}")
        return 0
    except NadaError as e:
        print(f"generator_train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
