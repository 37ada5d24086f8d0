"""CLIP names: the OpenAI and open_clip naming rules, the registry of named CLIPs, and "a,b:2,c" model lists.

A package adds a CLIP under a short name with `register_clip`, usually from its `nada.plugins` entry
point (the toy world registers its tiny CLIPs so); `nada.guidance.clip.load_clip` looks registered
names up first. The registry loads the plugins before its first lookup.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nada.errors import NadaError
from nada.plugins import load_plugins, register

if TYPE_CHECKING:
    import torch

    from nada.guidance.clip_model import ClipModel

# OpenAI release name -> open_clip architecture trained by OpenAI (loaded with QuickGELU).
OPENAI_MODELS: dict[str, str] = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
OPEN_CLIP_PREFIX = "open_clip:"

# loader(name, device, antialias, precision) -> a frozen ClipModel
ClipLoader = Callable[[str, "str | torch.device", bool, str], "ClipModel"]


@dataclass(frozen=True)
class RegisteredClip:
    """A CLIP known by a short name: how to load it, and a few words for listings."""

    name: str
    loader: ClipLoader
    description: str = ""


_REGISTRY: dict[str, RegisteredClip] = {}


def register_clip(name: str, loader: ClipLoader, description: str = "", replace: bool = False) -> None:
    """Make ``name`` loadable by `load_clip` through ``loader``; registering a taken name needs ``replace``."""
    if not name or name != name.strip() or "," in name or name in OPENAI_MODELS or name.startswith(OPEN_CLIP_PREFIX):
        raise NadaError(f"cannot register a CLIP as {name!r}: choose a short name that is no OpenAI or open_clip name")
    register(_REGISTRY, name, RegisteredClip(name, loader, description), "a CLIP named", replace)


def registered_clip(name: str) -> RegisteredClip | None:
    """The registered CLIP of that name, or None (plugins are loaded first)."""
    load_plugins()
    return _REGISTRY.get(name)


def registered_clip_names() -> list[str]:
    """Every registered CLIP name, in registration order (plugins are loaded first)."""
    load_plugins()
    return list(_REGISTRY)


def model_tag(name: str) -> tuple[str, str] | None:
    """The open_clip (model, tag) pair of an OpenAI or 'open_clip:MODEL/TAG' name; None for any other name."""
    if name in OPENAI_MODELS:
        return f"{OPENAI_MODELS[name]}-quickgelu", "openai"
    model, sep, tag = name[len(OPEN_CLIP_PREFIX) :].partition("/")
    return (model, tag) if name.startswith(OPEN_CLIP_PREFIX) and sep and model and tag else None


def valid_names_hint() -> str:
    """One sentence listing every form of CLIP name that ``load_clip`` accepts."""
    registered = "".join(f"{n!r}, " for n in registered_clip_names())
    return (
        f"use one of {', '.join(OPENAI_MODELS)}, {registered}'open_clip:MODEL/TAG' "
        "(pairs from open_clip.list_pretrained(), e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'), "
        "or the path of a weights file or model folder"
    )


def parse_clip_spec(spec: str) -> list[tuple[str, float]]:
    """``"ViT-B/32,ViT-B/16:0.5"`` -> ``[("ViT-B/32", 1.0), ("ViT-B/16", 0.5)]`` (weight 1 when omitted)."""
    entries: list[tuple[str, float]] = []
    for item in str(spec).split(","):
        item = item.strip()
        if item:
            entries.append(_parse_entry(spec, item, [n for n, _ in entries]))
    if not entries:
        raise NadaError(
            f"bad CLIP model list {spec!r}: it names no model (write e.g. 'ViT-B/32' or 'ViT-B/32,ViT-B/16:0.5')"
        )
    return entries


def _parse_entry(spec: str, item: str, seen: list[str]) -> tuple[str, float]:
    """One ``NAME[:WEIGHT]`` item of a model list, checked against the names before it."""
    name, weight = item, 1.0
    head, sep, tail = item.rpartition(":")
    if sep:  # a trailing ":<number>" is a weight; other colons belong to the name ("open_clip:...").
        try:
            weight, name = float(tail), head.strip()
        except ValueError:
            pass
    if not name:
        raise NadaError(f"bad CLIP model list {spec!r}: {item!r} names no model (write e.g. 'ViT-B/32:1.0')")
    if not (math.isfinite(weight) and weight > 0):
        raise NadaError(f"bad CLIP model list {spec!r}: the weight of {name!r} must be a positive number")
    if name in seen:
        raise NadaError(f"bad CLIP model list {spec!r}: {name!r} appears twice (give each model once, with one weight)")
    return name, weight
