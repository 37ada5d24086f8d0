"""Train the toy world's evaluator CNN (``nada.toy.evaluator``) on labelled renders of every style.

Each step renders fresh faces (never a fixed data set), in uniformly random styles, and augments
them so that the evaluator also judges generator outputs fairly: blur (generators are softer than
the renderer), noise, small shifts, brightness/contrast/saturation changes. The loss is the sum
of one cross-entropy per key (style and every attribute).

Run ``python -m nada.toy.evaluator_train --out DIR --steps N --seed S [--export src/nada/assets/toy/evaluator.pt]``.
The run is resumable: DIR/state.pt (atomic, every --ckpt-every steps) holds the weights, the
optimiser and the RNG state; every step's data is a function of (seed, step), so rerunning the same
command continues where it stopped. At the end it measures the accuracy on fresh renders (seeds
never used in training), writes DIR/evaluator.pt and copies it to --export when given.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
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

from nada.errors import NadaError
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, field_helps, option
from nada.generator.checkpoints import load_generator
from nada.toy import filters as toy_filters
from nada.toy import render as R
from nada.toy import runs
from nada.toy.evaluator import WEIGHTS_FILE, Evaluator, EvaluatorConfig, accuracy, fresh_renders, save_evaluator
from nada.toy.generator_train import face_params
from nada.weights.safe_load import torch_load

EVAL_SEED = 123_456_789  # held-out faces and textures; training draws from SeedSequence([seed, step]) instead
STATE_FILE = "state.pt"
STATE_VERSION = 1
RESUME_FREE = ("steps", "ckpt_every", "eval_every", "threads", "eval_faces")

log = logging.getLogger("nada.toy.evaluator_train")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; a resumed run must match except for RESUME_FREE fields."""

    steps: int = option(1500, "total training steps")
    seed: int = option(0, "seed of the initialisation and of all data")
    batch: int = option(96, "images per step")
    lr: float = option(2e-3, "peak learning rate")
    warmup: int = 50
    weight_decay: float = 1e-4
    ckpt_every: int = option(100, "steps between state saves")
    eval_every: int = option(250, "steps between accuracy checks")
    threads: int = option(1, "torch CPU threads")
    eval_faces: int = 1200  # fresh renders for the final accuracy
    negatives: float = option(  # their style label is "none"
        0.0, "share of each batch that is a hard negative: filtered photos, style blends"
    )
    generator_share: float = option(0.0, "share of each batch drawn by --generator, labelled photo")
    # its plain outputs are labelled photo, its filtered ones none
    generator: str = option("toy", "generator for those images")
    # a smaller style head is copied into the first rows
    init_from: str = option("", "start from these evaluator weights")
    # adaptations that the paired fidelity shows failed: their outputs are changed photos, not the target style
    negatives_from: str = option("", "comma-separated adapted generator checkpoints whose outputs are labelled none")
    negatives_from_share: float = option(0.0, "share of each batch drawn by --negatives-from")
    # supervised oracles: a style as a generator draws it, softer than the renderer's
    drawn_from: str = option("", "comma-separated STYLE=CHECKPOINT of generators fine-tuned on true STYLE renders")
    drawn_share: float = option(0.0, "share of each batch drawn by --drawn-from, labelled with their style")

    def __post_init__(self) -> None:
        if self.negatives_from_share > 0 and not self.negatives_from.strip(" ,"):
            raise NadaError("--negatives-from-share needs generators to draw from: give --negatives-from G1,G2,...")
        if self.drawn_share > 0 and not drawn_pairs(self.drawn_from):
            raise NadaError("--drawn-share needs generators to draw from: give --drawn-from sketch=G1,watercolor=G2")
        if self.negatives + self.generator_share + self.negatives_from_share + self.drawn_share >= 1:
            raise NadaError(
                "--negatives, --generator-share, --negatives-from-share and --drawn-share leave no true renders "
                "in a batch: keep their sum below 1"
            )


IGNORE = -100  # attribute label of a hard negative: its attributes are not trained


