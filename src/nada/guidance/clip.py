"""Frozen CLIP models for the NADA losses by name: `load_clip`, `load_clip_ensemble`, `build_random_clip`.

``load_clip(name, device)`` understands:

- a registered name (`nada.guidance.clip_specs.register_clip`), such as the toy world's ``"toy"``;
- OpenAI release names (``"ViT-B/32"``, ``"ViT-B/16"``, ``"RN50"``, ...). They load as open_clip's
  ``<arch>-quickgelu`` models with the ``openai`` weights: QuickGELU is the activation OpenAI trained
  with, so the features equal those of OpenAI's own code.
- ``"open_clip:MODEL/TAG"``, any pair listed by ``open_clip.list_pretrained()``.
- a path to a weights file in OpenAI's state-dict layout (``.pt``, ``.pth``, ``.bin``, ``.safetensors``);
  the architecture is read from the tensor shapes.
- a path to a folder holding an open_clip config JSON and a weights file.

Where weights come from and how they are read safely is `nada.guidance.clip_weights`.

The model wrapper and its differentiable preprocessing are `nada.guidance.clip_model`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nada.errors import NadaError
from nada.guidance import clip_weights
from nada.guidance.clip_model import (  # the wrapper's names stay importable from here, as the docs use them
    OPENAI_MEAN,
    OPENAI_STD,
    PRECISIONS,
    ClipModel,
    ClipPreprocess,
    as_pair,
    preprocess_images,
    resize_by_matmul,
    wrap_clip,
)
from nada.guidance.clip_specs import (
    OPEN_CLIP_PREFIX,
    OPENAI_MODELS,
    model_tag,
    parse_clip_spec,
    registered_clip,
    valid_names_hint,
)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PRECISIONS",
    "ClipModel",
    "ClipPreprocess",
    "as_pair",
    "build_random_clip",
    "load_clip",
    "load_clip_ensemble",
    "parse_clip_spec",
    "preprocess_images",
    "resize_by_matmul",
    "wrap_clip",
]


# ---------------------------------------------------------------- loading


def load_clip(
    name: str, device: str | torch.device = "cpu", antialias: bool = True, precision: str = "fp32"
) -> ClipModel:
    """Load a frozen CLIP by name or path (see the module docstring) onto ``device``."""
    if precision not in PRECISIONS:
        raise NadaError(f"unknown CLIP precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    name = str(name).strip()
    registered = registered_clip(name)
    if registered is not None:
        return registered.loader(name, device, antialias, precision)
    pair = model_tag(name)
    if pair is not None:
        return clip_weights.load_pretrained(*pair, name, device, antialias, precision)
    if name.startswith(OPEN_CLIP_PREFIX):
        raise NadaError(
            f"bad open_clip model {name!r}: write 'open_clip:MODEL/TAG', e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'"
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return clip_weights.load_clip_folder(path, device, antialias, precision)
    if path.is_file():
        return clip_weights.load_clip_openai_file(path, device, antialias, precision)
    if name.endswith(WEIGHT_SUFFIXES) or name.startswith((".", "/", "~")) or "\\" in name:
        raise NadaError(f"CLIP weights {name!r} not found: check the path")
    raise NadaError(f"unknown CLIP model {name!r}: {valid_names_hint()}")


def load_clip_ensemble(
    spec: str, device: str | torch.device = "cpu", antialias: bool = True, precision: str = "fp32"
) -> list[tuple[ClipModel, float]]:
    """Load every model of ``"NAME[:WEIGHT],..."``; returns ``[(ClipModel, weight), ...]`` in spec order."""
    return [(load_clip(name, device, antialias=antialias, precision=precision), w) for name, w in parse_clip_spec(spec)]


def build_random_clip(
    name: str, device: str | torch.device = "cpu", seed: int = 0, antialias: bool = True, precision: str = "fp32"
) -> ClipModel:
    """The architecture of an OpenAI name or ``open_clip:MODEL[/TAG]`` with seeded random weights (benchmarks,
    tests)."""
    import open_clip

    if name in OPENAI_MODELS:
        model_name = f"{OPENAI_MODELS[name]}-quickgelu"
    elif name.startswith(OPEN_CLIP_PREFIX):
        model_name = name[len(OPEN_CLIP_PREFIX) :].partition("/")[0]
    else:
        raise NadaError(
            f"no architecture known for {name!r}: use one of {', '.join(OPENAI_MODELS)} or 'open_clip:MODEL'"
        )
    if model_name not in open_clip.list_models():
        raise NadaError(f"unknown open_clip model {model_name!r}: see open_clip.list_models()")
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(seed)
        net = open_clip.create_model(model_name, pretrained=None, device="cpu")
    pp = ClipPreprocess.from_open_clip(net.visual.preprocess_cfg)
    return wrap_clip(net, open_clip.get_tokenizer(model_name), pp, f"{name} (random)", device, antialias, precision)
