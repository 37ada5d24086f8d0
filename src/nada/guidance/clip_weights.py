"""CLIP weights: where they come from (cache, download) and how they become models, without running any file.

Pretrained weights download on first use into ``clip_cache_dir()`` (``$NADA_CACHE/clip``, like every
other weights file of nada; ``$NADA_CLIP_CACHE`` overrides it) through `nada.weights.download.fetch`, under the
name the error messages give (``<model>_<tag>.<ext>``), where a file can also be placed by hand. Before
downloading, two more places are searched: the Hugging Face cache and ``~/.cache/clip``, where OpenAI's
``clip`` package (used by the official StyleGAN-NADA code) keeps its TorchScript files. With
``NADA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` nothing is downloaded; `pretrained_weights` tells a
preflight (``nada.weights.preflight``) which file a name needs without loading anything.
Files are read by `nada.weights.safe_load`: state dicts with ``weights_only=True``, safetensors as such,
and TorchScript archives as data, never compiled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nada.errors import NadaError, one_line
from nada.guidance.clip_model import ClipModel, ClipPreprocess, as_pair, wrap_clip
from nada.guidance.clip_specs import model_tag, valid_names_hint
from nada.weights import download
from nada.weights.download import WeightsSource, clip_cache_dir, offline
from nada.weights.safe_load import read_state_dict

CONFIG_NAMES = ("clip_config.json", "open_clip_config.json")
# A config key naming a weightless input transform in front of the image tower (see load_clip_from_config).
INPUT_STEM_KEY = "input_stem"
WEIGHT_NAMES = ("clip.safetensors", "clip.pt", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# OpenAI's files carry three sizes as tensors; the architecture is read from the shapes instead.
_OPENAI_SIZE_ENTRIES = ("input_resolution", "context_length", "vocab_size")


def read_clip_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weight tensors of a CLIP file in any format nada reads (see `nada.weights.safe_load`), on the CPU."""
    sd = read_state_dict(path, "CLIP weights")
    return {k: v for k, v in sd.items() if k not in _OPENAI_SIZE_ENTRIES}


# ---------------------------------------------------------------- models from files


def build_openai_layout(sd: dict[str, torch.Tensor]) -> nn.Module:
    """An open_clip CLIP (float32, QuickGELU) whose architecture is read from an OpenAI-layout state dict."""
    import open_clip

    if "visual.proj" in sd:  # Vision transformer
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        layers: Any = sum(1 for k in sd if k.startswith("visual.transformer.") and k.endswith(".attn.in_proj_weight"))
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = open_clip.CLIPVisionCfg(layers=layers, width=width, patch_size=patch, image_size=patch * grid)
    else:  # Modified ResNet: count the blocks of each of the 4 stages
        layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = open_clip.CLIPVisionCfg(layers=layers, width=width, patch_size=None, image_size=grid * 32)
    text_width = sd["ln_final.weight"].shape[0]
    text = open_clip.CLIPTextCfg(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // 64,  # OpenAI's rule, which their files do not store
        layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    )
    return construct_then_load(
        lambda: open_clip.CLIP(sd["text_projection"].shape[1], vision_cfg=vision, text_cfg=text, quick_gelu=True), sd
    )


def construct_then_load(build: Callable[[], nn.Module], sd: dict[str, torch.Tensor]) -> nn.Module:
    """``build()`` holding the tensors of ``sd`` (strict: every key, every shape), without a random initialisation.

    Drawing random weights that ``sd`` then overwrites cost 1.2 of the 1.4 s it took to build a ViT-B/32
    on two cores, so the module is built on the meta device and takes the loaded tensors themselves
    (cast to the dtypes the module declares: OpenAI's file holds fp16). open_clip's CLIP has one tensor
    that no file holds, the causal mask of its text tower, made here as open_clip makes it; a module with
    any other such buffer is built and loaded the plain way.
    """
    with torch.device("meta"):
        model = build()
    declared = model.state_dict()
    unsaved = [name for name, _ in model.named_buffers() if name not in declared]
    if unsaved != ["attn_mask"] or not isinstance(getattr(model, "context_length", None), int):
        model = build()
        model.load_state_dict(sd, strict=True)
        return model
    typed = {k: v.to(declared[k].dtype) if k in declared else v for k, v in sd.items()}
    model.load_state_dict(typed, strict=True, assign=True)
    model.attn_mask = causal_mask(model.context_length)
    return model


