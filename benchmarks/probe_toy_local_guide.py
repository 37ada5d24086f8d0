"""Probe: a guide that sees only 21x21-pixel windows, in the toy CLIP's text space, with a per-window term.

Not part of the package: every guide of the toy recipe embeds the whole face, and none tells the adaptation's
washed-out faces from true sketches (docs/toy_quality.md). This tower's receptive field is a window, so it can only
judge texture: paper grain, outlines, hatching. It measures whether such a guide tells them apart and where its
gradient leads (docs/toy_quality.md, "A guide that sees windows").

    python benchmarks/probe_toy_local_guide.py train --out runs/local.pt --steps 1500 --pool stride --width 48 \\
        --batch 48
    python benchmarks/probe_toy_local_guide.py train --out runs/local_stable.pt --steps 800 --adv-eps 0.05
    python benchmarks/probe_toy_local_guide.py table --guide runs/local.pt recipe=runs/toy-sketch/generator.pt
    python benchmarks/probe_toy_local_guide.py pixels --guide runs/local.pt runs/local_stable.pt --out pixels.png
    python benchmarks/probe_toy_local_guide.py adapt --guide runs/local.pt --weight 2 \\
        -- --generator toy --source photo --target sketch --out runs/local-s0 --seed 0

`train`: fresh renders of every style each step, a share of them photos through random filter chains of the judge's
training suite (labelled photo); cross-entropy of every window's unit feature, and of their pooled mean, against the
frozen toy CLIP's text features of the six styles (locked text, as `toy-rn` and `toy-strokes` were trained).
`adapt` adds to `nada adapt`'s directional term, per window of the trained image x and the frozen image x0 of a
latent, 1 - cos(f(x) - f(x0), t(target) - t(source)) (`--mode direction`; equal windows take its first-order
limit) or 1 - cos(f(x), unit(f(x0) + t(target) - t(source))) (`--mode target`, which asks for the size of the
move too); `--denoiser PRIOR.pt --denoiser-weight W` adds `probe_toy_denoiser.py`'s low-band term beside it.
`--colour-blind` shows the guide each trained image with its global colour change undone (`colours_matched`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nada.toy import filters as FL
from nada.toy import render as R

LOGIT_SCALE = 20.0


def style_texts() -> torch.Tensor:
    """Unit mean toy-CLIP text features [len(STYLES), D] of every style over the toy templates."""
    return torch.cat(denoiser_probe().text_conditions(*R.STYLES))


class LocalTower(nn.Module):
    """Five 3x3 convolutions, two 2x down-steps: a unit feature [B, D, H/4, W/4] per 21x21 window of [-1, 1] images."""

    def __init__(self, width: int = 32, dim: int = 128, pool: str = "avg") -> None:
        super().__init__()
        assert pool in ("avg", "stride"), f"pool is 'avg' or 'stride', not {pool!r}"
        w = width

        def down(cin: int, cout: int) -> list[nn.Module]:
            if pool == "stride":  # the down-step inside the convolution: cheaper, and aliased
                return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.AvgPool2d(2)]

        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            *down(w, 2 * w),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            *down(2 * w, 4 * w),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(4 * w, dim, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == 3, f"expected images [B, 3, H, W], got {tuple(x.shape)}"
        return F.normalize(self.net(x), dim=1)


def training_batch(rng: np.random.Generator, n: int, filter_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh renders in random styles [n, 3, 64, 64] in [-1, 1] and their style indices [n]; a share of them are
    photos through a random filter chain of the judge's training suite, labelled photo."""
    params = R.sample_params(n, int(rng.integers(1 << 31)))
    labels = rng.integers(0, len(R.STYLES), n)
    img = torch.from_numpy(R.render_mixed(params, [R.STYLES[k] for k in labels], seed=int(rng.integers(1 << 31))))
    img = img.permute(0, 3, 1, 2).float() / 127.5 - 1
    for i in range(n):
        if rng.random() >= filter_share:
            continue
        labels[i] = R.STYLES.index("photo")
        face = R.sample_params(1, int(rng.integers(1 << 31)))
        photo = R.render_tensor(face, "photo", seed=int(rng.integers(1 << 31)))
        img[i] = FL.apply_chain(photo, FL.random_chain(rng), seed=int(rng.integers(1 << 31)))[0]
    return img, torch.from_numpy(labels)


