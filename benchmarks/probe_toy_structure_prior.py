"""Probe: a toy-world denoiser conditioned on a style and on a map of the face, as a guide that keeps the face.

Not part of the package. The style-conditioned priors of `probe_toy_denoiser.py` draw outlines but know nothing of
the face they are given beyond the noisy image, so they lose its features (docs/toy_quality.md, "The denoising
prior re-judged"). This prior also sees a map of the clean image it is to produce, which every style of the toy
world shares: ``outline`` (`structure`: the gradient magnitude of the blurred luminance, normalised per image) or
``parts`` (the face's part groups: the renderer's for training images, `PartAnnotator`'s reading of any other
image, as edge or segmentation detectors condition real image priors). Trained on unpaired renders of all six
styles (never a photo and its sketch together), it is asked to draw the frozen face's map in the target style.

    python benchmarks/probe_toy_structure_prior.py train-annotator --out runs/annotator.pt --minutes 30
    python benchmarks/probe_toy_structure_prior.py train --out runs/parts_prior.pt --map parts --predicts x0 \
        --t-range 0.2 0.9 --minutes 60 --bf16
    python benchmarks/probe_toy_structure_prior.py translate --prior runs/parts_prior.pt --annotator runs/annotator.pt \
        --t0 0.7 --cfg 1.5 --steps 5 --out runs/translated   # judged passes of the 128 judged faces (+ a PNG of six)
    python benchmarks/probe_toy_structure_prior.py fit --prior runs/parts_prior.pt --annotator runs/annotator.pt \
        --t0 0.7 --cfg 1.5 --steps 5 --out runs/fit   # the generator fine-tuned on passes of its own faces
    python benchmarks/probe_toy_structure_prior.py adapt --prior runs/structure_prior.pt --weight 0.02 --cfg 3 \
        -- --generator toy --source photo --target sketch --out runs/sp --iterations 300

`train` and `train-annotator` resume from ``--out``. One step = 32 fresh renders in random styles; 10 % lose the
style, another 10 % the map. ``--predicts x0`` trains the network to estimate the clean image (the sampler and the
delta term use the noise derived from it). `adapt` adds the delta denoising term of `probe_toy_denoiser.py`, both
sides conditioned on the frozen image's map.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nada.toy import render as R  # noqa: E402
from nada.toy.filters import gaussian_blur  # noqa: E402
from nada.toy.translator import UNCONDITIONED, UNet, alpha_bar, ddim_pass, face_maps  # noqa: E402
from nada.toy.translator_train import optimise  # noqa: E402
from probe_toy_denoiser import (  # noqa: E402
    noised_pair,
    save_rows,
    surrogate,
    with_direction_term,
)


def structure(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Outline map [N, 1, H, W] in [-1, 1] of images [N, 3, H, W] in [-1, 1]: the luminance's gradient magnitude
    after a Gaussian blur, divided by its per-image 98th percentile (so paper and photo alike reach 1)."""
    lum = gaussian_blur(x.mean(1, keepdim=True), sigma, border="reflect")
    gx = F.pad(lum[..., :, 2:] - lum[..., :, :-2], (1, 1, 0, 0), mode="replicate")
    gy = F.pad(lum[..., 2:, :] - lum[..., :-2, :], (0, 0, 1, 1), mode="replicate")
    g = (gx.pow(2) + gy.pow(2) + 1e-12).sqrt()
    scale = g.flatten(1).quantile(0.98, dim=1).clamp_min(1e-3)[:, None, None, None]
    return (g / scale).clamp(0, 1) * 2 - 1


# Channels of each kind of map: "outline" is `structure`, "parts" the face's part groups (`R.part_maps`), which the
# renderer knows for training images and `PartAnnotator` reads from any image; "parts_hair" adds the face's hair
# colour where its hair is (what a person names, whatever the style draws).
MAP_CHANNELS = {"outline": 1, "parts": len(R.PART_GROUPS), "parts_hair": len(R.PART_GROUPS) + 3}


