"""Presets: named adapted generators (base model + source -> target domain + recipe) and where their weights are.

A `Preset` (the table and its lookups are `nada.weights.preset_table`, importable from here too) names
its base generator, the source and target texts, the adaptation options (the recipe) and where its
weights come from. `load_preset` looks, in this order, for:

1. the preset's own weights: a file packaged with nada (``nada/assets/...``, e.g. a plugin's presets)
   or a released file downloaded on first use into ``$NADA_CACHE/weights/NAME/`` (the FFHQ presets
   released by the StyleGAN-NADA authors);
2. a run trained on this machine, ``$NADA_CACHE/presets/NAME/generator.pt``: a preset without released
   weights ("train on demand") is made by the ``nada adapt`` command that `adapt_command` prints, whose
   ``--out`` is that folder.

The FFHQ presets with weights are the StyleGAN-NADA authors' files in the Hugging Face repository
``rinong/stylegan-nada-models`` (the one their own demo loads), pinned to a commit. Their SHA-256 comes
from the repository's Git LFS pointers where the pointer was found (``sketch.pt``: not found, so not
verified). The files record no training prompts: for them, source and target describe the domain,
and the recipe is the official README command (ViT-B/32 + ViT-B/16, adaptive layers k=18, 301 iterations).

Compact preset files (format version 1, written by `pack_preset`, read by `load_preset_file`): an
adapted generator differs from its base only in the layers that trained, so a preset stores, for each
state-dict tensor that changed, ``adapted - base`` in float16 (half the bytes, and the rounding error
is relative to the small difference, not to the weight), plus the mean latent and a fingerprint of
the base weights it was made against::

    {"nada_preset": {"format": "nada-preset-delta", "format_version": 1, "name": ..., "base": "ffhq",
                     "base_fingerprint": sha256 hex, "metadata": {... the run's checkpoint metadata ...}},
     "delta": {state-dict key: float16 tensor},       # float32 where float16 would overflow
     "latent_avg": float32 [style_dim]}

Only tensors, strings and numbers: it loads with ``torch.load(weights_only=True)``, and loading gives a
normal `nada.generator.networks.Generator`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nada.config import cli_flag, preset_config
from nada.errors import NadaError
from nada.generator.checkpoints import load_generator, read_metadata
from nada.io import atomic_torch_save
from nada.weights.download import fetch, human_size, local_path
from nada.weights.preset_table import PRESETS as PRESETS  # the table's names stay importable from here (docs)
from nada.weights.preset_table import Preset, get_preset, trained_dir
from nada.weights.preset_table import known_presets as known_presets
from nada.weights.preset_table import register_preset as register_preset
from nada.weights.registry import known_generators
from nada.weights.safe_load import torch_load

if TYPE_CHECKING:
    from nada.generator.networks import Generator

FORMAT = "nada-preset-delta"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- availability


@dataclass(frozen=True)
class PresetStatus:
    """Whether a preset loads without training or downloading, from which file, and a one-line note."""

    available: bool
    path: Path | None  # the file load_preset would read (None: nothing on this machine)
    note: str


def preset_status(preset: Preset) -> PresetStatus:
    """Where `preset`'s weights are on this machine, if anywhere; nothing is fetched."""
    own = local_path(preset.weights, preset.name) if preset.weights is not None else None
    if own is not None and own.is_file():
        return PresetStatus(True, own, "yes (packaged)" if preset.weights.kind == "package" else "yes (downloaded)")
    trained = trained_dir(preset.name) / "generator.pt"
    if trained.is_file():
        return PresetStatus(True, trained, "yes (trained here)")
    if preset.weights is not None and preset.weights.kind != "package":
        return PresetStatus(False, None, f"no: downloads {human_size(preset.weights.size)} on first use")
    if preset.weights is None:
        return PresetStatus(False, None, f"no: train on demand (nada presets show {preset.name})")
    return PresetStatus(False, None, f"not available: not packaged here (nada presets show {preset.name})")


def adapt_command(preset: Preset, out_dir: str | os.PathLike | None = None) -> str:
    """The exact `nada adapt` command line that trains `preset` (into `trained_dir` unless `out_dir` is given).

    The base's profile applies by itself, so the command names the base, the texts and the preset's recipe.
    """
    config = preset_config(preset, out_dir)
    wanted = ["generator", "source", "target", "out_dir"] + [
        k for k, _ in preset.options if k not in ("generator", "source", "target", "out_dir")
    ]
    args = ["nada", "adapt"]
    for field in wanted:
        value = getattr(config, field)
        if isinstance(value, bool):
            args += [cli_flag(field)] if value != getattr(type(config), field) else []
        else:
            args += [cli_flag(field), str(value)]
    return shlex.join(args)


