"""Profiles: what each registered base generator brings besides its weights, as data.

A `Profile` holds a base's adaptation defaults (`AdaptConfig` options that override the config's own
defaults), how photos are inverted into it (its own perceptual distance, whether the face identity
loss applies, how photos are aligned) and an optional quality judge run after `nada adapt`.
`nada.config.resolve` applies a base's profile between the AdaptConfig defaults and a preset's
recipe. Core registers the real-world bases below with the paper's settings; a plugin (see
`nada.plugins`) registers its own with `register_profile`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nada.errors import NadaError
from nada.generator.checkpoints import read_metadata
from nada.plugins import load_plugins, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nada.generator.networks import Generator

# The training command of the official README (rinongal/StyleGAN-nada): two CLIPs, adaptive layer
# selection over every W+ row of a 1024px generator, 301 iterations.
PAPER_RECIPE: tuple[tuple[str, Any], ...] = (
    ("clip", "ViT-B/32,ViT-B/16"),
    ("layers", "auto:18"),
    ("iterations", 301),
    ("batch_size", 2),
    ("lr", 0.002),
    ("mixing_prob", 0.0),
)

# A judge scores an adapted generator: (resolved AdaptConfig, adapted generator, run folder) -> summary lines.
# The config is typed Any because nada.config reads the profiles: this module stays below it.
Judge = Callable[[Any, "Generator", Path], list[str]]
# A perceptual distance for inversion: (name shown to users, loader taking a device).
Perceptual = tuple[str, Callable[["torch.device | str"], "nn.Module"]]


@dataclass
class WorldJudges:
    """The networks `nada eval` scores a world's images with, in place of LPIPS, ArcFace and Inception."""

    distance: "nn.Module"  # perceptual distance x, y -> [N] for diversity
    distance_name: str
    fid_feature: "nn.Module"  # torchmetrics feature network: uint8 [N, 3, H, W] -> [N, E]
    fid_name: str
    identity_note: str  # why the identity metric is not measured in this world
    # (source text, target text, base images, adapted images [N, 3, H, W] in [-1, 1], their latents z
    # [N, style_dim] (row i of both images comes from z[i]), truncation psi) -> metrics, or None
    quality: Callable[[str, str, "torch.Tensor", "torch.Tensor", "torch.Tensor", float], dict[str, Any] | None]
    quality_note: str = ""  # what the quality metrics compare with and leave out; printed and kept in the report


@dataclass(frozen=True)
class EvalWorld:
    """How `nada eval` and `nada sweep` judge a base's own world: judge CLIPs, networks and extra metrics."""

    name: str  # the report's world, and the key of its quality metrics in each model's row
    judge_candidates: tuple[str, ...]  # judge CLIPs, most independent first
    load: Callable[["torch.device"], WorldJudges]
    # (quality key, table header, format) for `nada eval`; a key may name a nested value ("fidelity.adapted.stroke")
    columns: tuple[tuple[str, str, str], ...] = ()
    sheet: tuple[tuple[str, str], ...] = ()  # (quality key, short label) for the sweep's contact sheet


@dataclass(frozen=True)
class Profile:
    """A base generator's defaults: adaptation options, inversion losses, alignment and an optional judge."""

    base: str
    adapt: tuple[tuple[str, Any], ...] = ()  # AdaptConfig field -> value, applied over AdaptConfig's defaults
    perceptual: Perceptual | None = None  # its own inversion distance instead of LPIPS; None: LPIPS
    identity: bool = True  # whether the ArcFace identity loss applies to its images (human faces only)
    alignment: str = "ffhq"  # how photos are aligned before inversion ("ffhq" or "none")
    judge: Judge | None = None  # run after `nada adapt`; prints its summary lines
    evaluation: EvalWorld | None = None  # None: `nada eval` uses the real-world judges
    description: str = ""

    def options(self) -> dict[str, Any]:
        """The adaptation options as a dict (AdaptConfig field -> value)."""
        return dict(self.adapt)


_PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile, replace: bool = False) -> Profile:
    """Make `profile` the profile of its base; NadaError if the base has one already (unless `replace`)."""
    return register(_PROFILES, profile.base, profile, "a profile for base", replace)


def known_profiles() -> list[str]:
    """Bases that have a profile, sorted."""
    load_plugins()
    return sorted(_PROFILES)


def get_profile(base: str) -> Profile | None:
    """The profile registered for the base name `base`, None when it has none."""
    load_plugins()
    return _PROFILES.get(str(base))


def profile_base(generator: str, depth: int = 4) -> str | None:
    """The registered base a generator source stands for: itself, or the base a nada checkpoint's metadata names."""
    load_plugins()
    generator = str(generator)
    if generator in _PROFILES:
        return generator
    if depth == 0 or not generator or not Path(generator).expanduser().is_file():
        return None

    try:
        meta = read_metadata(Path(generator).expanduser())
    except NadaError:  # rosinality/NVlabs files carry no metadata
        return None
    for key in ("base_model", "base"):  # adapted checkpoints record base_model; trained bases record base
        if isinstance(meta.get(key), str) and meta[key] != generator:
            found = profile_base(meta[key], depth - 1)
            if found is not None:
                return found
    return None


def profile_for(generator: str) -> Profile | None:
    """The profile of a registered name or of a nada checkpoint whose metadata names a registered base."""
    base = profile_base(generator)
    return None if base is None else _PROFILES[base]


def eval_worlds() -> list[EvalWorld]:
    """Every registered evaluation world (the profiles' `evaluation`), each once."""
    load_plugins()
    worlds = {p.evaluation.name: p.evaluation for p in _PROFILES.values() if p.evaluation is not None}
    return list(worlds.values())


def eval_world(name: str) -> EvalWorld | None:
    """The evaluation world called `name`, None for the real world or an unknown name."""
    return next((w for w in eval_worlds() if w.name == name), None)


def _paper(base: str, rows: int) -> Profile:
    """The paper's settings for a real-world base whose generator has `rows` W+ rows."""
    adapt = tuple((k, f"auto:{rows}" if k == "layers" else v) for k, v in PAPER_RECIPE)
    return Profile(base, adapt, description="StyleGAN-NADA's published settings")


# Registered real-world bases and the number of W+ rows of their generators (2 log2(size) - 2).
for _base, _rows in (
    ("ffhq", 18),
    ("ffhq-nvlabs", 18),
    ("ffhq1024", 18),
    ("metfaces", 18),
    ("ffhq512", 16),
    ("afhqcat", 16),
    ("afhqdog", 16),
    ("afhqwild", 16),
    ("brecahad", 16),
    ("ffhq256", 14),
    ("celebahq256", 14),
    ("lsundog256", 14),
):
    register_profile(_paper(_base, _rows))