class StructurePrior(nn.Module):
    """The probe's UNet with the map as extra input channels: noise of x_t [N, 3, 64, 64] at times t [N] for style
    indices y [N] (UNCONDITIONED: none) and maps s [N, C, 64, 64] in [-1, 1] (all -2: none). With ``predicts="x0"``
    the network estimates the clean image, and the noise is derived from it (the same sampler and delta term)."""

    def __init__(self, map_kind: str = "outline", predicts: str = "eps") -> None:
        super().__init__()
        assert predicts in ("eps", "x0"), predicts
        self.net, self.map_kind, self.predicts = UNet(3 + MAP_CHANNELS[map_kind], 3), map_kind, predicts

    def raw(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The network's own estimate [N, 3, H, W]: the noise, or the clean image when ``predicts`` is "x0"."""
        expected = self.net.inp.in_channels - 3
        assert x.shape[1] == 3 and s.shape[1] == expected and x.shape[-2:] == s.shape[-2:], (x.shape, s.shape)
        return self.net(torch.cat([x, s], 1), t, y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self.raw(x, t, y, s)
        if self.predicts == "eps":
            return out
        ab = alpha_bar(t)[:, None, None, None]
        return (x - ab.sqrt() * out) / (1 - ab).sqrt()


class PartAnnotator(nn.Module):
    """Part-group maps [N, C, 64, 64] in [-1, 1] of images [N, 3, 64, 64] in [-1, 1] of any style: the probe's UNet at
    t = 0 with one output channel per group (a segmentation network, as edge and pose detectors are to real priors)."""

    def __init__(self, map_kind: str = "parts") -> None:
        super().__init__()
        assert map_kind != "outline", "outline maps are computed, not annotated"
        self.net, self.map_kind = UNet(3, MAP_CHANNELS[map_kind]), map_kind

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-group coverage logits [N, C, H, W] of images [N, 3, H, W] in [-1, 1]."""
        n = x.shape[0]
        return self.net(x, torch.zeros(n), torch.full((n,), UNCONDITIONED))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x)) * 2 - 1


def true_maps(kind: str, images: torch.Tensor, faces: R.FaceParams) -> torch.Tensor:
    """Training maps [N, C, 64, 64] in [-1, 1]: the outline map of the images, or the renderer's part groups (and
    the hair colour on the hair)."""
    if kind == "outline":
        return structure(images)
    return annotation(kind, faces) * 2 - 1


def annotation(kind: str, faces: R.FaceParams) -> torch.Tensor:
    """What the annotator learns to read, [N, C, 64, 64] in [0, 1]: part-group coverage, then for "parts_hair" the
    hair colour times the hair's coverage."""
    return torch.from_numpy(R.part_maps(faces)) if kind == "parts" else face_maps(faces)


NO_STRUCTURE = -2.0  # outside the map's range [-1, 1]: "no outline map given"


def guided_eps(
    model: StructurePrior,
    x: torch.Tensor,
    t: torch.Tensor,
    style: int,
    s: torch.Tensor,
    cfg: float,
    luma_only: bool = False,
) -> torch.Tensor:
    """Noise prediction [N, 3, H, W] guided towards ``style`` (weight ``cfg``), the maps s always given; with
    ``luma_only`` the guidance moves the channel mean alone and the colour follows the conditional prediction."""
    n = x.shape[0]
    y = torch.cat([torch.full((n,), style), torch.full((n,), UNCONDITIONED)])
    cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), y, torch.cat([s, s])).chunk(2)
    guided = uncond + cfg * (cond - uncond)
    return guided.mean(1, keepdim=True) + cond - cond.mean(1, keepdim=True) if luma_only else guided


