"""Named generators that ship with nada: a name such as "toy" stands for a packaged checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nada.errors import NadaError


@dataclass(frozen=True)
class RegisteredGenerator:
    """A generator known by name: the checkpoint's path inside the nada package and a one-line description."""

    name: str
    package_path: str
    description: str


GENERATORS: dict[str, RegisteredGenerator] = {
    g.name: g
    for g in (
        RegisteredGenerator("toy", "assets/toy/generator.pt", "64x64 toy faces trained by nada, small enough for the CPU"),
    )
}


def known_generators() -> list[str]:
    """Names accepted by `resolve_generator`, sorted."""
    return sorted(GENERATORS)


def resolve_generator(name: str) -> Path:
    """The checkpoint file of the registered generator `name`; NadaError for unknown names or a missing file."""
    entry = GENERATORS.get(name)
    if entry is None:
        raise NadaError(
            f"{name!r} is neither an existing checkpoint file nor a registered generator name: "
            f"give the path of a .pt/.pkl file or one of: {', '.join(known_generators())}"
        )
    path = Path(str(resources.files("nada").joinpath(entry.package_path)))
    if not path.is_file():
        raise NadaError(f"the registered generator {name!r} should be at {path}, which is missing: reinstall nada (pip install -e .)")
    return path
