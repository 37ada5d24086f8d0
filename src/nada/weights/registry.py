"""Generators known by name: a name such as "ffhq" stands for a weights file, packaged or downloaded on first use.

`GENERATORS` is the table (configs as data): each entry names its weights file through a
`nada.weights.download.WeightsSource`; plugins add theirs with `register_generator` (`nada.plugins`,
loaded before the first lookup). `resolve_generator(name)` returns the local, verified file
(downloading it into ``$NADA_CACHE/weights/<name>/`` on first use). ``nada.generator.checkpoints.load_generator``
calls it for every source that is not an existing path, so ``load_generator("ffhq")`` just works.

Addresses and checksums (checked while writing this table; a SHA-256 is recorded only where the host
publishes it, here the Git LFS pointers of Hugging Face repositories; ``None`` means unverified):

- ``ffhq``: rosinality's conversion of the official StyleGAN2 FFHQ 1024 config-f network,
  ``stylegan2-ffhq-config-f.pt``, the file the StyleGAN-NADA README links on Google Drive. Google Drive
  is not a stable download address, so the table uses a Hugging Face copy at a pinned commit whose LFS
  pointer gives SHA-256 bae494ef...d46e and 381,462,551 bytes; an independent upload of the same file
  (another repository) has the same SHA-256. It holds ``g``, ``d`` and ``g_ema``; nada reads ``g_ema``.
- NVlabs stylegan2-ada-pytorch snapshots from NVIDIA's public folder
  ``https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/`` (README "Data repository" and the
  ``resume_specs`` of its train.py). NVIDIA publishes no checksums for them: verification is skipped.
  The class-conditional ``cifar10.pkl`` is left out (nada's generators are unconditional).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nada.errors import NadaError
from nada.plugins import load_plugins, register
from nada.weights.download import WeightsSource, fetch, local_path

NVLABS_PRETRAINED = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"


@dataclass(frozen=True)
class RegisteredGenerator:
    """A generator known by name: its weights file, its output resolution and a one-line description."""

    name: str
    weights: WeightsSource
    resolution: int
    description: str


def _nvlabs(name: str, path: str, resolution: int, description: str) -> RegisteredGenerator:
    return RegisteredGenerator(
        name, WeightsSource(filename=path.rsplit("/", 1)[-1], url=NVLABS_PRETRAINED + path), resolution, description
    )


GENERATORS: dict[str, RegisteredGenerator] = {
    g.name: g
    for g in (
        RegisteredGenerator(
            "ffhq",
            WeightsSource(
                "stylegan2-ffhq-config-f.pt",
                hf_repo="akhaliq/OneshotCLIP-stylegan2-ffhq",
                hf_revision="024390a9508cb2d124dfaa8ec1caee3ad1a9da59",
                sha256="bae494ef77e32a9cd1792a81a3c167692a0e64f6bcd8b06592ff42917e2ed46e",
                size=381462551,
            ),
            1024,
            "FFHQ faces 1024, StyleGAN2 config-f in rosinality's layout: the base model of StyleGAN-NADA",
        ),
        _nvlabs("ffhq-nvlabs", "ffhq.pkl", 1024, "FFHQ faces 1024, original StyleGAN2 (NVlabs snapshot)"),
        _nvlabs("metfaces", "metfaces.pkl", 1024, "MetFaces art portraits 1024, ADA transfer from FFHQ (NVlabs)"),
        _nvlabs("afhqcat", "afhqcat.pkl", 512, "AFHQ cats 512, ADA from scratch (NVlabs)"),
        _nvlabs("afhqdog", "afhqdog.pkl", 512, "AFHQ dogs 512, ADA from scratch (NVlabs)"),
        _nvlabs("afhqwild", "afhqwild.pkl", 512, "AFHQ wild animals 512, ADA from scratch (NVlabs)"),
        _nvlabs("brecahad", "brecahad.pkl", 512, "BreCaHAD histology 512, ADA from scratch (NVlabs)"),
        _nvlabs(
            "ffhq256",
            "transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl",
            256,
            "FFHQ faces 256, paper256 config (NVlabs)",
        ),
        _nvlabs(
            "ffhq512",
            "transfer-learning-source-nets/ffhq-res512-mirror-stylegan2-noaug.pkl",
            512,
            "FFHQ faces 512, StyleGAN2 config (NVlabs)",
        ),
        _nvlabs(
            "ffhq1024",
            "transfer-learning-source-nets/ffhq-res1024-mirror-stylegan2-noaug.pkl",
            1024,
            "FFHQ faces 1024, StyleGAN2 config (NVlabs)",
        ),
        _nvlabs(
            "celebahq256",
            "transfer-learning-source-nets/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl",
            256,
            "CelebA-HQ faces 256, paper256 config (NVlabs)",
        ),
        _nvlabs(
            "lsundog256",
            "transfer-learning-source-nets/lsundog-res256-paper256-kimg100000-noaug.pkl",
            256,
            "LSUN dogs 256, paper256 config (NVlabs)",
        ),
    )
}


def register_generator(entry: RegisteredGenerator, replace: bool = False) -> RegisteredGenerator:
    """Make `entry` known by its name; NadaError if another entry has that name (unless `replace`)."""
    return register(GENERATORS, entry.name, entry, "a generator named", replace)


def registered_generators() -> list[RegisteredGenerator]:
    """Every registered generator, core ones first, then the plugins' in registration order."""
    load_plugins()
    return list(GENERATORS.values())


def known_generators() -> list[str]:
    """Names accepted by `resolve_generator`, sorted."""
    load_plugins()
    return sorted(GENERATORS)


def first_local_generator(fallback: str = "ffhq") -> str:
    """The first packaged generator, else the first one downloaded already: a default that needs no download."""
    local = [g for g in registered_generators() if is_local(g.name)]
    local.sort(key=lambda g: g.weights.kind != "package")  # stable: table order within each kind
    return local[0].name if local else fallback


def get_generator(name: str) -> RegisteredGenerator:
    """The table entry of `name`; NadaError listing the valid names for an unknown one."""
    load_plugins()
    entry = GENERATORS.get(name)
    if entry is None:
        raise NadaError(
            f"{name!r} is neither an existing checkpoint file nor a registered generator name: "
            f"give the path of a .pt/.pkl file or one of: {', '.join(known_generators())}"
        )
    return entry


def generator_file(name: str) -> Path:
    """Where the weights of `name` are (packaged) or will be once downloaded; nothing is fetched."""
    entry = get_generator(name)
    return local_path(entry.weights, entry.name)


def is_local(name: str) -> bool:
    """True when the weights file of `name` is on this machine (no network needed to load it)."""
    return generator_file(name).is_file()


def resolve_generator(name: str, progress: bool = True) -> Path:
    """The verified checkpoint file of the registered generator `name`, downloaded on first use; NadaError otherwise."""
    entry = get_generator(name)
    if entry.weights.kind == "package" and not generator_file(name).is_file():
        raise NadaError(
            f"the registered generator {name!r} should be at {generator_file(name)}, which is missing: "
            "reinstall nada (pip install -e .)"
        )
    return fetch(entry.weights, entry.name, progress=progress)