def load_preset(name: str, device: str | torch.device = "cpu", progress: bool = True) -> "Generator":
    """The adapted Generator of preset `name` (eval mode, on `device`), downloading released weights on first use."""
    return load_preset_file(preset_file(name, progress), device)


def preset_file(name: str, progress: bool = True) -> Path:
    """The weights file of preset `name` here (packaged, downloaded now or trained here); NadaError if none."""
    preset = get_preset(name)
    status = preset_status(preset)
    if status.available:
        path = status.path
    elif preset.weights is not None and preset.weights.kind != "package":
        path = fetch(preset.weights, preset.name, progress=progress)
    else:
        why = "has no released weights" if preset.weights is None else "is not packaged in this installation"
        raise NadaError(
            f"preset {name!r} ({preset.domain} on {preset.base}) {why} and was not trained here: "
            f"train it first with `{adapt_command(preset)}`, then use --preset {name} again"
        )
    assert path is not None
    return path


# ---------------------------------------------------------------- compact files


def state_fingerprint(G: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and float32 bytes of G's state dict: identifies the exact base weights."""
    h = hashlib.sha256()
    for key, t in sorted(G.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _read(path: Path, mmap: bool = False) -> Any:
    """torch.load(weights_only=True) of a preset file; NadaError naming the file when it is unreadable.

    mmap=True maps instead of reading the tensors, so a look at the keys of a large checkpoint costs nothing.
    """
    return torch_load(path, mmap=mmap, what="preset file", fix="download or pack it again")


def is_compact(path: str | os.PathLike) -> bool:
    """True when `path` is a compact preset file (a zip-format torch file with a 'nada_preset' record)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # compact files are always written in torch's zip format
        return False
    try:
        obj = _read(path, mmap=True)
    except NadaError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("nada_preset"), dict)


def load_preset_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> "Generator":
    """Generator from a compact preset file (base + float16 deltas) or from any checkpoint `load_generator` reads."""
    path = Path(path)
    if not path.is_file() or not is_compact(path):
        return load_generator(path, device=device)
    obj = _read(path)
    meta = _checked_record(obj, path)
    G = load_generator(meta["base"])
    if state_fingerprint(G) != meta.get("base_fingerprint"):
        raise NadaError(
            f"{path} was packed against other weights of the base generator {meta['base']!r} than this machine has: "
            "re-pack it from its run with `nada presets pack`, or use the base it was made for"
        )
    state = G.state_dict()
    for key, delta in obj["delta"].items():
        if key not in state or state[key].shape != delta.shape:
            raise NadaError(
                f"{path}: delta {key} {list(delta.shape)} does not fit the base generator {meta['base']!r}: "
                "the file is corrupt"
            )
        state[key] = state[key] + delta.to(state[key].dtype)
    G.load_state_dict(state, strict=True)
    latent_avg = obj["latent_avg"]
    if latent_avg.numel() != G.style_dim:
        raise NadaError(
            f"{path}: latent_avg has shape {list(latent_avg.shape)}, not [{G.style_dim}] as the base "
            f"{meta['base']!r} needs: the file is corrupt; pack it again"
        )
    G.mean_latent.copy_(latent_avg.reshape(G.mean_latent.shape))
    return G.eval().to(device)


def _checked_record(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """The 'nada_preset' record of a loaded compact file, every entry checked; NadaError naming the first fault."""
    meta = obj["nada_preset"]
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise NadaError(
            f"{path} is a preset file of format {meta.get('format')} v{meta.get('format_version')}: "
            f"this nada reads {FORMAT} v{FORMAT_VERSION}; update nada"
        )
    if not isinstance(meta.get("base"), str):
        raise NadaError(f"{path}: the preset record names no base generator: the file is corrupt; pack it again")
    tensors = {"latent_avg": obj.get("latent_avg")}
    delta = obj.get("delta")
    if not isinstance(delta, dict):
        raise NadaError(f"{path} has no 'delta' entry (the changed weights): the file is corrupt; pack it again")
    tensors.update({f"delta {k}": v for k, v in delta.items()})
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise NadaError(f"{path}: {name} is missing or not a float tensor: the file is corrupt; pack it again")
        if not bool(torch.isfinite(t).all()):
            raise NadaError(f"{path}: {name} contains NaN or infinite values: the file is corrupt; pack it again")
    return meta


def pack_preset(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    base: str | None = None,
    name: str = "",
    overwrite: bool = False,
) -> Path:
    """Write the compact preset file of an adapted checkpoint: float16 differences to its registered base.

    `base` defaults to the ``base_model`` in the checkpoint's nada metadata and must be a registered
    generator name (the file is loaded later by that name).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise NadaError(f"{out} already exists: choose another path or pass --force to overwrite")
    try:
        metadata = read_metadata(checkpoint)
    except NadaError:
        metadata = {}
    base = base or metadata.get("base_model")
    if base not in known_generators():
        raise NadaError(
            f"the base generator {base!r} is not a registered name: "
            f"pass the registered base of {checkpoint} (one of {', '.join(known_generators())})"
        )
    G, B = load_generator(checkpoint), load_generator(base)
    if G.config != B.config:
        raise NadaError(
            f"{checkpoint} is a {G.config.size}px generator of another architecture than the base {base!r}: "
            "pass the base it was adapted from"
        )
    base_state = B.state_dict()
    delta: dict[str, torch.Tensor] = {}
    for key, t in G.state_dict().items():
        if not torch.equal(t, base_state[key]):
            d = (t.float() - base_state[key].float()).cpu()
            half = d.half()
            delta[key] = half if bool(torch.isfinite(half).all()) else d  # float16 overflows beyond 65504
    payload = {
        "nada_preset": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "base": base,
            "base_fingerprint": state_fingerprint(B),
            "metadata": metadata,  # plain types already (read_metadata)
        },
        "delta": delta,
        "latent_avg": G.mean_latent.detach().float().cpu().clone(),
    }
    return atomic_torch_save(payload, out)


def packed_info(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a compact preset file: base, number of changed tensors and parameters, bytes on disk."""
    obj = _read(Path(path))
    if not (isinstance(obj, dict) and isinstance(obj.get("nada_preset"), dict)):
        raise NadaError(f"{path} is not a compact preset file: it holds no 'nada_preset' record")
    delta = obj.get("delta")
    if not isinstance(delta, dict):
        raise NadaError(f"{path} has no 'delta' entry (the changed weights): the file is corrupt; pack it again")
    return {
        "base": obj["nada_preset"].get("base"),
        "tensors": len(delta),
        "parameters": sum(t.numel() for t in delta.values()),
        "bytes": Path(path).stat().st_size,
        "metadata": obj["nada_preset"].get("metadata", {}),
    }


# ---------------------------------------------------------------- side-by-side comparison


def share_mean_latent(base: "Generator", adapted: "Generator") -> bool:
    """Give `adapted` the base's mean latent when both have the same mapping network; True if it was shared.

    Adaptation never trains the mapping network, so the base's stored mean latent is the right truncation
    centre for both; a released checkpoint without one would otherwise use a re-estimated mean.
    """
    base_map = {k: v for k, v in base.state_dict().items() if k.startswith("style.")}
    adapted_map = {k: v for k, v in adapted.state_dict().items() if k.startswith("style.")}
    if base_map.keys() != adapted_map.keys() or not all(
        torch.equal(v, adapted_map[k].to(v.device)) for k, v in base_map.items()
    ):
        return False
    with torch.no_grad():
        adapted.mean_latent.copy_(base.mean_latent.to(adapted.mean_latent.device))
    return True


def comparison_rows(base: torch.Tensor, adapted: torch.Tensor, columns: int = 8) -> list[torch.Tensor]:
    """Rows for `nada.io.image_grid`: up to `columns` base images [n,3,H,W] in [-1,1], then the adapted images
    of the same seeds below.

    With more seeds than columns the pairs of rows repeat; the last pair is padded with white tiles.
    """
    assert base.shape == adapted.shape and base.ndim == 4, (
        f"need matching [N,3,H,W] batches, got {tuple(base.shape)} and {tuple(adapted.shape)}"
    )
    n = base.shape[0]
    cols = min(n, columns)
    pad = (-n) % cols
    if pad:
        white = base.new_ones(pad, *base.shape[1:])
        base, adapted = torch.cat([base, white]), torch.cat([adapted, white])
    rows: list[torch.Tensor] = []
    for b, a in zip(base.split(cols), adapted.split(cols)):
        rows += [b, a]
    return rows