def stability_delta(model: LocalTower, img: torch.Tensor, eps: float) -> torch.Tensor:
    """A perturbation [B, 3, H, W] of at most eps per pixel that moves the window features far (two signed steps)."""
    with torch.no_grad():
        clean = model(img)
    delta = ((torch.rand_like(img) * 2 - 1) * eps).requires_grad_(True)
    for _ in range(2):
        (grad,) = torch.autograd.grad((model(img + delta) - clean).pow(2).sum(1).mean(), delta)
        delta = (delta + eps / 2 * grad.sign()).clamp(-eps, eps).detach().requires_grad_(True)
    return delta.detach()


def train(
    out: Path, steps: int, config: dict[str, Any], filter_share: float, lr: float, adv_eps: float, batch: int
) -> None:
    """Train a window guide from scratch (seed 0) and save {model, texts, config} to ``out``."""
    torch.manual_seed(0)
    texts = style_texts()
    model = LocalTower(**config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    start = time.time()
    for step in range(steps):
        img, y = training_batch(rng, batch, filter_share)
        delta = stability_delta(model, img, adv_eps) if adv_eps > 0 else None
        f = model(img)
        logits = LOGIT_SCALE * torch.einsum("bdhw,sd->bshw", f, texts)
        loss = F.cross_entropy(logits, y[:, None, None].expand(-1, *logits.shape[2:]))
        loss = loss + F.cross_entropy(LOGIT_SCALE * F.normalize(f.mean((2, 3)), dim=1) @ texts.T, y)
        if delta is not None:  # embedding stability: the worst small perturbation should not move the windows
            loss = loss + 10 * (model(img + delta) - f).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            acc = float((logits.argmax(1) == y[:, None, None]).float().mean())
            print(f"step {step} loss {loss.item():.3f} window accuracy {acc:.2f} {time.time() - start:.0f} s")
    torch.save({"model": model.state_dict(), "texts": texts, "config": config}, out)


def load_guide(path: str | Path) -> tuple[LocalTower, torch.Tensor]:
    """A saved window guide (frozen) and its style text features [len(STYLES), D]; tensors only, no code."""
    state = torch.load(path, weights_only=True)
    model = LocalTower(**state["config"])
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False), state["texts"]


def window_loss(
    model: LocalTower,
    texts: torch.Tensor,
    source: str,
    target: str,
    frozen: torch.Tensor,
    trained: torch.Tensor,
    mode: str = "direction",
) -> torch.Tensor:
    """Per-image mean over windows [B] of the term (module docstring); images [B, 3, H, W] in [-1, 1], gradient to
    ``trained`` only."""
    shift = (texts[R.STYLES.index(target)] - texts[R.STYLES.index(source)])[None, :, None, None]
    with torch.no_grad():
        f0 = model(frozen)
    f = model(trained)
    if mode == "target":
        return (1 - (f * F.normalize(f0 + shift, dim=1)).sum(1)).mean((1, 2))
    assert mode == "direction", f"mode is 'direction' or 'target', not {mode!r}"
    edit = f - f0
    along = (edit * F.normalize(shift, dim=1)).sum(1)
    norm = edit.norm(dim=1)
    # Equal windows have no direction: their move along it counts instead, at a fixed scale (x1000).
    cos = torch.where(norm > 1e-6, along / norm.clamp_min(1e-6), along * 1e3)
    return (1 - cos).mean((1, 2))


