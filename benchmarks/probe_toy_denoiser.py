"""Probe: a style-conditioned denoiser of the toy world as a guide (delta denoising score beside the toy CLIPs).

Not part of the package: it measures whether a generative prior leads the adaptation to drawings where the
discriminative toy CLIPs lead it to washed-out photos (docs/toy_quality.md, "A denoising prior as the guide").

    python benchmarks/probe_toy_denoiser.py train --out runs/toy_denoiser.pt --minutes 42
    python benchmarks/probe_toy_denoiser.py adapt --denoiser runs/toy_denoiser.pt --weight 0.1 --cfg 5 \\
        -- --generator toy --source photo --target sketch --out runs/dds --iterations 150
    python benchmarks/probe_toy_denoiser.py strip --out strip.png runs/dds/generator.pt   # the docs' image rows
    python benchmarks/probe_toy_denoiser.py translate --out tr.png runs/low.pt:0.35:5 runs/mid.pt:0.6:3  # DDIM passes

`train` resumes from ``--out`` when it exists (one step = 32 fresh renders in random styles, 10 % of them
unconditioned). `adapt` runs `nada adapt` with one more loss term, added to the directional term: for the
trained image x and the frozen image x0 of a latent, at a noise level t from [t_min, t_max] and the same
noise for both, the gradient on x is w_cfg-guided eps(x_t | target style) - eps(x0_t | source style).
`--high-boost K` scales that gradient's detail above a 1.5-pixel Gaussian by K (its low band stays).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nada.toy import render as R
from nada.toy.filters import gaussian_blur
from nada.toy.translator import UNCONDITIONED, alpha_bar, ddim_pass
from nada.toy.translator import UNet as Denoiser


def guided_eps(
    model: Denoiser, x: torch.Tensor, t: torch.Tensor, style: int | torch.Tensor, cfg: float
) -> torch.Tensor:
    """Classifier-free guided noise prediction [N, 3, H, W] for one style index or one text feature [1, D]."""
    n = x.shape[0]
    if isinstance(style, torch.Tensor):
        y = torch.cat([style.expand(n, -1), torch.zeros(n, style.shape[1])])
    else:
        y = torch.cat([torch.full((n,), style), torch.full((n,), UNCONDITIONED)])
    cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), y).chunk(2)
    return uncond + cfg * (cond - uncond)


def style_text_features() -> torch.Tensor:
    """Unit toy-CLIP text features [len(STYLES), len(TEMPLATES), D] of every style in every toy template."""
    from nada.guidance import losses
    from nada.guidance.clip import load_clip

    clip = load_clip("toy")
    return torch.stack([losses.text_features(clip, style, R.TEMPLATES) for style in R.STYLES])


def text_conditions(*texts: str) -> list[torch.Tensor]:
    """The text-conditioned prior's condition for each prompt: the unit mean of its toy-CLIP features over the
    toy templates, [1, D] (the text side of the directional term)."""
    from nada.guidance import losses
    from nada.guidance.clip import load_clip

    clip = load_clip("toy")
    return [losses.mean_text_feature(clip, text, R.TEMPLATES) for text in texts]


def train(
    out: Path,
    minutes: float,
    t_range: tuple[float, float] = (0.0, 1.0),
    text: bool = False,
    batch: int = 32,
    lr: float = 3e-4,
    decay: tuple[int, int, float] | None = None,
    ema: float = 0.0,
    bf16: bool = False,
    keep_every: int = 0,
) -> None:
    """Train (or resume) the denoiser on fresh toy renders until ``minutes`` have passed; saves every 50 steps.

    Noise levels are drawn from ``t_range``: a narrower band spends the steps where `adapt` samples t. With
    ``text`` each render is conditioned on its style's toy-CLIP text feature in a random toy template.
    ``decay`` (first, last, final lr) lowers the step size linearly between two steps; ``ema`` > 0 keeps an
    exponential moving average of the weights (started from the weights at resume when the file has none),
    which `load_denoiser` then prefers; ``bf16`` runs the network under bf16 autocast; ``keep_every`` > 0
    also keeps a copy ``<out>.<step>.pt`` every that many steps.
    """
    torch.manual_seed(0)
    features = style_text_features() if text else None
    model = Denoiser(text_dim=0 if features is None else features.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr)
    step, average = 0, None
    if out.exists():
        state = torch.load(out, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        average = state.get("ema") if ema > 0 else None
    if ema > 0 and average is None:  # no average in the file yet: start it from the weights as loaded
        average = {k: v.detach().clone() for k, v in model.state_dict().items()}
    deadline, losses = time.time() + minutes * 60, []
    while time.time() < deadline:
        if decay is not None:
            share = min(max((step - decay[0]) / (decay[1] - decay[0]), 0.0), 1.0)
            for group in opt.param_groups:
                group["lr"] = lr + share * (decay[2] - lr)
        rng = np.random.default_rng([step, 5])
        styles = rng.integers(0, len(R.STYLES), batch)
        faces = R.sample_params(batch, seed=step + 10_000)
        x0 = R.to_tensor(R.render_mixed(faces, [R.STYLES[i] for i in styles], step))
        dropped = torch.as_tensor(rng.random(batch) < 0.1)
        if features is None:
            y = torch.as_tensor(styles)
            y[dropped] = UNCONDITIONED
        else:
            y = features[torch.as_tensor(styles), torch.as_tensor(rng.integers(0, features.shape[1], batch))]
            y[dropped] = 0.0
        g = torch.Generator().manual_seed(step)
        t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(batch, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        ab = alpha_bar(t)[:, None, None, None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predicted = model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, y)
        loss = (predicted.float() - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if average is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    average[k].lerp_(v, 1 - ema)
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f}", flush=True)
            _save(out, model, opt, step, average)
        if keep_every and step % keep_every == 0:
            _save(out.with_suffix(f".{step}.pt"), model, opt, step, average)
    _save(out, model, opt, step, average)


def _save(
    out: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, average: dict[str, torch.Tensor] | None
) -> None:
    """Write the training state atomically (a temporary file, then a rename)."""
    tmp = out.with_suffix(".tmp")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}
    if average is not None:
        state["ema"] = average
    torch.save(state, tmp)
    os.replace(tmp, out)


def load_denoiser(path: str | os.PathLike, raw: bool = False) -> Denoiser:
    """A trained prior (style-index or text-conditioned, told apart by its weights), its moving average of the
    weights where the file has one and ``raw`` is false; tensors only, no code."""
    saved = torch.load(path, weights_only=True)
    state = saved["model"] if raw or "ema" not in saved else saved["ema"]
    model = Denoiser(text_dim=state["style.weight"].shape[1] if "style.bias" in state else 0)
    model.load_state_dict(state)
    return model


class DeltaDenoising:
    """The probe's loss term on paired images [N, 3, H, W] in [-1, 1]: its gradient on the trained images is
    the guided noise prediction for the target style minus that of the frozen images for the source style."""

    def __init__(
        self,
        model: Denoiser,
        source: str,
        target: str,
        cfg: float,
        t_range: tuple[float, float],
        high_boost: float = 1.0,
        fixed_noise: bool = False,
    ) -> None:
        self.model, self.cfg, self.t_range = model.eval().requires_grad_(False), cfg, t_range
        self.high_boost = high_boost  # the gradient's detail above a 1.5-pixel Gaussian, scaled by this
        self.fixed_noise: torch.Tensor | None = None
        if fixed_noise:  # one noise map for every image and iteration, so the prior's hallucinated strokes stay put
            size = (1, 3, R.IMAGE_SIZE, R.IMAGE_SIZE)
            self.fixed_noise = torch.randn(size, generator=torch.Generator().manual_seed(1234))
        self.source: int | torch.Tensor
        self.target: int | torch.Tensor
        if isinstance(model.style, nn.Linear):  # a text-conditioned prior takes the prompts themselves
            self.source, self.target = text_conditions(source, target)
        else:
            self.source, self.target = R.STYLES.index(source), R.STYLES.index(target)
        self.rng = torch.Generator().manual_seed(1234)

    def __call__(self, img_frozen: torch.Tensor, img_train: torch.Tensor) -> torch.Tensor:
        t, noised_train, noised_frozen = noised_pair(img_frozen, img_train, self.t_range, self.rng, self.fixed_noise)
        with torch.no_grad():
            toward = guided_eps(self.model, noised_train, t, self.target, self.cfg)
            away = guided_eps(self.model, noised_frozen, t, self.source, self.cfg)
            push = toward - away
            if self.high_boost != 1.0:
                low = gaussian_blur(push, 1.5)
                push = low + self.high_boost * (push - low)
        return surrogate(push, img_train)


def noised_pair(
    img_frozen: torch.Tensor,
    img_train: torch.Tensor,
    t_range: tuple[float, float],
    rng: torch.Generator,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Times t [N] drawn from ``t_range`` and both image batches [N, 3, H, W] noised to them with the same noise
    (drawn from ``rng`` unless given), detached: (t, noised trained images, noised frozen images)."""
    lo, hi = t_range
    t = lo + (hi - lo) * torch.rand(img_train.shape[0], generator=rng)
    noise = torch.randn(img_train.shape, generator=rng) if noise is None else noise
    ab = alpha_bar(t)[:, None, None, None]
    return t, ab.sqrt() * img_train.detach() + (1 - ab).sqrt() * noise, ab.sqrt() * img_frozen + (1 - ab).sqrt() * noise


