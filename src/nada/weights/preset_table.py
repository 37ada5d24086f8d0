"""The table of presets: named adapted generators (base model + source -> target domain + recipe).

A `Preset` names its base generator (a `nada.weights.registry` name), the source and target texts, the
adaptation options (`AdaptConfig` fields, the recipe) and where its weights come from. The table sits
below `nada.config`, whose `resolve` reads a preset's recipe from it; `nada.weights.presets` finds,
downloads, packs and loads the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nada.errors import NadaError
from nada.plugins import load_plugins, register
from nada.profiles import PAPER_RECIPE
from nada.weights.download import WeightsSource, cache_dir

NADA_MODELS_REPO = "rinong/stylegan-nada-models"
NADA_MODELS_REVISION = "d1d03db8190a4867e9278aa8bdea3c121fa5742e"  # "Upload pixar.pt", 18 May 2022
NADA_MODEL_BYTES = 132724587  # every file of that repository has this size (its LFS pointers say so)

# The official README's training command, as AdaptConfig options (the recipe of the released presets).
OFFICIAL_RECIPE: tuple[tuple[str, Any], ...] = PAPER_RECIPE


@dataclass(frozen=True)
class Preset:
    """An adapted generator by name: base, source -> target, recipe (AdaptConfig options)
    and weights (None: train on demand)."""

    name: str
    base: str
    source: str
    target: str
    options: tuple[tuple[str, Any], ...] = ()
    weights: WeightsSource | None = None
    description: str = ""

    @property
    def domain(self) -> str:
        return f"{self.source} -> {self.target}"


def _nada(name: str, filename: str, source: str, target: str, sha256: str | None, description: str) -> Preset:
    weights = WeightsSource(
        filename, hf_repo=NADA_MODELS_REPO, hf_revision=NADA_MODELS_REVISION, sha256=sha256, size=NADA_MODEL_BYTES
    )
    return Preset(name, "ffhq", source, target, OFFICIAL_RECIPE, weights, description)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _nada("ffhq-sketch", "sketch.pt", "photo", "sketch", None, "pencil sketches (StyleGAN-NADA release)"),
        _nada(
            "ffhq-pixar",
            "pixar.pt",
            "photo",
            "Pixar character",
            "e690afbf1518362220e663f3db74b40f40667f13daab7689d86e90035d8d537f",
            "3D animated characters (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-anime",
            "anime.pt",
            "photo",
            "anime painting",
            "1424d2a668f7b97ee4b993c5bf5fa4eaeff9250a514d5e5e3050d52c0315f1fb",
            "anime faces (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-joker",
            "joker.pt",
            "person",
            "the Joker",
            "9a00c9664d1862a22e448b0aae4fc975978c4b2a13e0f800c777f1b9bbbec827",
            "Joker make-up (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-ukiyoe",
            "ukiyoe.pt",
            "photo",
            "Ukiyo-e painting",
            "220fedd0fd51f965d9b166978ba41602146cc8f84b617066b3d45c7fab2e43a8",
            "Japanese woodblock prints (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-botero",
            "botero.pt",
            "photo",
            "Botero painting",
            "a4954705a6b7565e07b7ba70fca255058dec8c5f89ea94b99d6b672ffedee932",
            "Fernando Botero's style (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-shrek",
            "shrek.pt",
            "person",
            "Shrek",
            "b92a8e5912d1e369f0611eccd0ed06034d4e52486b6926ab5c6810259ab90951",
            "ogres (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-ghibli",
            "ghibli.pt",
            "photo",
            "Studio Ghibli character",
            "94c25e6a83a14fb90e6f39741f93eb7217dbbe357abc37619955c102a899a075",
            "Ghibli animation (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-elf",
            "elf.pt",
            "human",
            "elf",
            "2965fd5d0dda16a70f8a53a44f108a7bf601b01790f797cd72fc0ea3e3274c43",
            "elves (StyleGAN-NADA release)",
        ),
        _nada(
            "ffhq-super-saiyan",
            "ssj.pt",
            "person",
            "Super Saiyan",
            "713a5da9fa3459bf8d1eeb2d6d9527725e32405e58ce741e7b5fc8da5c018f8e",
            "Dragon Ball hair (StyleGAN-NADA release)",
        ),
        Preset(
            "ffhq-werewolf",
            "ffhq",
            "human",
            "werewolf",
            OFFICIAL_RECIPE,
            None,
            "werewolves (paper example; train on demand)",
        ),
        Preset("ffhq-zombie", "ffhq", "human", "zombie", OFFICIAL_RECIPE, None, "zombies (train on demand)"),
        Preset(
            "afhqdog-nicolas-cage",
            "afhqdog",
            "dog",
            "Nicolas Cage",
            OFFICIAL_RECIPE,
            None,
            "dogs to Nicolas Cage (paper example; train on demand)",
        ),
    )
}


def register_preset(preset: Preset, replace: bool = False) -> Preset:
    """Add `preset` to the table; NadaError if another preset has its name (unless `replace`)."""
    return register(PRESETS, preset.name, preset, "a preset named", replace)


def known_presets() -> list[str]:
    """Preset names in table order (core presets, then the plugins')."""
    load_plugins()
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; NadaError listing the valid names otherwise."""
    load_plugins()
    preset = PRESETS.get(name)
    if preset is None:
        raise NadaError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)} (see `nada presets list`)")
    return preset


def trained_dir(name: str) -> Path:
    """Run folder of a preset trained on this machine: $NADA_CACHE/presets/<name>."""
    return cache_dir() / "presets" / name