@torch.no_grad()
def judged_faces(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n judged latents [n, style_dim] (seed 0) and the packaged toy generator's faces of them."""
    from nada.generator.checkpoints import load_generator
    from nada.toy.quality import latents

    toy = load_generator("toy").eval()
    z = latents(toy, 128, 0)[:n]
    return z, toy(z, noise_mode="const").clamp(-1, 1)


@torch.no_grad()
def table(guide: Path, generators: Sequence[str]) -> None:
    """Print both terms (photo -> sketch) and the pooled reading for true sketches, filters and NAME=generators,
    and each packaged toy CLIP's directional loss for the same images."""
    from nada.generator.checkpoints import load_generator
    from nada.guidance import losses
    from nada.toy.judge import true_renders

    model, texts = load_guide(guide)
    z, photo = judged_faces()
    rows = {
        "true sketch renders": true_renders(z, "sketch"),
        "grayscale": FL.grayscale(photo, 1.0),
        "grayscale + wash 0.5": FL.wash(FL.grayscale(photo, 1.0), 0.5),
        "wash 0.6": FL.wash(photo, 0.6),
    }
    for spec in generators:
        name, _, path = spec.partition("=")
        rows[name] = load_generator(path).eval()(z, noise_mode="const").clamp(-1, 1)
    whole = whole_face_guides()
    print(f"{'images (64 judged latents)':28s} direction  target  pooled reads sketch | " + "  ".join(whole))
    for name, img in rows.items():
        d = float(window_loss(model, texts, "photo", "sketch", photo, img, "direction").mean())
        t = float(window_loss(model, texts, "photo", "sketch", photo, img, "target").mean())
        sketch = (F.normalize(model(img).mean((2, 3)), dim=1) @ texts.T).argmax(1) == R.STYLES.index("sketch")
        faces = [
            float(losses.directional_loss(clip.encode_image(photo), clip.encode_image(img), direction))
            for clip, direction in whole.values()
        ]
        print(
            f"{name:28s} {d:9.3f} {t:7.3f} {float(sketch.float().mean()):8.2f} | "
            + "  ".join(f"{v:.3f}" for v in faces)
        )


def whole_face_guides() -> dict[str, tuple[Any, torch.Tensor]]:
    """The packaged toy CLIPs and their text directions photo -> sketch [1, D] over the toy templates."""
    from nada.guidance import losses
    from nada.guidance.clip import load_clip
    from nada.toy.clips import TOY_CLIPS, register_toy_clips

    register_toy_clips()
    clips = {name: load_clip(name) for name in TOY_CLIPS}
    return {name: (c, losses.text_direction(c, "photo", "sketch", R.TEMPLATES)) for name, c in clips.items()}


def optimise_pixels(guides: Sequence[Path], out: Path, mode: str, lr: float, steps: int) -> None:
    """Optimise six judged faces' pixels (Adam, clipped to [-1, 1]) with each guide's term alone; save the frozen
    faces, a row per guide and the true sketch renders, magnified three times."""
    from nada.toy.judge import true_renders

    z, photo = judged_faces(6)
    rows = [photo]
    for guide in guides:
        model, texts = load_guide(guide)
        x = photo.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for step in range(steps):
            loss = window_loss(model, texts, "photo", "sketch", photo, x, mode).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(-1, 1)
            if step % 50 == 0 or step == steps - 1:
                print(f"{guide.name} step {step} term {loss.item():.3f}", flush=True)
        rows.append(x.detach())
    rows.append(true_renders(z, "sketch"))
    denoiser_probe().save_rows(out, rows)


def denoiser_probe() -> ModuleType:
    """The sibling probe ``probe_toy_denoiser`` (its prior's term, its hook into `nada adapt`, its image rows)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import probe_toy_denoiser

    return probe_toy_denoiser


def colours_matched(img: torch.Tensor, reference: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``img`` [B, 3, H, W] under the affine map of its RGB (3x3 plus offset, per image, ridge least squares) that
    comes closest to ``reference``: what is left of ``img`` once any global colour change is undone."""
    b = img.shape[0]
    x = torch.cat([img.flatten(2), torch.ones_like(img[:, :1].flatten(2))], 1)  # [B, 4, HW]
    gram = x @ x.transpose(1, 2) + ridge * x.shape[2] * torch.eye(4)
    fit = torch.linalg.solve(gram, x @ reference.flatten(2).transpose(1, 2))  # [B, 4, 3]
    return (fit.transpose(1, 2) @ x).view(b, 3, *img.shape[2:])


class WindowTerm:
    """The window term as a scalar on paired images [N, 3, H, W] in [-1, 1] (mean over images and windows);
    ``colour_blind`` shows the guide the trained images with their global colour change undone."""

    def __init__(
        self, model: LocalTower, texts: torch.Tensor, source: str, target: str, mode: str, colour_blind: bool = False
    ) -> None:
        self.model, self.texts, self.source, self.target, self.mode = model, texts, source, target, mode
        self.colour_blind = colour_blind

    def __call__(self, img_frozen: torch.Tensor, img_train: torch.Tensor) -> torch.Tensor:
        seen = colours_matched(img_train, img_frozen) if self.colour_blind else img_train
        return window_loss(self.model, self.texts, self.source, self.target, img_frozen, seen, self.mode).mean()


def adapt(args: argparse.Namespace) -> int:
    """`nada adapt` with the window term, and the low-band denoising term when ``--denoiser`` is given."""
    from nada.frontends.cli import main as nada_main

    dn = denoiser_probe()
    model, texts = load_guide(args.guide)
    rest = [a for a in args.adapt_args if a != "--"]
    with ExitStack() as stack:
        if args.denoiser is not None:
            prior = dn.load_denoiser(args.denoiser)
            term = dn.DeltaDenoising(prior, args.source_style, args.target_style, 5.0, (0.02, 0.3))
            stack.enter_context(dn.with_direction_term(term, args.denoiser_weight))
        window = WindowTerm(model, texts, args.source_style, args.target_style, args.mode, args.colour_blind)
        stack.enter_context(dn.with_direction_term(window, args.weight))
        return nada_main(["adapt", *rest])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``train``, ``table``, ``pixels`` or ``adapt`` (the arguments after ``--`` go to `nada adapt`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a window guide from scratch")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--steps", type=int, default=800)
    tr.add_argument("--batch", type=int, default=32)
    tr.add_argument("--width", type=int, default=32)
    tr.add_argument("--pool", choices=("avg", "stride"), default="avg")
    tr.add_argument("--filter-share", type=float, default=0.25, help="share of filtered photos (labelled photo)")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--adv-eps", type=float, default=0.0, help="embedding-stability training at this L-inf radius")
    tb = sub.add_parser("table", help="the terms for true sketches, filters and NAME=GENERATOR.pt outputs")
    tb.add_argument("--guide", type=Path, required=True)
    tb.add_argument("generators", nargs="*")
    px = sub.add_parser("pixels", help="six faces' pixels optimised by each guide's term alone")
    px.add_argument("--guide", type=Path, nargs="+", required=True)
    px.add_argument("--out", type=Path, required=True)
    px.add_argument("--mode", choices=("direction", "target"), default="direction")
    px.add_argument("--lr", type=float, default=0.01)
    px.add_argument("--steps", type=int, default=200)
    ad = sub.add_parser("adapt", help="nada adapt with the window term")
    ad.add_argument("--guide", type=Path, required=True)
    ad.add_argument("--weight", type=float, default=1.0)
    ad.add_argument("--mode", choices=("direction", "target"), default="direction")
    ad.add_argument("--denoiser", type=Path, help="also the low-band term of this probe_toy_denoiser.py prior")
    ad.add_argument("--denoiser-weight", type=float, default=0.015)
    ad.add_argument("--colour-blind", action="store_true", help="undo each image's global colour change first")
    ad.add_argument("--source-style", default="photo", help="the toy style the term moves from")
    ad.add_argument("--target-style", default="sketch", help="the toy style the term moves towards")
    ad.add_argument("adapt_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "train":
        config = {"width": args.width, "pool": args.pool}
        train(args.out, args.steps, config, args.filter_share, args.lr, args.adv_eps, args.batch)
    elif args.command == "table":
        table(args.guide, args.generators)
    elif args.command == "pixels":
        optimise_pixels(args.guide, args.out, args.mode, args.lr, args.steps)
    else:
        return adapt(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
