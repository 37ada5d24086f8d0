"""The toy world's image translator: a denoising prior that redraws a face in a style, conditioned on its part map.

Two small UNets, trained on renders of all six styles (`nada.toy.translator_train`; never a photo and its
drawing together):

- `PartReader` reads a face's map from an image of any style: the coverage of each part group
  (`nada.toy.render.PART_GROUPS`) and the hair colour on the hair (`face_maps`), as segmentation or edge detectors
  condition real image priors.
- `PartPrior` estimates the clean image of a noisy one for a style (or none) and a face map, on the noise band
  [0.2, 0.9] the translation starts from.

`ToyTranslator` noises the frozen generator's faces to t0 and denoises them as the target style in a few DDIM
steps with classifier-free guidance, each conditioned on its own face map read by the reader: drawings of the
same faces (docs/toy_quality.md, "A prior that sees the face's parts"). Registered as the translator "toy" for
`nada adapt --translator toy` (`nada.guidance.translators`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nada.errors import NadaError, one_line
from nada.toy import render as R
from nada.weights.safe_load import torch_load

UNCONDITIONED = len(R.STYLES)  # the class index of "no style given"
MAP_CHANNELS = len(R.PART_GROUPS) + 3  # part-group coverage, then the hair colour (RGB) on the hair
PRIOR_FILE, READER_FILE = "prior.pt", "reader.pt"


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Cosine noise schedule: the signal's share of variance at times t in [0, 1]."""
    return torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [N, dim] of times t [N] in [0, 1]."""
    freqs = torch.exp(-math.log(10000) * torch.arange(dim // 2, dtype=torch.float32, device=t.device) / (dim // 2))
    angles = t[:, None].float() * 1000 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a scale and shift from the time-and-style embedding."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, 1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small UNet: [N, in_channels, 64, 64] at times t [N] for conditions y, style indices [N] (``text_dim`` 0;
    UNCONDITIONED: none) or unit text features [N, text_dim] (zero rows: none) -> [N, out_channels, 64, 64]."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: Sequence[int] = (32, 64, 96, 128),
        emb: int = 128,
        text_dim: int = 0,
    ) -> None:
        super().__init__()
        self.emb = emb
        self.time = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.style = nn.Linear(text_dim, emb) if text_dim else nn.Embedding(UNCONDITIONED + 1, emb)
        self.inp = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        widths = [channels[0], *channels]
        self.down = nn.ModuleList(ResBlock(a, b, emb) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = ResBlock(channels[-1], channels[-1], emb)
        ups, c = [], channels[-1]
        for skip in reversed(channels):
            ups.append(ResBlock(c + skip, skip, emb))
            c = skip
        self.up = nn.ModuleList(ups)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.inp.in_channels and x.shape[-1] % 8 == 0, x.shape
        e = F.silu(self.time(time_features(t, self.emb)) + self.style(y))
        h, skips = self.inp(x), []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, e)
        for block, skip in zip(self.up, reversed(skips)):
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skip], 1), e)
        return self.out(h)


def face_maps(faces: R.FaceParams) -> torch.Tensor:
    """The face maps the reader learns, [N, MAP_CHANNELS, 64, 64] in [0, 1]: each part group's visible coverage
    (photo-aligned, the same for every style), then the face's hair colour times the hair's coverage."""
    parts = torch.from_numpy(R.part_maps(faces))
    hair = torch.from_numpy(R.hair_rgb(faces))[:, :, None, None] * parts[:, :1]
    return torch.cat([parts, hair], 1)


NO_MAP = -2.0  # outside the maps' range [-1, 1]: "no face map given" (the prior is trained with it 10 % of the time)


class PartPrior(nn.Module):
    """Clean-image estimate [N, 3, 64, 64] in about [-1, 1] of x_t [N, 3, 64, 64] at times t [N], for style
    indices y [N] (UNCONDITIONED: none) and face maps s [N, MAP_CHANNELS, 64, 64] in [-1, 1] (all NO_MAP: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(3 + MAP_CHANNELS, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3 and s.shape[1] == MAP_CHANNELS and x.shape[-2:] == s.shape[-2:], (x.shape, s.shape)
        return self.net(torch.cat([x, s], 1), t, y)

    def noise(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The noise [N, 3, H, W] of x_t implied by the clean-image estimate (what a DDIM step takes)."""
        ab = alpha_bar(t)[:, None, None, None]
        return (x - ab.sqrt() * self(x, t, y, s).float()) / (1 - ab).sqrt()


class PartReader(nn.Module):
    """Face maps [N, MAP_CHANNELS, 64, 64] in [-1, 1] (as `face_maps`, rescaled) of images [N, 3, 64, 64] in
    [-1, 1] of any style."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(3, MAP_CHANNELS)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel logits [N, MAP_CHANNELS, H, W] of the maps in [0, 1]."""
        n = x.shape[0]
        return self.net(x, torch.zeros(n, device=x.device), torch.full((n,), UNCONDITIONED, device=x.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x)) * 2 - 1


@torch.no_grad()
def ddim_pass(
    images: torch.Tensor,
    t0: float,
    steps: int,
    noise_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int = 0,
) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] noised to t0 (noise drawn on the CPU from ``seed``) and denoised to t = 0 by
    ``steps`` deterministic DDIM steps of the noise prediction noise_of(x_t, t): [N, 3, H, W], near [-1, 1]."""
    ab = alpha_bar(torch.tensor(t0))
    drawn = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.device)
    x = ab.sqrt() * images + (1 - ab).sqrt() * drawn
    times = torch.linspace(t0, 0.0, steps + 1)
    for now, after in zip(times[:-1].tolist(), times[1:].tolist()):
        t = torch.full((len(x),), now, device=x.device)
        predicted = noise_of(x, t)
        ab_now, ab_after = alpha_bar(t)[:, None, None, None], alpha_bar(torch.tensor(after))
        clean = ((x - (1 - ab_now).sqrt() * predicted) / ab_now.sqrt()).clamp(-1, 1)
        x = ab_after.sqrt() * clean + (1 - ab_after).sqrt() * predicted
    return x


@dataclass(frozen=True)
class PassSettings:
    """A translation pass: noise to t0, then ``steps`` DDIM steps at classifier-free guidance ``cfg`` (chosen for
    sketch on validation latents, docs/toy_quality.md "The toy translator")."""

    t0: float = 0.7
    cfg: float = 2.0
    steps: int = 5


class ToyTranslator:
    """Redraws toy faces [N, 3, 64, 64] in [-1, 1] as ``style``: translate(images, seed) -> [N, 3, 64, 64] in
    [-1, 1], each conditioned on the face map its reader sees in the input."""

    def __init__(self, prior: PartPrior, reader: PartReader, style: str, settings: PassSettings = PassSettings()):
        if style not in R.STYLES:
            raise NadaError(f"the toy translator draws {', '.join(R.STYLES)}; {style!r} is none of them")
        self.prior, self.reader, self.style, self.settings = prior, reader, R.STYLES.index(style), settings

    def guided_noise(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Noise [N, 3, H, W] of x_t guided towards the style (weight cfg), the face maps s always given."""
        n = len(x)
        y = torch.tensor([self.style] * n + [UNCONDITIONED] * n, device=x.device)
        cond, uncond = self.prior.noise(torch.cat([x, x]), torch.cat([t, t]), y, torch.cat([s, s])).chunk(2)
        return uncond + self.settings.cfg * (cond - uncond)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1:] == (3, R.IMAGE_SIZE, R.IMAGE_SIZE), images.shape
        s = self.reader(images)
        p = self.settings
        return ddim_pass(images, p.t0, p.steps, lambda x, t: self.guided_noise(x, t, s), seed).clamp(-1, 1)


def default_assets() -> Path:
    """Where the shipped translator's two networks live inside the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "toy" / "translator"


def load_network(path: str | os.PathLike, model: nn.Module, what: str) -> nn.Module:
    """``model`` with the weights of ``path`` (a plain state dict, any float type, or a training state holding one
    under "model"), frozen in eval mode; a file that does not fit is one NadaError line."""
    payload: Any = torch_load(path, what=what, fix="train it again with python -m nada.toy.translator_train")
    state = payload.get("model", payload) if isinstance(payload, dict) else payload
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as e:
        raise NadaError(f"{what} {path} does not fit the architecture ({one_line(e, typed=True)})") from None
    return model.eval().requires_grad_(False)


def load_toy_translator(source: str, target: str, device: "str | torch.device" = "cpu") -> ToyTranslator:
    """The shipped translator, drawing toy faces (``source`` is what the generator makes) as ``target``."""
    folder = default_assets()
    prior = load_network(folder / PRIOR_FILE, PartPrior(), "toy translator prior")
    reader = load_network(folder / READER_FILE, PartReader(), "toy translator reader")
    return ToyTranslator(prior.to(device), reader.to(device), target.strip())