def train(
    out: Path,
    minutes: float,
    batch: int = 32,
    lr: float = 3e-4,
    bf16: bool = False,
    map_kind: str = "outline",
    predicts: str = "eps",
    t_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Train (or resume) the prior on fresh renders of every style until ``minutes`` have passed; saves every 50.
    Times are drawn from ``t_range``; the loss is the mean squared error of what the network ``predicts``."""
    torch.manual_seed(0)
    model = StructurePrior(map_kind, predicts)

    def loss_at(step: int) -> torch.Tensor:
        rng = np.random.default_rng([step, 7])
        styles = rng.integers(0, len(R.STYLES), batch)
        faces = R.sample_params(batch, seed=step + 20_000)
        x0 = R.to_tensor(R.render_mixed(faces, [R.STYLES[i] for i in styles], step))
        s = true_maps(map_kind, x0, faces)
        drop = rng.random(batch)
        y = torch.as_tensor(styles)
        y[torch.as_tensor(drop < 0.1)] = UNCONDITIONED
        s[torch.as_tensor((drop >= 0.1) & (drop < 0.2))] = NO_STRUCTURE
        g = torch.Generator().manual_seed(step)
        t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(batch, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        ab = alpha_bar(t)[:, None, None, None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predicted = model.raw(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, y, s)
        return (predicted.float() - (noise if predicts == "eps" else x0)).pow(2).mean()

    _optimise(out, model, lr, minutes, loss_at, {"map": map_kind, "predicts": predicts})


def train_annotator(out: Path, minutes: float, map_kind: str = "parts", batch: int = 32, lr: float = 1e-3) -> None:
    """Train (or resume) the part annotator on fresh renders of every style (binary cross-entropy against the
    renderer's `annotation`) until ``minutes`` have passed; saves every 50 steps."""
    torch.manual_seed(0)
    model = PartAnnotator(map_kind)

    def loss_at(step: int) -> torch.Tensor:
        styles = np.random.default_rng([step, 11]).integers(0, len(R.STYLES), batch)
        faces = R.sample_params(batch, seed=step + 40_000)
        x = R.to_tensor(R.render_mixed(faces, [R.STYLES[i] for i in styles], step))
        return F.binary_cross_entropy_with_logits(model.logits(x), annotation(map_kind, faces))

    _optimise(out, model, lr, minutes, loss_at, {"map": map_kind})


# What the first outline priors' files, written before these keys, hold.
EARLIER_META = {"map": "outline", "predicts": "eps"}


def _optimise(
    out: Path, model: nn.Module, lr: float, minutes: float, loss_at: Callable[[int], torch.Tensor], meta: dict[str, str]
) -> None:
    """The package's resumable training loop (`nada.toy.translator_train.optimise`), knowing the first files."""
    optimise(out, model, lr, minutes, loss_at, meta, earlier=EARLIER_META)


def load_prior(path: str | os.PathLike) -> StructurePrior:
    """A trained structure prior from its training state (tensors only, no code), in eval mode and frozen."""
    state = torch.load(path, weights_only=True)
    model = StructurePrior(*(state.get(key, default) for key, default in EARLIER_META.items()))
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False)


def map_reader(prior: StructurePrior, annotator: str | os.PathLike | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map ``prior`` was trained on, read from images [N, 3, 64, 64] in [-1, 1]: `structure`, or the annotator's
    part groups (``annotator`` required then)."""
    if prior.map_kind == "outline":
        return structure
    if annotator is None:
        raise SystemExit("the prior is conditioned on part maps: pass --annotator PATH (train-annotator makes one)")
    state = torch.load(annotator, weights_only=True)
    if state["map"] != prior.map_kind:
        raise SystemExit(f"{annotator} reads {state['map']} maps, the prior needs {prior.map_kind}: pass its annotator")
    model = PartAnnotator(prior.map_kind)
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False)


@torch.no_grad()
def translate(
    model: StructurePrior,
    images: torch.Tensor,
    t0: float,
    style: int,
    cfg: float,
    steps: int = 10,
    seed: int = 0,
    read_map: Callable[[torch.Tensor], torch.Tensor] = structure,
    luma_only: bool = False,
) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] noised to t0 and redrawn as ``style`` by a deterministic DDIM pass, each
    conditioned on its own map (``read_map``, the one the prior was trained on): [N, 3, H, W] in [-1, 1]."""
    s = read_map(images)
    x = ddim_pass(images, t0, steps, lambda x, t: guided_eps(model, x, t, style, s, cfg, luma_only), seed)
    return x.clamp(-1, 1)


class StructureDelta:
    """Delta denoising on paired images [N, 3, H, W] in [-1, 1], both sides conditioned on the frozen image's
    map: its gradient on the trained images is eps(x_t | target, s) - eps(x0_t | source, s)."""

    def __init__(
        self,
        model: StructurePrior,
        source: str,
        target: str,
        cfg: float,
        t_range: tuple[float, float],
        read_map: Callable[[torch.Tensor], torch.Tensor] = structure,
    ) -> None:
        self.model, self.cfg, self.t_range, self.read_map = model, cfg, t_range, read_map
        self.source, self.target = R.STYLES.index(source), R.STYLES.index(target)
        self.rng = torch.Generator().manual_seed(1234)

    def __call__(self, img_frozen: torch.Tensor, img_train: torch.Tensor) -> torch.Tensor:
        t, noised_train, noised_frozen = noised_pair(img_frozen, img_train, self.t_range, self.rng)
        with torch.no_grad():
            s = self.read_map(img_frozen)
            toward = guided_eps(self.model, noised_train, t, self.target, s, self.cfg)
            away = guided_eps(self.model, noised_frozen, t, self.source, s, self.cfg)
        return surrogate(toward - away, img_train)


@dataclass(frozen=True)
class Pass:
    """A DDIM pass through a trained prior (``translate``): from noise level t0, guidance cfg, in ``steps`` steps,
    towards ``style``; ``annotator`` reads the part maps of priors conditioned on them."""

    prior: Path
    t0: float = 0.6
    cfg: float = 3.0
    steps: int = 10
    style: str = "sketch"
    annotator: Path | None = None
    luma_only: bool = False

    def load(self) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The pass as a function of images [N, 3, 64, 64] in [-1, 1] and the seed of its noise."""
        model = load_prior(self.prior)
        read_map, index = map_reader(model, self.annotator), R.STYLES.index(self.style)
        return lambda images, seed: translate(
            model, images, self.t0, index, self.cfg, self.steps, seed, read_map, self.luma_only
        )


@torch.no_grad()
def translate_judged(spec: Pass, out: Path, n: int = 128) -> dict:
    """Translate the n judged faces of the packaged toy generator by the pass ``spec``; save them (targets.pt:
    latents and images), a PNG of six (faces, translations, true renders) and the judge's verdict (verdict.json)."""
    from nada.generator.checkpoints import load_generator
    from nada.toy.judge import true_renders
    from nada.toy.quality import latents

    toy = load_generator("toy").eval()
    z = latents(toy, n, 0)
    faces = toy(z, noise_mode="const")
    run = spec.load()
    images = torch.cat([run(faces[i : i + 32], i) for i in range(0, n, 32)])
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"z": z, "images": images}, out / "targets.pt")
    save_rows(out / "six.png", [faces[:6], images[:6], true_renders(z[:6], spec.style)])
    verdict = judge_images(images, faces, z, spec.style)
    (out / "verdict.json").write_text(json.dumps(verdict, indent=1))
    return verdict