def causal_mask(n: int) -> torch.Tensor:
    """Additive attention mask [n, n] on the CPU: 0 on and below the diagonal, -inf above (each token sees its past)."""
    return torch.full((n, n), float("-inf")).triu_(1)


def load_clip_openai_file(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    antialias: bool = True,
    precision: str = "fp32",
    name: str | None = None,
) -> ClipModel:
    """Load a CLIP weights file in OpenAI's state-dict layout (the architecture follows from the shapes)."""
    import open_clip

    path = Path(path)
    sd = read_clip_weights(path)
    try:
        model = build_openai_layout(sd)
    except (KeyError, RuntimeError, ValueError) as e:
        raise NadaError(
            f"CLIP weights {path} are not in OpenAI's CLIP layout ({one_line(e, 300, typed=True)}): "
            "give an OpenAI CLIP state dict, or a folder with an open_clip config JSON beside the weights"
        ) from None
    pp = ClipPreprocess(size=as_pair(model.visual.image_size))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return wrap_clip(model, tokenizer, pp, name or str(path), device, antialias, precision)


_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def read_clip_config(config_path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a CLIP config JSON -> (open_clip model config, preprocess overrides).

    Accepted layouts: open_clip's model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, optional
    ``quick_gelu``/``custom_text``) with optional preprocessing either as a ``preprocess_cfg`` dict or as
    top-level ``mean``/``std``/``interpolation``/``resize_mode``; or the Hugging Face layout
    ``{"model_cfg": {...}, "preprocess_cfg": {...}}``. The input size is always the model's ``image_size``.
    """
    config_path = Path(config_path)
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the JSON is not an object")
        model_cfg = dict(raw["model_cfg"] if "model_cfg" in raw else raw)
        pp_cfg = dict(raw.get("preprocess_cfg", {}))
        model_cfg.pop("preprocess_cfg", None)
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if key not in model_cfg:
                raise KeyError(f"missing {key!r}")
        for key in ("image_mean", "image_std", *_PREPROCESS_KEYS):
            if key in model_cfg:  # preprocessing written beside the architecture
                pp_cfg[key.removeprefix("image_")] = model_cfg.pop(key)
        if "image_size" in model_cfg:  # the input size belongs to the vision tower
            size = model_cfg.pop("image_size")
            vision = model_cfg["vision_cfg"] = dict(model_cfg["vision_cfg"])
            if vision.setdefault("image_size", size) != size:
                raise ValueError(f"image_size {size} differs from vision_cfg.image_size {vision['image_size']}")
    except (OSError, ValueError, KeyError) as e:
        raise NadaError(
            f"CLIP config {config_path} is unreadable or incomplete ({one_line(e, 300, typed=True)}): "
            "it needs embed_dim, vision_cfg and text_cfg as in open_clip's model_configs"
        ) from None
    return model_cfg, pp_cfg


def load_clip_from_config(
    config_path: str | os.PathLike,
    weights_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    antialias: bool = True,
    precision: str = "fp32",
    name: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    input_stems: Mapping[str, Callable[[torch.nn.Module], torch.nn.Module]] | None = None,
) -> ClipModel:
    """Load an open_clip model from a config JSON (see ``read_clip_config``) and a weights file.

    The tokenizer is open_clip's default (OpenAI BPE, with the config's context length) unless
    ``text_cfg.hf_tokenizer_name`` names another. ``state_dict``, when given, holds the weights already
    read (and rebuilt) from ``weights_path``. A config whose ``input_stem`` names a weightless input
    transform gets it from ``input_stems`` (the plugin that trained such a tower provides it).
    """
    import open_clip

    config_path, weights_path = Path(config_path), Path(weights_path)
    model_cfg, pp_cfg = read_clip_config(config_path)
    stem = model_cfg.pop(INPUT_STEM_KEY, None)
    if stem is not None and stem not in (input_stems or {}):
        raise NadaError(
            f"CLIP config {config_path} puts the input stem {stem!r} in front of its image tower, which only its "
            "plugin provides: load this CLIP by the name its plugin registers for it"
        )
    if not weights_path.is_file():
        raise NadaError(f"CLIP weights {weights_path} not found: check the path")
    text_cfg = model_cfg["text_cfg"]
    custom = model_cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    cls = open_clip.CoCa if "multimodal_cfg" in model_cfg else open_clip.CustomTextCLIP if custom else open_clip.CLIP
    try:
        model = cls(**model_cfg)
        if state_dict is None:
            open_clip.load_checkpoint(model, str(weights_path), strict=True, weights_only=True)
        else:
            model.load_state_dict(state_dict, strict=True)
        if text_cfg.get("hf_tokenizer_name"):
            tokenizer: Callable = open_clip.tokenizer.HFTokenizer(
                text_cfg["hf_tokenizer_name"], context_length=text_cfg.get("context_length", 77)
            )
        else:
            tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    except Exception as e:
        raise NadaError(
            f"CLIP model from {config_path} and {weights_path} could not be built ({one_line(e, 300, typed=True)}): "
            "check that the weights belong to that config and the file is complete"
        ) from None
    if stem is not None:
        model = input_stems[stem](model)
    pp = ClipPreprocess.from_open_clip({**pp_cfg, "size": as_pair(model.visual.image_size)})
    return wrap_clip(model, tokenizer, pp, name or str(config_path.parent), device, antialias, precision)


def load_clip_folder(folder: Path, device: str | torch.device, antialias: bool, precision: str) -> ClipModel:
    """A folder with an open_clip config JSON and a weights file, named as in ``CONFIG_NAMES``/``WEIGHT_NAMES``."""
    config = next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if config is None or weights is None:
        raise NadaError(
            f"CLIP folder {folder} needs a config ({' or '.join(CONFIG_NAMES)}) "
            f"and weights ({' or '.join(WEIGHT_NAMES)}): add the missing file"
        )
    return load_clip_from_config(config, weights, device, antialias, precision, name=str(folder))


# ---------------------------------------------------------------- pretrained weights (download or cache)


@dataclass(frozen=True)
class _PretrainedSource:
    """Where the weights of one open_clip (model, tag) pair live."""

    model: str
    tag: str
    hf_repo: str  # "" when the weights only have a URL
    hf_files: tuple[str, ...]  # candidate file names in the repository, preferred first
    url: str

    @property
    def local_stem(self) -> str:
        return f"{self.model}_{self.tag}"


def _pretrained_source(model: str, tag: str, display: str) -> tuple[_PretrainedSource, dict[str, Any]]:
    """Look up the (model, tag) pair in open_clip's registry; a NadaError lists the valid choices."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    if model not in open_clip.list_models():
        raise NadaError(f"unknown open_clip model in {display!r}: {valid_names_hint()}")
    cfg = get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise NadaError(
            f"open_clip model {model!r} has no pretrained tag {tag!r}: use one of {', '.join(tags) or '(none)'}"
        )
    # open_clip's convention: "org/repo/" means the default file name, "org/repo/file.bin" names one.
    repo, filename = os.path.split(cfg["hf_hub"]) if cfg.get("hf_hub") else ("", "")
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip prefers a safetensors twin of the same weights when the repository has one.
    safe = (
        "open_clip_model.safetensors"
        if filename == "open_clip_pytorch_model.bin"
        else os.path.splitext(filename)[0] + ".safetensors"
    )
    files = (safe, filename) if safe != filename else (filename,)
    return _PretrainedSource(model, tag, repo, files, cfg.get("url", "")), cfg


