"""Load generators from every supported checkpoint format, and save nada checkpoints.

Formats recognised by `load_generator` (never executing code from the file):
- rosinality stylegan2-pytorch: ``{"g_ema": state_dict, "latent_avg": [style_dim]}``, and the training
  variant with ``g``, ``d``, optimiser states and an argparse ``Namespace`` under ``"args"`` (that one class
  is allow-listed for ``torch.load(weights_only=True)``); ``g_ema`` is preferred over ``g``.
- NVlabs stylegan2-ada-pytorch ``network-snapshot-*.pkl``: read by `nada.generator.nvlabs` with a restricted unpickler.
- nada checkpoints written by `save_checkpoint`: the rosinality layout plus a ``"nada"`` metadata dict.
- a registered name (see `nada.weights.registry`).
The generator configuration is inferred from the state-dict shapes (rosinality) or taken from the metadata
(nada, checked against the shapes), and the weights are loaded with ``strict=True``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nada import __version__
from nada.errors import NadaError
from nada.generator.networks import Generator, GeneratorConfig, default_channels
from nada.generator.nvlabs import generator_from_snapshot
from nada.io import atomic_torch_save
from nada.weights.registry import resolve_generator
from nada.weights.safe_load import torch_load

# torch.save's legacy (pre-zip) format starts with a pickled magic number; NVlabs pickles start with b"\x80".
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PATH_SUFFIXES = {".pt", ".pth", ".pkl", ".ckpt", ".bin"}
FORMAT_VERSION = 1


# ---------------------------------------------------------------- reading files


def _resolve_source(source: str | os.PathLike) -> Path:
    """An existing file for `source`: the path itself, or a registered generator when it is a bare name."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise NadaError(f"{path} is a directory, not a checkpoint: pass the .pt or .pkl file inside it")
    if path.is_file():
        return path
    text = str(source)
    looks_like_path = (
        any(sep in text for sep in ("/", "\\")) or path.suffix.lower() in _PATH_SUFFIXES or text.startswith((".", "~"))
    )
    if looks_like_path:
        raise NadaError(
            f"checkpoint file {path} not found: check the path (or a registered name: nada presets generators)"
        )

    return resolve_generator(text)


