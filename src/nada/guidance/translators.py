"""Image translators: models that redraw a generated image in the target domain, as targets for the generator.

A translator is the image-to-image counterpart of CLIP guidance: given the frozen generator's images and the
source and target texts, it returns the same images redrawn in the target domain (an image-conditioned diffusion
pass such as SDEdit with an edge or segmentation condition is the usual kind). `nada adapt --translator NAME
--lambda-translate W` then pulls the trained generator's images of the same latents towards those drawings
(`nada.guidance.losses.translation_loss`): no image of the target domain is needed, only the translator.

A package adds one under a short name with `register_translator`, usually from its `nada.plugins` entry point
(the toy world registers its part-conditioned prior so); the registry loads the plugins before its first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nada.errors import NadaError
from nada.plugins import load_plugins, register

if TYPE_CHECKING:
    import torch

# translate(images [N, 3, H, W] in [-1, 1], seed) -> images [N, 3, H, W] in [-1, 1] in the target domain; the seed
# draws whatever noise the translation uses, so a run's targets repeat on resume.
Translate = Callable[["torch.Tensor", int], "torch.Tensor"]
# loader(source text, target text, device) -> a Translate for that pair of domains
TranslatorLoader = Callable[[str, str, "str | torch.device"], Translate]


@dataclass(frozen=True)
class RegisteredTranslator:
    """A translator known by a short name: how to load it for a pair of domains, and a few words for listings."""

    name: str
    loader: TranslatorLoader
    description: str = ""


_REGISTRY: dict[str, RegisteredTranslator] = {}


def register_translator(name: str, loader: TranslatorLoader, description: str = "", replace: bool = False) -> None:
    """Make ``name`` loadable by `load_translator` through ``loader``; registering a taken name needs ``replace``."""
    if not name or name != name.strip() or "," in name:
        raise NadaError(f"cannot register a translator as {name!r}: choose a short name without commas or spaces")
    register(_REGISTRY, name, RegisteredTranslator(name, loader, description), "a translator named", replace)


def registered_translators() -> list[RegisteredTranslator]:
    """Every registered translator, in registration order (plugins are loaded first)."""
    load_plugins()
    return list(_REGISTRY.values())


def check_translator(name: str) -> None:
    """NadaError naming the registered translators when ``name`` is none of them."""
    load_plugins()
    if name not in _REGISTRY:
        known = ", ".join(_REGISTRY) or "none (a plugin registers them)"
        raise NadaError(f"unknown translator {name!r}: registered translators are {known}")


def load_translator(name: str, source: str, target: str, device: "str | torch.device" = "cpu") -> Translate:
    """The translator ``name`` set up to redraw ``source`` images as ``target`` on ``device``."""
    check_translator(name)
    return _REGISTRY[name].loader(source, target, device)