def _find_cached(src: _PretrainedSource) -> Path | None:
    """A local copy of the weights: hand-placed in clip_cache_dir(), in the HF cache, or in open_clip's URL cache."""
    for suffix in (".safetensors", ".bin", ".pt", ".pth"):
        candidate = clip_cache_dir() / f"{src.local_stem}{suffix}"
        if candidate.is_file():
            return candidate
    if src.hf_repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in src.hf_files:
            hit = try_to_load_from_cache(src.hf_repo, filename)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    if src.url:  # where OpenAI's clip package and open_clip put URL downloads
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(src.url)
        if candidate.is_file():
            return candidate
    return None


def _download_candidates(src: _PretrainedSource) -> list[tuple[WeightsSource, Path]]:
    """Each file holding the weights of `src`: its nada.weights.download source and place in clip_cache_dir(), best
    first."""
    if src.hf_repo:
        return [
            (WeightsSource(f, hf_repo=src.hf_repo), clip_cache_dir() / f"{src.local_stem}{os.path.splitext(f)[1]}")
            for f in src.hf_files
        ]
    if src.url:
        # OpenAI's addresses carry the file's SHA-256 as their last folder name.
        folder = src.url.rstrip("/").split("/")[-2] if src.url.count("/") > 3 else ""
        sha = folder if re.fullmatch(r"[0-9a-f]{64}", folder) else None
        name = os.path.basename(src.url)
        dest = clip_cache_dir() / f"{src.local_stem}{os.path.splitext(name)[1] or '.pt'}"
        return [(WeightsSource(name, url=src.url, sha256=sha), dest)]
    return []