def _torch_load(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True, allowing only argparse.Namespace beyond torch's own allow-list."""
    return torch_load(path, allow=[argparse.Namespace], mmap=mmap)


def _sniff(path: Path) -> str:
    """'torch' (zip or legacy torch.save), 'pickle' (e.g. an NVlabs snapshot); NadaError for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_TORCH_MAGIC))
    except OSError as e:
        raise NadaError(f"cannot read {path} ({e.strerror}): check the file's permissions") from None
    if not head:
        raise NadaError(f"{path} is empty (truncated download?): download or copy it again")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    raise NadaError(
        f"{path} is not a checkpoint nada knows (neither a torch file nor a pickle): use a rosinality .pt, an NVlabs "
        ".pkl or a nada checkpoint"
    )


# ---------------------------------------------------------------- config inference and checks


def _state_dict_of(obj: Any, path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, generator state dict) of a torch-loaded checkpoint; kind is 'nada', 'rosinality' or 'state_dict'."""
    if not isinstance(obj, dict):
        raise NadaError(
            f"{path} holds a {type(obj).__name__}, not a checkpoint dict: use a rosinality .pt, an NVlabs .pkl or a "
            "nada checkpoint"
        )
    kind = "nada" if isinstance(obj.get("nada"), dict) else "rosinality"
    if isinstance(obj.get("g_ema"), Mapping):
        sd = obj["g_ema"]
    elif isinstance(obj.get("g"), Mapping):
        warnings.warn(f"{path} has no 'g_ema' (averaged) generator; using the raw training generator 'g'", stacklevel=3)
        sd = obj["g"]
    elif "style.1.weight" in obj and "input.input" in obj:
        kind, sd = "state_dict", obj
    else:
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise NadaError(
            f"{path} has no generator weights (top-level keys: {keys}): expected 'g_ema' as in rosinality or nada "
            "checkpoints"
        )
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise NadaError(
            f"{path}: generator entry {bad[0]} is not a tensor: the checkpoint is corrupt or not a generator"
        )
    return kind, dict(sd)


def _kernel_taps(kernel: torch.Tensor) -> tuple[int, ...] | None:
    """Integer 1-D taps of a separable, normalised 2-D FIR kernel (up to its gain), or None if there are none."""
    taps = kernel.double().sum(0)
    taps = taps / taps[taps > 0].min()
    if torch.allclose(taps, taps.round(), atol=1e-4):
        return tuple(int(t) for t in taps.round().tolist())
    return None


def infer_config(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> "GeneratorConfig":
    """GeneratorConfig from the key names and shapes of a rosinality generator state dict (lr_mlp: 0.01)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise NadaError(
                f"{path}: the generator weights lack {key}: not a StyleGAN2 generator in rosinality's layout"
            )
        return tuple(sd[key].shape)

    style_dim = shape("style.1.weight")[1]
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    n_rgb = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    size = 2 ** (n_rgb + 2)
    channels = {4: shape("input.input")[1]}
    for j in range(n_rgb):
        channels[2 ** (j + 3)] = shape(f"convs.{2 * j}.conv.weight")[1]
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    if "convs.0.conv.blur.kernel" in sd and not sd["convs.0.conv.blur.kernel"].is_meta:
        taps = _kernel_taps(sd["convs.0.conv.blur.kernel"])
        if taps is None:
            raise NadaError(f"{path}: the blur kernel is not a separable integer FIR filter: unsupported generator")
        blur_kernel = taps
    for cm in (2, 1, 4):
        if default_channels(size, cm) == channels:
            return GeneratorConfig(
                size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm, blur_kernel=blur_kernel
            )
    return GeneratorConfig(
        size=size, style_dim=style_dim, n_mlp=n_mlp, blur_kernel=blur_kernel, channels=tuple(channels.items())
    )


def _describe(cfg: "GeneratorConfig") -> str:
    return f"size {cfg.size}, style_dim {cfg.style_dim}, n_mlp {cfg.n_mlp}, channels {cfg.channel_table}"


def _check_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NadaError(
                f"{path}: {key} contains NaN or infinite values: the checkpoint is corrupt (or training diverged); use "
                "an earlier checkpoint"
            )


def _check_fits(G: torch.nn.Module, sd: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Every key present with the shape G expects, nothing extra; else a NadaError naming the first differences."""
    target = G.state_dict()
    missing = [k for k in target if k not in sd]
    extra = [k for k in sd if k not in target]
    wrong = [
        f"{k} {list(sd[k].shape)} (expected {list(target[k].shape)})"
        for k in target
        if k in sd and sd[k].shape != target[k].shape
    ]
    problems = [
        f"{name}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for name, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise NadaError(
            f"{path}: the weights do not fit {what} ({'; '.join(problems)}): the checkpoint is corrupt or was written "
            "for another architecture"
        )


def _config_from_metadata(meta: Mapping[str, Any], sd: Mapping[str, torch.Tensor], path: Path) -> "GeneratorConfig":
    """The declared generator config of a nada checkpoint, checked against what the weights say."""

    raw = meta.get("generator_config")
    if not isinstance(raw, Mapping):
        raise NadaError(
            f"{path}: nada metadata has no 'generator_config': the checkpoint is incomplete; save it again with "
            "nada.generator.checkpoints.save_checkpoint"
        )
    declared = GeneratorConfig.from_dict(raw)
    found = infer_config(sd, path)
    same = (declared.size, declared.style_dim, declared.n_mlp, declared.channel_table, declared.blur_kernel) == (
        found.size,
        found.style_dim,
        found.n_mlp,
        found.channel_table,
        found.blur_kernel,
    )
    if not same:
        raise NadaError(
            f"{path}: the metadata declares a generator with {_describe(declared)}, but the weights are for "
            f"{_describe(found)}: the checkpoint is inconsistent; re-save it"
        )
    return declared


def _mean_latent(obj: Mapping[str, Any], style_dim: int, path: Path) -> torch.Tensor | None:
    """The stored mean latent [style_dim], or None when absent (or all zero, i.e. never set)."""
    t = obj.get("latent_avg")
    if t is None:
        return None
    if not isinstance(t, torch.Tensor) or t.numel() != style_dim:
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise NadaError(
            f"{path}: latent_avg has shape {shape}, expected [{style_dim}]: the checkpoint is corrupt or for another "
            "generator"
        )
    t = t.detach().float().reshape(style_dim)
    if not bool(torch.isfinite(t).all()):
        raise NadaError(f"{path}: latent_avg contains NaN or infinite values: the checkpoint is corrupt")
    return t if bool(t.any()) else None


# ---------------------------------------------------------------- public API


_RANDOM_SOURCE = re.compile(r"random:(\d+)(?::(\d+))?")


def load_generator(source: str | os.PathLike, device: str | torch.device = "cpu") -> "Generator":
    """Generator (eval mode, on `device`) from a rosinality .pt, NVlabs .pkl, nada checkpoint, registered name or
    "random:SIZE[:SEED]"."""
    match = _RANDOM_SOURCE.fullmatch(str(source))
    if match:
        return random_generator(int(match[1]), seed=int(match[2] or 0)).to(device)
    path = _resolve_source(source)
    try:
        G = _load_file(path)
    except NadaError as e:  # every message names the file, also those raised deep inside the conversion
        if str(path) in str(e):
            raise
        raise NadaError(f"{path}: {e}") from None
    return G.to(device)


def random_generator(size: int, seed: int = 0) -> "Generator":
    """An untrained small generator (style_dim 64, 64 channels) with seeded random weights: for smoke tests and
    demos."""

    if size < 4 or size > 1024 or size & (size - 1):
        raise NadaError(f"random:{size}: the size must be a power of two from 4 to 1024, e.g. random:64")
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's global RNG
        torch.manual_seed(seed)
        G = Generator(size, style_dim=64, n_mlp=4, channels={4 * 2**i: 64 for i in range(size.bit_length() - 2)})
    G.compute_mean_latent(seed=seed)
    return G.eval()


def _load_file(path: Path) -> "Generator":
    """The generator stored in the existing file `path`, on the CPU, in eval mode."""

    if _sniff(path) == "pickle":
        G = generator_from_snapshot(path)
        _check_finite(G.state_dict(), path)
        _check_finite({"mapping.w_avg": G.mean_latent}, path)
        return G

    obj = _torch_load(path)
    # imported on use: a domain file names its base checkpoint, so nada.generator.domains imports this module
    from nada.generator.domains import generator_from_domain_payload, is_domain_payload

    if is_domain_payload(obj):  # a domain vector: its base with the vector folded in
        return generator_from_domain_payload(obj, path)
    kind, sd = _state_dict_of(obj, path)
    cfg = _config_from_metadata(obj["nada"], sd, path) if kind == "nada" else infer_config(sd, path)
    _check_finite(sd, path)
    G = Generator.from_config(cfg)
    _check_fits(G, sd, path, f"a generator with {_describe(cfg)}")
    G.load_state_dict(sd, strict=True)
    mean = _mean_latent(obj, cfg.style_dim, path) if kind != "state_dict" else None
    if mean is None:
        warnings.warn(
            f"{path} stores no mean latent (latent_avg); computing it from 4096 samples (seed 0)", stacklevel=3
        )
        G.compute_mean_latent()
    else:
        G.mean_latent.copy_(mean)
    return G.eval()


def _plain(value: Any, where: str) -> Any:
    """`value` as plain types (dict/list/str/int/float/bool/None): tuples as lists, dataclasses as dicts; NadaError
    otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a frozen config dataclass
        return _plain(dataclasses.asdict(value), where)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise NadaError(f"checkpoint metadata key {where}.{k!r} is a {type(k).__name__}: use str or int keys")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise NadaError(
        f"checkpoint metadata {where} is a {type(value).__name__}: store plain types only (str, int, float, bool, "
        "None, list, dict)"
    )


def save_checkpoint(
    path: str | os.PathLike, G: "Generator", metadata: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """Write G atomically in the rosinality layout plus a plain-typed "nada" metadata dict (overwrite only if asked)."""

    path = Path(path)
    if path.exists() and not overwrite:
        raise NadaError(f"{path} already exists: choose another path or pass overwrite=True")
    if path.is_dir():
        raise NadaError(f"{path} is a directory: give a file name such as {path / 'generator.pt'}")
    meta = _plain(dict(metadata), "metadata")
    # The config and version always describe the weights actually written, whatever the caller passed.
    meta.update(generator_config=G.config.to_dict(), nada_version=__version__, format_version=FORMAT_VERSION)
    state = {k: v.detach().to("cpu", copy=True) for k, v in G.state_dict().items()}
    _check_finite(state, path)
    payload = {"g_ema": state, "latent_avg": G.mean_latent.detach().to("cpu", copy=True), "nada": meta}
    return atomic_torch_save(payload, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The "nada" metadata dict of a nada checkpoint (plain types); NadaError for other files."""
    path = _resolve_source(path)
    if _sniff(path) != "torch":
        raise NadaError(
            f"{path} is not a nada checkpoint (it is a pickle, e.g. an NVlabs snapshot): only checkpoints written by "
            "nada carry metadata"
        )
    with open(path, "rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    obj = _torch_load(path, mmap=is_zip)  # mmap: only the small metadata is actually read
    if not isinstance(obj, dict) or not isinstance(obj.get("nada"), dict):
        raise NadaError(
            f"{path} has no nada metadata (a rosinality or other checkpoint): only checkpoints written by nada carry it"
        )
    return dict(obj["nada"])