@torch.no_grad()
def judge_images(images: torch.Tensor, faces: torch.Tensor, z: torch.Tensor, style: str) -> dict:
    """The strict judge on images [N, 3, 64, 64] made from the toy generator's faces of latents z: style rate, none,
    content kept, diversity (as for an adaptation) and the stroke distance to the true renders of ``style``."""
    from nada.toy.evaluator import load_evaluator
    from nada.toy.judge import paired_fidelity
    from nada.toy.quality import quality_from_images

    evaluator = load_evaluator()
    report = quality_from_images(evaluator, faces, images, style)
    fid = paired_fidelity(faces, images, z, style)
    return {
        "target_rate": report.target_rate,
        "none": report.reject_rate,
        "content": report.content_kept,
        "per_key": report.content_per_key,
        "diversity": report.diversity_ratio,
        "stroke": fid["adapted"]["stroke"],
        "stroke_unadapted": fid["unadapted"]["stroke"],
        "stroke_best_filter": fid["best_filter"]["stroke"],
    }


def fit(spec: Pass, out: Path, iterations: int, lr: float, seed: int = 1) -> dict:
    """The oracle's procedure (`bench_toy_guidance.oracle_finetune`) with the prior's translations of the frozen
    generator's own faces as targets in place of the true renders; judged on the 128 judged latents (the training
    latents are drawn from ``seed``, never those)."""
    from bench_toy_guidance import oracle_finetune
    from nada.generator.checkpoints import load_generator
    from nada.toy.judge import true_renders
    from nada.toy.quality import latents, render_pairs

    run, style = spec.load(), spec.style
    G0 = load_generator("toy").eval().requires_grad_(False)

    def targets(z: torch.Tensor, step: int) -> torch.Tensor:
        with torch.no_grad():
            return run(G0(z, noise_mode="const"), step)

    z = latents(G0, 128, 0)
    G = oracle_finetune(G0, z, style, iterations, lr, seed=seed, targets=targets)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(G.state_dict(), out / "generator.pt")
    faces, images = render_pairs(G0, G, 128)
    verdict = judge_images(images, faces, z, style)
    (out / "verdict.json").write_text(json.dumps(verdict, indent=1))
    save_rows(out / "six.png", [faces[:6], images[:6], true_renders(z[:6], style)])
    return verdict


