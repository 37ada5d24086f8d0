"""Prompt sets by name: the templates text directions average over, and the attribute groups the keep term reads.

Each template holds one ``{}`` that receives the class text (``"a sketch of a {}."`` -> ``"a sketch of a photo."``).
The ImageNet and part lists are data copied from the reference implementation, so text directions match it
exactly. Core registers "imagenet" and "plain" (the bare text); a plugin registers its own sets with
`register_prompt_set` (naming the CLIPs they were trained with, which "auto" then picks them for) and its
attribute groups with `register_attribute_groups`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nada.errors import NadaError
from nada.plugins import load_plugins

# CLIP's ImageNet zero-shot prompt ensemble, in the order the reference code averages them.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# Object-part prompts used by the patch losses (one text direction per part).
PART_TEMPLATES: tuple[str, ...] = (
    "the paw of a {}.",
    "the nose of a {}.",
    "the eye of the {}.",
    "the ears of a {}.",
    "an eye of a {}.",
    "the tongue of a {}.",
    "the fur of the {}.",
    "colorful {} fur.",
    "a snout of a {}.",
    "the teeth of the {}.",
    "the {}s fangs.",
    "a claw of the {}.",
    "the face of the {}",
    "a neck of a {}",
    "the head of the {}",
)


def compose(text: str, templates: Sequence[str] | None) -> list[str]:
    """Fill ``text`` into every template; ``templates=None`` gives the plain prompt ``[text]``."""
    if templates is None:
        return [text]
    return [template.format(text) for template in templates]


@dataclass(frozen=True)
class PromptSet:
    """Named templates (None: the bare text) and the CLIP names for which "auto" picks them."""

    name: str
    templates: tuple[str, ...] | None
    clips: frozenset[str] = frozenset()


_PROMPT_SETS: dict[str, PromptSet] = {}
_ATTRIBUTE_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {}
DEFAULT_PROMPT_SET = "imagenet"  # what "auto" means for CLIPs no registered set names


def register_prompt_set(name: str, templates: Sequence[str] | None, clips: Sequence[str] = ()) -> PromptSet:
    """Register templates under `name`; "auto" picks them when every guiding CLIP is one of `clips`."""
    if templates is not None and not all("{}" in t for t in templates):
        raise NadaError(f"prompt set {name!r}: every template needs one '{{}}' for the text")
    entry = PromptSet(name, None if templates is None else tuple(templates), frozenset(clips))
    _PROMPT_SETS[name] = entry
    return entry


def prompt_sets() -> list[str]:
    """Names of the registered prompt sets, in registration order."""
    load_plugins()
    return list(_PROMPT_SETS)


def get_prompt_set(name: str) -> tuple[str, ...] | None:
    """The templates of the prompt set `name` (None: the bare text); NadaError naming the valid sets."""
    load_plugins()
    if name not in _PROMPT_SETS:
        raise NadaError(f"unknown templates {name!r}: use auto or one of {', '.join(_PROMPT_SETS)}")
    return _PROMPT_SETS[name].templates


def prompt_set_for(clip_names: Sequence[str]) -> str:
    """The set "auto" means for these CLIPs: a set registered for all of them, else DEFAULT_PROMPT_SET."""
    load_plugins()
    for entry in _PROMPT_SETS.values():
        if entry.clips and clip_names and all(n in entry.clips for n in clip_names):
            return entry.name
    return DEFAULT_PROMPT_SET


def register_attribute_groups(name: str, groups: Mapping[str, Sequence[str]]) -> None:
    """Register named attributes (attribute -> its value prompts) that a keep spec "NAME" or "NAME:a,b" selects."""
    if any(len(values) < 2 for values in groups.values()):
        raise NadaError(f"attribute groups {name!r}: every attribute needs at least 2 value prompts")
    _ATTRIBUTE_GROUPS[name] = {k: tuple(v) for k, v in groups.items()}


def attribute_groups(spec: str) -> list[list[str]] | None:
    """The groups a keep spec "NAME" or "NAME:a,b" selects from a registered set; None when it names none."""
    load_plugins()
    head, _, rest = spec.partition(":")
    groups = _ATTRIBUTE_GROUPS.get(head.strip())
    if groups is None:
        return None
    names = [n.strip() for n in rest.split(",") if n.strip()] or list(groups)
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise NadaError(
            f"keep {spec!r} names unknown {head.strip()} attributes {unknown}: choose from {', '.join(groups)}"
        )
    return [list(groups[n]) for n in names]


register_prompt_set("imagenet", IMAGENET_TEMPLATES)
register_prompt_set("plain", None)