def surrogate(push: torch.Tensor, img_train: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient on img_train is ``push`` scaled to a per-pixel mean (x1000: the CLIP terms' order)."""
    return (push * img_train).sum() / img_train.numel() * 1000


@contextmanager
def with_direction_term(term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight: float) -> Iterator[None]:
    """Add ``weight * term(img_frozen, img_train)`` (a scalar) to the directional term of every `nada adapt`
    iteration run inside the block (also the window guide's term, probe_toy_local_guide.py)."""
    import nada.adaptation.loop as loop

    plain = loop.loss_terms

    def loss_terms(guides, img_frozen, img_train, config, rng):  # type: ignore[no-untyped-def]
        if config.lambda_direction <= 0:
            raise SystemExit("the probe's term rides on the directional term: give --lambda-direction > 0")
        terms = plain(guides, img_frozen, img_train, config, rng)
        extra = weight * term(img_frozen, img_train) / config.lambda_direction
        terms["direction"] = terms.get("direction", 0) + extra
        return terms

    loop.loss_terms = loss_terms
    try:
        yield
    finally:
        loop.loss_terms = plain


@torch.no_grad()
def translate(
    model: Denoiser, images: torch.Tensor, t0: float, style: int, cfg: float, steps: int = 10
) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] noised to t0 (seeded noise) and denoised to t = 0 as ``style`` by a
    deterministic DDIM pass of ``steps`` steps with guidance ``cfg``: what the prior makes of them."""
    return ddim_pass(images, t0, steps, lambda x, t: guided_eps(model, x, t, style, cfg))


@torch.no_grad()
def save_translations(out: Path, passes: Sequence[tuple[str, float, float]], n: int = 6, style: str = "sketch") -> None:
    """A PNG of n judged latents: the packaged toy generator's faces, one row per (prior, t0, cfg) of ``passes``
    (`translate` of those faces into ``style``), and the true renders of the same faces in ``style``."""
    from nada.generator.checkpoints import load_generator
    from nada.toy.judge import true_renders
    from nada.toy.quality import latents

    toy = load_generator("toy").eval()
    z = latents(toy, 128, 0)[:n]
    faces = toy(z, noise_mode="const")
    rows = [faces]
    for path, t0, cfg in passes:
        rows.append(translate(load_denoiser(path).eval(), faces, t0, R.STYLES.index(style), cfg))
    rows.append(true_renders(z, style))
    save_rows(out, rows)


@torch.no_grad()
def save_strip(out: Path, generators: Sequence[str], n: int = 6, style: str = "sketch") -> None:
    """A PNG of n judged latents (seed 0, stored noise), magnified three times: a row for the packaged toy generator,
    one per generator of ``generators`` (checkpoints or names), and the true renders of the same faces in ``style``."""
    from nada.generator.checkpoints import load_generator
    from nada.toy.judge import true_renders
    from nada.toy.quality import latents

    toy = load_generator("toy").eval()
    z = latents(toy, 128, 0)[:n]
    rows = [G(z, noise_mode="const") for G in (toy, *(load_generator(g).eval() for g in generators))]
    rows.append(true_renders(z, style))
    save_rows(out, rows)


def save_rows(out: Path, rows: Sequence[torch.Tensor]) -> None:
    """A PNG of rows of images [N, 3, H, W] in [-1, 1], each row's images side by side, magnified three times."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(row.clamp(-1, 1)), 2) for row in rows], 1)
    pixels = ((grid + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).resize((pixels.shape[1] * 3, pixels.shape[0] * 3), Image.NEAREST).save(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``train``, ``adapt`` (the arguments after ``--`` go to `nada adapt`), ``strip`` or
    ``translate``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train or resume the denoiser")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--minutes", type=float, default=40.0)
    tr.add_argument("--t-range", type=float, nargs=2, default=(0.0, 1.0), help="band of noise levels to train on")
    tr.add_argument("--text", action="store_true", help="condition on toy-CLIP text features, not style indices")
    tr.add_argument("--decay", nargs=3, type=float, metavar=("FIRST", "LAST", "LR"), help="lower the lr linearly")
    tr.add_argument("--ema", type=float, default=0.0, help="keep a moving average of the weights (e.g. 0.999)")
    tr.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
    tr.add_argument("--keep-every", type=int, default=0, help="also keep <out>.<step>.pt every that many steps")
    ad = sub.add_parser("adapt", help="nada adapt with the delta denoising term")
    ad.add_argument("--denoiser", type=Path, required=True)
    ad.add_argument("--weight", type=float, default=0.1)
    ad.add_argument("--cfg", type=float, default=5.0)
    ad.add_argument("--t-range", type=float, nargs=2, default=(0.2, 0.7))
    ad.add_argument("--fixed-noise", action="store_true", help="one noise map for every image and iteration")
    ad.add_argument("--raw", action="store_true", help="the trained weights, not their moving average")
    ad.add_argument("--high-boost", type=float, default=1.0, help="scale the term's detail above 1.5 px by this")
    ad.add_argument("--source-style", default="photo", help="a toy style (a text-conditioned prior: any prompt)")
    ad.add_argument("--target-style", default="sketch", help="a toy style (a text-conditioned prior: any prompt)")
    ad.add_argument("adapt_args", nargs=argparse.REMAINDER)
    st = sub.add_parser("strip", help="rows of six judged latents: the toy generator, GENERATORS..., true renders")
    st.add_argument("--out", type=Path, required=True)
    st.add_argument("--style", default="sketch")
    st.add_argument("generators", nargs="*")
    tl = sub.add_parser("translate", help="rows of six judged faces, each prior's DDIM pass into a style, true renders")
    tl.add_argument("--out", type=Path, required=True)
    tl.add_argument("--style", default="sketch")
    tl.add_argument("passes", nargs="+", metavar="PRIOR:T0:CFG", help="prior file:start t:cfg")
    args = parser.parse_args(argv)
    if args.command == "translate":
        passes = [(path, float(t0), float(cfg)) for path, t0, cfg in (spec.rsplit(":", 2) for spec in args.passes)]
        save_translations(args.out, passes, style=args.style)
        return 0
    if args.command == "strip":
        save_strip(args.out, args.generators, style=args.style)
        return 0
    lo, hi = args.t_range
    if not 0.0 <= lo < hi <= 1.0:
        parser.error(f"--t-range {lo:g} {hi:g} is not a band of noise levels: give 0 <= LOW < HIGH <= 1")
    if args.command == "train":
        decay = None if args.decay is None else (int(args.decay[0]), int(args.decay[1]), args.decay[2])
        train(
            args.out,
            args.minutes,
            tuple(args.t_range),
            args.text,
            decay=decay,
            ema=args.ema,
            bf16=args.bf16,
            keep_every=args.keep_every,
        )
        return 0
    from nada.frontends.cli import main as nada_main

    model = load_denoiser(args.denoiser, raw=args.raw)
    term = DeltaDenoising(
        model, args.source_style, args.target_style, args.cfg, tuple(args.t_range), args.high_boost, args.fixed_noise
    )
    rest = [a for a in args.adapt_args if a != "--"]
    with with_direction_term(term, args.weight):
        return nada_main(["adapt", *rest])


if __name__ == "__main__":
    sys.exit(main())