def _pass_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a DDIM pass through the prior (``translate`` and ``fit``)."""
    parser.add_argument("--prior", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--t0", type=float, default=Pass.t0, help="the noise level the faces are taken to")
    parser.add_argument("--cfg", type=float, default=Pass.cfg, help="guidance towards the style")
    parser.add_argument("--steps", type=int, default=Pass.steps, help="DDIM steps from t0 to 0")
    parser.add_argument("--style", default=Pass.style)
    parser.add_argument("--annotator", type=Path, help="the part annotator (priors conditioned on part maps)")
    parser.add_argument("--luma-guidance", action="store_true", help="guide the luminance only, keep the colour")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``train``, ``translate``, ``adapt`` (arguments after ``--`` go to `nada adapt`) or ``fit``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train or resume the prior")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--minutes", type=float, default=60.0)
    tr.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
    tr.add_argument("--map", choices=sorted(MAP_CHANNELS), default="outline", help="what the prior is conditioned on")
    tr.add_argument("--predicts", choices=("eps", "x0"), default="eps", help="the network's estimate: noise or image")
    tr.add_argument("--t-range", type=float, nargs=2, default=(0.0, 1.0), help="the noise levels it is trained on")
    an = sub.add_parser("train-annotator", help="train or resume the part annotator")
    an.add_argument("--out", type=Path, required=True)
    an.add_argument("--minutes", type=float, default=10.0)
    an.add_argument("--map", choices=("parts", "parts_hair"), default="parts", help="what it reads")
    _pass_arguments(sub.add_parser("translate", help="judged DDIM translations of the judged faces"))
    ad = sub.add_parser("adapt", help="nada adapt with the structure-conditioned delta denoising term")
    ad.add_argument("--prior", type=Path, required=True)
    ad.add_argument("--annotator", type=Path, help="the part annotator (priors conditioned on part maps)")
    ad.add_argument("--weight", type=float, default=0.02)
    ad.add_argument("--cfg", type=float, default=3.0)
    ad.add_argument("--t-range", type=float, nargs=2, default=(0.2, 0.7))
    ad.add_argument("--source-style", default="photo")
    ad.add_argument("--target-style", default="sketch")
    ad.add_argument("adapt_args", nargs=argparse.REMAINDER)
    ft = _pass_arguments(sub.add_parser("fit", help="fine-tune the generator on the prior's passes over its faces"))
    ft.add_argument("--iterations", type=int, default=300)
    ft.add_argument("--lr", type=float, default=0.005)
    ft.add_argument("--seed", type=int, default=1, help="seed of the training latents and batches (never the judged)")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.out, args.minutes, bf16=args.bf16, map_kind=args.map, predicts=args.predicts, t_range=args.t_range)
        return 0
    if args.command == "train-annotator":
        train_annotator(args.out, args.minutes, args.map)
        return 0
    if args.command in ("translate", "fit"):
        spec = Pass(args.prior, args.t0, args.cfg, args.steps, args.style, args.annotator, args.luma_guidance)
        if args.command == "fit":
            print(json.dumps(fit(spec, args.out, args.iterations, args.lr, args.seed)))
        else:
            print(json.dumps(translate_judged(spec, args.out)))
        return 0
    from nada.frontends.cli import main as nada_main

    model, styles = load_prior(args.prior), (args.source_style, args.target_style)
    term = StructureDelta(model, *styles, args.cfg, tuple(args.t_range), map_reader(model, args.annotator))
    with with_direction_term(term, args.weight):
        return nada_main(["adapt", *[a for a in args.adapt_args if a != "--"]])


if __name__ == "__main__":
    sys.exit(main())