def make_batch(
    cfg: TrainConfig, step: int, G: torch.nn.Module | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Augmented images [B,3,64,64] in [-1,1] and their labels, a pure function of (cfg.seed, step).

    Positives are true renders in random styles and (with ``G``) the generator's photos; hard negatives
    (style "none", attributes ignored) are filtered photos and generator photos and blends of two styles.
    """
    rng = np.random.default_rng([cfg.seed, step])
    n_neg = int(round(cfg.batch * cfg.negatives))
    n_gen = int(round(cfg.batch * cfg.generator_share)) if G is not None else 0
    n_adapted = int(round(cfg.batch * cfg.negatives_from_share))
    n_drawn = int(round(cfg.batch * cfg.drawn_share))
    n_pos = cfg.batch - n_neg - n_gen - n_adapted - n_drawn
    params = R.sample_params(n_pos, seed=int(rng.integers(2**62)))
    style_idx = rng.integers(len(R.STYLES), size=n_pos)
    images = [R.to_tensor(R.render_mixed(params, [R.STYLES[i] for i in style_idx], seed=int(rng.integers(2**62))))]
    labels = [{"style": torch.from_numpy(style_idx), **{k: torch.from_numpy(v) for k, v in params.labels().items()}}]
    if n_gen:
        gen_images, gen_params = generator_photos(G, n_gen, rng)
        images.append(gen_images)
        attrs = {k: torch.from_numpy(v) for k, v in gen_params.labels().items()}
        labels.append({"style": torch.zeros(n_gen, dtype=torch.long), **attrs})
    if n_neg:
        images.append(hard_negatives(n_neg, rng, G))
        labels.append({k: torch.full((n_neg,), REJECT_INDEX if k == "style" else IGNORE) for k in labels[0]})
    if n_adapted:  # drawn after every other image, so runs without them keep their data
        images.append(adapted_outputs(cfg.negatives_from, n_adapted, rng))
        labels.append({k: torch.full((n_adapted,), REJECT_INDEX if k == "style" else IGNORE) for k in labels[0]})
    if n_drawn:
        drawn, drawn_labels = drawn_styles(cfg.drawn_from, n_drawn, rng)
        images.append(drawn)
        labels.append(drawn_labels)
    merged = {k: torch.cat([lab[k].long() for lab in labels]) for k in labels[0]}
    return augment(torch.cat(images), rng), merged


REJECT_INDEX = len(R.STYLES)  # "none" follows the styles in evaluator.class_names()


@torch.no_grad()
def generator_photos(G: torch.nn.Module, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, "R.FaceParams"]:
    """n generator outputs [n,3,64,64] in [-1,1] for seeded latents, and the faces those latents stand for."""

    z = torch.from_numpy(rng.standard_normal((n, G.style_dim)).astype(np.float32))
    return G(z, noise_mode="const").clamp(-1, 1), face_params(z)


def drawn_pairs(spec: str) -> list[tuple[str, str]]:
    """(style, checkpoint) pairs of a ``--drawn-from`` value such as "sketch=a.pt,pixel art=b.pt"."""
    pairs = []
    for item in (i.strip() for i in spec.split(",") if i.strip()):
        style, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not path or style not in R.STYLES:
            styles = ", ".join(R.STYLES)
            raise NadaError(f"--drawn-from item {item!r} is not STYLE=CHECKPOINT with STYLE one of {styles}")
        pairs.append((style, path))
    return pairs


def adapted_outputs(paths: str, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n images [n,3,64,64] in [-1,1] (as shown: clipped) of the generators ``paths`` for seeded latents."""
    return runs.draw_outputs(paths, n, rng)[0]


def drawn_styles(spec: str, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n images [n,3,64,64] in [-1,1] of the ``--drawn-from`` generators and their labels (their style, the faces
    their latents stand for)."""
    pairs = drawn_pairs(spec)
    images, z, which = runs.draw_outputs(",".join(path for _, path in pairs), n, rng)
    styles = torch.tensor([R.STYLES.index(pairs[int(w)][0]) for w in which])
    return images, {"style": styles, **{k: torch.from_numpy(v) for k, v in face_params(z).labels().items()}}


def hard_negatives(n: int, rng: np.random.Generator, G: torch.nn.Module | None) -> torch.Tensor:
    """n images [n,3,64,64] in [-1,1] in no style: a quarter blends of two styles, the rest filtered photos."""
    n_blend = n // 4
    params = R.sample_params(n, seed=int(rng.integers(2**62)))
    photos = R.render_tensor(params, "photo", seed=int(rng.integers(2**62)))
    if G is not None:  # half the filtered photos are the generator's own
        half = (n - n_blend) // 2
        photos[n_blend : n_blend + half] = generator_photos(G, half, rng)[0]
    out = [
        toy_filters.apply_chain(photos[i : i + 1], toy_filters.random_chain(rng), seed=int(rng.integers(2**31)))
        for i in range(n_blend, n)
    ]
    if n_blend:
        out.insert(0, style_blends(params.subset(slice(0, n_blend)), n_blend, rng))
    return torch.cat(out)


def style_blends(params: "R.FaceParams", n: int, rng: np.random.Generator) -> torch.Tensor:
    """Pixel blends [n,3,64,64] of the same faces in two different styles, 30-70 % of each."""
    first = rng.integers(len(R.STYLES), size=n)
    second = (first + rng.integers(1, len(R.STYLES), size=n)) % len(R.STYLES)
    seed = int(rng.integers(2**62))
    a = R.to_tensor(R.render_mixed(params, [R.STYLES[i] for i in first], seed=seed))
    b = R.to_tensor(R.render_mixed(params, [R.STYLES[i] for i in second], seed=seed + 1))
    t = torch.from_numpy(rng.uniform(0.3, 0.7, n).astype(np.float32)).view(n, 1, 1, 1)
    return (1 - t) * a + t * b


def _gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of [N,3,H,W] with sigma [N] (pixels; 0 leaves the image as it is)."""
    x = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-(x[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # [N, 7]
    n, c, h, w = img.shape
    flat = img.reshape(1, n * c, h, w)
    kx = k.repeat_interleave(c, 0)  # one separable kernel per (image, channel)
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="replicate"), kx.view(n * c, 1, 1, 7), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="replicate"), kx.view(n * c, 1, 7, 1), groups=n * c)
    return flat.view(n, c, h, w)


def augment(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Blur, shift, colour and noise changes of [N,3,64,64] in [-1,1] that keep every label true."""
    n = img.shape[0]

    def per_image(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.astype(np.float32)).view(n, 1, 1, 1)

    sigma = torch.from_numpy(((rng.random(n) < 0.5) * rng.uniform(0.3, 1.4, n)).astype(np.float32))
    img = _gaussian_blur(img, sigma)
    # Small shifts with edge replication (faces already vary in position; this covers generator drift).
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    h, w = img.shape[-2:]
    img = F.pad(img, (2, 2, 2, 2), mode="replicate")[..., 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    # Brightness, contrast and saturation, mild enough to keep hair and skin colours apart.
    grey = img.mean(1, keepdim=True)
    img = grey + (img - grey) * per_image(rng.uniform(0.8, 1.2, n))
    mean = img.mean((1, 2, 3), keepdim=True)
    img = mean + (img - mean) * per_image(rng.uniform(0.85, 1.15, n)) + per_image(rng.uniform(-0.08, 0.08, n))
    noise = per_image((rng.random(n) < 0.5) * rng.uniform(0.0, 0.08, n)) * torch.from_numpy(
        rng.standard_normal(img.shape).astype(np.float32)
    )
    return (img + noise).clamp(-1, 1)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then a cosine down to 2 % of the peak at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def build(seed: int) -> Evaluator:
    """A freshly initialised evaluator (weights from ``seed``, caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Evaluator(EvaluatorConfig())


def train(cfg: TrainConfig, out: Path, export_to: Path | None = None) -> dict[str, Any]:
    """Run (or continue) training in ``out`` with ``cfg.threads`` CPU threads; returns the final accuracies."""
    with runs.torch_threads(cfg.threads):
        return _train(cfg, out, export_to)


def _train(cfg: TrainConfig, out: Path, export_to: Path | None) -> dict[str, Any]:

    runs.make_run_dir(out)
    runs.setup_logging(log, out / "train.log")
    state_path = out / STATE_FILE
    model = build(cfg.seed)
    if cfg.init_from:
        init_from(model, Path(cfg.init_from))
    G = None
    if cfg.negatives > 0 or cfg.generator_share > 0:
        G = load_generator(cfg.generator).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = runs.load_state(state_path, STATE_VERSION)
        runs.check_resume(state["config"], asdict(cfg), RESUME_FREE, state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        log.info("resuming at step %d (%.0f s trained so far)", start, elapsed)
    else:
        log.info("new run: %s, %d parameters", asdict(cfg), sum(p.numel() for p in model.parameters()))
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="toy evaluator", dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        images, labels = make_batch(cfg, step, G)
        logits = model(images)
        terms = {k: F.cross_entropy(logits[k], labels[k], ignore_index=IGNORE) for k in labels}
        loss = torch.stack(list(terms.values())).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if done % 20 == 0:
            log.info(
                "step %d loss %.4f %s", done, loss.item(), " ".join(f"{k} {v.item():.3f}" for k, v in terms.items())
            )
        if done % cfg.eval_every == 0 and done < cfg.steps:
            log.info(
                "step %d accuracy (300 fresh renders): %s", done, _fmt(accuracy(model, *fresh_renders(300, EVAL_SEED)))
            )
            model.train()
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            runs.save_state(state_path, STATE_VERSION, asdict(cfg), done, elapsed + time.time() - t0, model, opt)
    bar.close()
    total_s = elapsed + time.time() - t0
    model.eval()
    acc = accuracy(model, *fresh_renders(cfg.eval_faces, EVAL_SEED))
    metadata = {
        "steps": cfg.steps,
        "seed": cfg.seed,
        "train_seconds": round(total_s, 1),
        "eval_faces": cfg.eval_faces,
        "accuracy_fresh": acc,
        "trained_with": "nada.toy.evaluator_train " + " ".join(f"{k}={v}" for k, v in asdict(cfg).items()),
    }
    weights = save_evaluator(out / WEIGHTS_FILE, model, metadata)
    log.info("training time %.0f s (%.1f min) for %d steps", total_s, total_s / 60, cfg.steps)
    log.info("accuracy on %d fresh renders: %s", cfg.eval_faces, _fmt(acc))
    log.info("wrote %s", weights)
    if export_to is not None:
        export_to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, export_to)
        log.info("copied it to %s", export_to)
    return {"accuracy": acc, "train_seconds": total_s}


def init_from(model: Evaluator, path: Path) -> None:
    """Load evaluator weights from ``path`` into ``model``; a head with fewer classes fills the first rows."""
    payload = torch_load(path, what="--init-from")
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise NadaError(f"--init-from {path} holds no evaluator weights: give a file written by evaluator_train")
    state = payload["state_dict"]
    own = model.state_dict()
    for k, v in state.items():
        if k in own and v.shape != own[k].shape and v.shape[1:] == own[k].shape[1:] and v.shape[0] < own[k].shape[0]:
            grown = own[k].clone() * 0.1  # new classes start near zero logits
            grown[: v.shape[0]] = v
            state[k] = grown
    model.load_state_dict(state)


def _fmt(acc: dict[str, float]) -> str:
    return "  ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; the TrainConfig flags, their defaults and help come from TrainConfig's fields."""
    ap = argparse.ArgumentParser(
        prog="python -m nada.toy.evaluator_train", description="Train the toy world's evaluator CNN (resumable)."
    )
    ap.add_argument("--out", required=True, type=Path, help="run folder: state.pt, train.log, evaluator.pt")
    add_dataclass_arguments(ap, TrainConfig, keep_defaults=True)
    ap.add_argument(
        "--export",
        type=Path,
        default=None,
        help="also copy evaluator.pt to this file, e.g. src/nada/assets/toy/evaluator.pt",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: python -m nada.toy.evaluator_train --out DIR --steps N --seed S [--export FILE]."""
    args = parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args, list(field_helps(TrainConfig)))
    try:
        train(cfg, args.out, args.export)
    except NadaError as e:
        print(f"evaluator_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