@dataclass(frozen=True)
class PretrainedWeights:
    """What a pretrained CLIP name needs: the file found on this machine (or None) and where a download goes."""

    display: str
    found: Path | None
    source: WeightsSource | None  # the preferred file to download; None when open_clip knows no address
    dest: Path


def pretrained_weights(name: str) -> PretrainedWeights | None:
    """The weights file a pretrained CLIP name needs (None for registered CLIPs and paths); NadaError for unknown
    names."""
    name = str(name).strip()
    pair = model_tag(name)
    if pair is None:
        return None  # registered CLIPs and paths; load_clip explains a malformed open_clip name
    src, _ = _pretrained_source(*pair, name)
    candidates = _download_candidates(src)
    source, dest = candidates[0] if candidates else (None, clip_cache_dir() / f"{src.local_stem}.pt")
    return PretrainedWeights(name, _find_cached(src), source, dest)


def fetch_pretrained_weights(name: str) -> Path:
    """The weights file of a pretrained CLIP name (OpenAI or open_clip:MODEL/TAG), downloaded when missing."""
    name = str(name).strip()
    pair = model_tag(name)
    if pair is None:
        raise NadaError(f"{name!r} is not a pretrained CLIP name: {valid_names_hint()}")
    src, _ = _pretrained_source(*pair, name)
    return _pretrained_file(src, name)


def _pretrained_file(src: _PretrainedSource, display: str) -> Path:
    """Path of the weights file: found on this machine, else downloaded into clip_cache_dir() unless offline."""
    cached = _find_cached(src)
    if cached is not None:
        return cached
    candidates = _download_candidates(src)
    if not candidates:
        raise NadaError(
            f"CLIP weights for {display!r} are not on this machine and open_clip knows no address "
            f"for them: save them as {clip_cache_dir() / src.local_stem}.pt"
        )
    errors: list[NadaError] = []
    for source, dest in candidates:  # a repository may hold only the second (older) file name
        try:
            return download.fetch(source, "clip", dest=dest)
        except NadaError as e:
            errors.append(NadaError(f"CLIP {display!r}: {e}"))
            if offline():
                break
    raise errors[0]


def load_pretrained(
    model: str, tag: str, display: str, device: str | torch.device, antialias: bool, precision: str
) -> ClipModel:
    """An open_clip (model, tag) pair: find or fetch the weights file, then let open_clip build the model."""
    import open_clip

    src, cfg = _pretrained_source(model, tag, display)
    path = _pretrained_file(src, display)
    if tag.lower() == "openai":
        # OpenAI's weights, whether open_clip's safetensors copy or OpenAI's own TorchScript file, are in
        # OpenAI's layout: build from the shapes, with QuickGELU, in float32.
        return load_clip_openai_file(path, device, antialias, precision, name=display)
    pp_overrides = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode", "fill_color") if k in cfg}
    try:
        net = open_clip.create_model(
            model,
            pretrained=str(path),
            # The tag knows the activation its weights were trained with (QuickGELU for OpenAI's).
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            force_preprocess_cfg=pp_overrides,
            weights_only=True,
            device="cpu",
        )
    except Exception as e:
        raise NadaError(
            f"CLIP weights {path} for {display!r} could not be loaded ({one_line(e, 300, typed=True)}): "
            "it is truncated or not the weights of that model; delete it and download it again"
        ) from None
    pp = ClipPreprocess.from_open_clip(net.visual.preprocess_cfg)
    tokenizer = open_clip.get_tokenizer(model)
    return wrap_clip(net, tokenizer, pp, display, device, antialias, precision)
