"""Frozen CLIP models for the NADA losses: loading through open_clip and differentiable preprocessing.

``load_clip(name, device)`` understands:

- OpenAI release names (``"ViT-B/32"``, ``"ViT-B/16"``, ``"RN50"``, ...). They load as open_clip's
  ``<arch>-quickgelu`` models with the ``openai`` weights: QuickGELU is the activation OpenAI trained
  with, so the features equal those of OpenAI's own code.
- ``"open_clip:MODEL/TAG"``, any pair listed by ``open_clip.list_pretrained()``.
- ``"toy"``, the project's tiny CLIP shipped inside the package (``nada/assets/toy``), and
  ``"toy-robust"``, the same model after embedding-stability training (``nada/assets/toy/clip_robust``),
  and ``"toy-rn"``, a convolutional image tower (open_clip's ModifiedResNet) trained into the toy
  CLIP's frozen text space (``nada/assets/toy/clip_rn``).
- a path to a weights file in OpenAI's state-dict layout (``.pt``, ``.pth``, ``.bin``, ``.safetensors``);
  the architecture is read from the tensor shapes.
- a path to a folder holding an open_clip config JSON and a weights file (see ``load_clip_from_config``).

Pretrained weights download on first use into ``clip_cache_dir()`` (``$NADA_CACHE/clip``, like every
other weights file of nada; ``$NADA_CLIP_CACHE`` overrides it) through `nada.weights.download.fetch`, under the
name the error messages give (``<model>_<tag>.<ext>``), where a file can also be placed by hand. Before
downloading, two more places are searched: the Hugging Face cache and ``~/.cache/clip``, where OpenAI's
``clip`` package (used by the official StyleGAN-NADA code) keeps its TorchScript files. With
``NADA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` nothing is downloaded; `pretrained_weights` tells a
preflight (``nada.weights.preflight``) which file a name needs without loading anything.
No file is ever trusted to run code: state dicts load with ``weights_only=True``, safetensors as such,
and TorchScript archives are read as data (``read_torchscript_tensors``), never compiled.

Preprocessing (``ClipModel.preprocess``) maps generator output in [-1, 1] to CLIP input inside the
autograd graph: ``(x + 1) / 2``, bicubic resize of the shorter side to the model's input size, centre
crop, mean/std normalisation. The resize is antialiased by default: that is what current torchvision
does in CLIP's own preprocessing of PIL images, and without it a 1024 -> 224 resize reads a 4x4
bicubic window per output pixel, so detail finer than the output grid aliases into the features the
generator is trained against. ``antialias=False`` reproduces the official StyleGAN-NADA numbers,
computed with the non-antialiased tensor resize of the torchvision of its time.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nada.errors import NadaError

if TYPE_CHECKING:
    from nada.weights.download import WeightsSource

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
TOY_NAME = "toy"
# The project's packaged tiny CLIPs: name -> (folder under nada/assets with clip_config.json + clip.pt,
# the packaged CLIP whose token table it shares, or None). Fine-tuning leaves almost every row of the
# 49408 x 64 token table untouched, so a copy stores only the rows that differ (see pack_token_table).
TOY_CLIPS: dict[str, tuple[str, str | None]] = {
    TOY_NAME: ("toy", None),
    "toy-robust": ("toy/clip_robust", TOY_NAME),
    "toy-rn": ("toy/clip_rn", TOY_NAME),
}
TOKEN_TABLE = "token_embedding.weight"
TABLE_ROWS, TABLE_VALUES = "token_embedding.changed_rows", "token_embedding.changed_values"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

_CONFIG_NAMES = ("clip_config.json", "open_clip_config.json")
_WEIGHT_NAMES = ("clip.safetensors", "clip.pt", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


# ---------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class ClipPreprocess:
    """How an image becomes CLIP input: target size, resize mode, interpolation and normalisation."""

    size: tuple[int, int]
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop), "longest" (resize + pad), "squash"
    fill: float = 0.0  # padding value in [0, 1], used by "longest" only

    def __post_init__(self) -> None:
        assert len(self.size) == 2 and min(self.size) > 0, f"bad CLIP input size {self.size}"
        assert len(self.mean) == 3 and len(self.std) == 3, "mean and std need one value per RGB channel"
        assert self.interpolation in ("bicubic", "bilinear"), f"unsupported interpolation {self.interpolation!r}"
        assert self.resize_mode in ("shortest", "longest", "squash"), f"unsupported resize mode {self.resize_mode!r}"

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> "ClipPreprocess":
        """Build from an open_clip preprocess dict (keys size, mean, std, interpolation, resize_mode, fill_color)."""
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        interpolation = cfg.get("interpolation", "bicubic")
        # open_clip's "random" interpolation is a training augmentation; evaluate with bicubic.
        interpolation = "bicubic" if interpolation == "random" else interpolation
        return cls(
            size=(int(size[0]), int(size[1])),
            mean=tuple(float(v) for v in cfg.get("mean", OPENAI_MEAN)),
            std=tuple(float(v) for v in cfg.get("std", OPENAI_STD)),
            interpolation=interpolation,
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill=float(cfg.get("fill_color", 0)) / 255.0,
        )


def _resized_size(h: int, w: int, pp: ClipPreprocess) -> tuple[int, int]:
    """Output size of the resize step, following torchvision/open_clip rounding so results match them."""
    th, tw = pp.size
    if pp.resize_mode == "squash":
        return th, tw
    if pp.resize_mode == "shortest" and th == tw:
        # torchvision Resize(int): the shorter side becomes `th`, the longer one is scaled and truncated.
        short, long = min(h, w), max(h, w)
        new_long = int(th * long / short)
        return (th, new_long) if h <= w else (new_long, th)
    # open_clip ResizeKeepRatio: cover the target ("shortest") or fit inside it ("longest").
    ratio = min(h / th, w / tw) if pp.resize_mode == "shortest" else max(h / th, w / tw)
    return max(1, round(h / ratio)), max(1, round(w / ratio))


def _center_crop_or_pad(x: torch.Tensor, size: tuple[int, int], fill: float) -> torch.Tensor:
    """[N,C,H,W] -> [N,C,th,tw]: pad when smaller, then crop the centre with torchvision's rounding."""
    th, tw = size
    h, w = x.shape[-2:]
    if h < th or w < tw:
        pad_w, pad_h = max(tw - w, 0), max(th - h, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)
        h, w = x.shape[-2:]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def preprocess_images(img: torch.Tensor, pp: ClipPreprocess, mean: torch.Tensor, std: torch.Tensor, antialias: bool) -> torch.Tensor:
    """[N,3,H,W] in [-1,1] -> normalised CLIP input [N,3,*pp.size] (float32), differentiable."""
    assert img.ndim == 4 and img.shape[1] == 3, f"expected images [N,3,H,W], got {tuple(img.shape)}"
    x = (img.float() + 1) / 2
    h, w = x.shape[-2:]
    new_size = _resized_size(h, w, pp)
    if new_size != (h, w) and x.is_cuda and torch.are_deterministic_algorithms_enabled():
        x = resize_by_matmul(x, new_size, pp.interpolation, antialias)
    elif new_size != (h, w):  # torchvision skips the resize at equal size too
        x = F.interpolate(x, size=new_size, mode=pp.interpolation, align_corners=False, antialias=antialias)
    x = _center_crop_or_pad(x, pp.size, pp.fill)
    return (x - mean) / std


def resize_by_matmul(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """`F.interpolate` of [N,C,H,W] as two matrix products, equal to rounding; its backward is deterministic on CUDA.

    The resize is separable, so its matrices are the resize of one-hot columns; interpolate's own CUDA
    backward accumulates with atomics, whose order varies from run to run.
    """
    rows = _resize_matrix(x.shape[-2], size[0], mode, antialias, x.device)  # [h', H]
    cols = _resize_matrix(x.shape[-1], size[1], mode, antialias, x.device)  # [w', W]
    with torch.autocast(x.device.type, enabled=False):  # a bf16 run still resizes in float32, as interpolate does
        return rows @ x.float() @ cols.T


def _resize_matrix(n_in: int, n_out: int, mode: str, antialias: bool, device: torch.device) -> torch.Tensor:
    """[n_out, n_in]: how `F.interpolate` maps a line of n_in pixels to n_out (an identity image resized in height)."""
    with torch.no_grad():
        eye = torch.eye(n_in, device=device)[None, None]
        return F.interpolate(eye, size=(n_out, n_in), mode=mode, align_corners=False, antialias=antialias)[0, 0]


# ---------------------------------------------------------------- the model wrapper


class ClipModel(nn.Module):
    """A frozen CLIP in eval mode: images in [-1,1] and texts in, unnormalised features out."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        preprocess: ClipPreprocess,
        name: str,
        antialias: bool = True,
        input_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess_cfg = preprocess
        self.name = name
        self.antialias = antialias
        self.input_dtype = input_dtype
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "ClipModel":
        """CLIP stays in eval mode whatever its parent asks: it is a fixed judge, never trained."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the CLIP weights."""
        return self.mean.device

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of CLIP's input."""
        return self.preprocess_cfg.size

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) as a 0-dim tensor: 100 for OpenAI's releases."""
        return self.model.logit_scale.detach().float().exp().reshape(())

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [T, context_length] (int64) on the model's device."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def preprocess(self, img: torch.Tensor, antialias: bool | None = None) -> torch.Tensor:
        """[N,3,H,W] in [-1,1], any size -> CLIP input [N,3,S,S] (float32), inside the autograd graph."""
        aa = self.antialias if antialias is None else antialias
        return preprocess_images(img, self.preprocess_cfg, self.mean, self.std, aa)

    def encode_image(self, img: torch.Tensor, antialias: bool | None = None) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> unnormalised image features [N,D] (float32); gradients reach ``img``."""
        x = self.preprocess(img, antialias).to(self.input_dtype)
        return self.model.encode_image(x).float()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """List of T strings -> unnormalised text features [T,D] (float32)."""
        return self.model.encode_text(self.tokenize(texts)).float()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Same as ``encode_image``: [N,3,H,W] in [-1,1] -> [N,D]."""
        return self.encode_image(img)

    def extra_repr(self) -> str:
        """Name, input size and resize setting, shown by print(model)."""
        return f"name={self.name!r}, image_size={self.image_size}, antialias={self.antialias}"


# ---------------------------------------------------------------- spec parsing


def parse_clip_spec(spec: str) -> list[tuple[str, float]]:
    """``"ViT-B/32,ViT-B/16:0.5"`` -> ``[("ViT-B/32", 1.0), ("ViT-B/16", 0.5)]`` (weight 1 when omitted)."""
    entries: list[tuple[str, float]] = []
    for item in str(spec).split(","):
        item = item.strip()
        if not item:
            continue
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
        if name in (n for n, _ in entries):
            raise NadaError(f"bad CLIP model list {spec!r}: {name!r} appears twice (give each model once, with one weight)")
        entries.append((name, weight))
    if not entries:
        raise NadaError(f"bad CLIP model list {spec!r}: it names no model (write e.g. 'ViT-B/32' or 'ViT-B/32,ViT-B/16:0.5')")
    return entries


def load_clip_ensemble(
    spec: str, device: str | torch.device = "cpu", antialias: bool = True, precision: str = "fp32"
) -> list[tuple[ClipModel, float]]:
    """Load every model of ``"NAME[:WEIGHT],..."``; returns ``[(ClipModel, weight), ...]`` in spec order."""
    return [(load_clip(name, device, antialias=antialias, precision=precision), w) for name, w in parse_clip_spec(spec)]


def valid_names_hint() -> str:
    """One sentence listing every form of CLIP name that ``load_clip`` accepts."""
    return (
        f"use one of {', '.join(OPENAI_MODELS)}, {', '.join(map(repr, TOY_CLIPS))}, 'open_clip:MODEL/TAG' "
        "(pairs from open_clip.list_pretrained(), e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'), "
        "or the path of a weights file or model folder"
    )


# ---------------------------------------------------------------- loading


def load_clip(
    name: str, device: str | torch.device = "cpu", antialias: bool = True, precision: str = "fp32"
) -> ClipModel:
    """Load a frozen CLIP by name or path (see the module docstring) onto ``device``."""
    if precision not in PRECISIONS:
        raise NadaError(f"unknown CLIP precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    name = str(name).strip()
    if name in TOY_CLIPS:
        clip = _load_toy(name, device, antialias, precision)
    elif name in OPENAI_MODELS:
        clip = _load_pretrained(f"{OPENAI_MODELS[name]}-quickgelu", "openai", name, device, antialias, precision)
    elif name.startswith(OPEN_CLIP_PREFIX):
        model_name, sep, tag = name[len(OPEN_CLIP_PREFIX) :].partition("/")
        if not (sep and model_name and tag):
            raise NadaError(f"bad open_clip model {name!r}: write 'open_clip:MODEL/TAG', e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
        clip = _load_pretrained(model_name, tag, name, device, antialias, precision)
    elif Path(name).expanduser().is_dir():
        clip = _load_folder(Path(name).expanduser(), device, antialias, precision)
    elif Path(name).expanduser().is_file():
        clip = load_clip_openai_file(Path(name).expanduser(), device, antialias, precision)
    elif name.endswith(_WEIGHT_SUFFIXES) or name.startswith((".", "/", "~")) or "\\" in name:
        raise NadaError(f"CLIP weights {name!r} not found: check the path")
    else:
        raise NadaError(f"unknown CLIP model {name!r}: {valid_names_hint()}")
    return clip


def toy_clip_dir(name: str = TOY_NAME) -> Path:
    """Folder of one of the project's tiny CLIPs (``TOY_CLIPS``) inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets" / TOY_CLIPS[name][0]


def _toy_files(name: str) -> tuple[Path, Path]:
    """(clip_config.json, clip.pt) of a packaged toy CLIP; a clear error when the package lacks them."""
    folder = toy_clip_dir(name)
    config, weights = folder / "clip_config.json", folder / "clip.pt"
    if not (config.is_file() and weights.is_file()):
        raise NadaError(
            f"the toy CLIP files are missing from the installed package (expected {config} and {weights}): "
            "reinstall nada from a complete checkout (pip install -e .)"
        )
    return config, weights


def _load_toy(name: str, device: str | torch.device, antialias: bool, precision: str) -> ClipModel:
    """A packaged toy CLIP; one that shares another's token table gets the full table rebuilt first."""
    config, weights = _toy_files(name)
    base = TOY_CLIPS[name][1]
    if base is None:
        return load_clip_from_config(config, weights, device, antialias, precision, name=name)
    sd = unpack_token_table(_read_state_dict(weights), _read_state_dict(_toy_files(base)[1]))
    return load_clip_from_config(config, weights, device, antialias, precision, name=name, state_dict=sd)


def pack_token_table(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with its token table [V, D] replaced by the rows that differ from ``base``'s: indices [R], rows [R, D]."""
    table, base_table = sd[TOKEN_TABLE], base[TOKEN_TABLE]
    assert table.shape == base_table.shape, f"token tables differ in shape: {tuple(table.shape)} vs {tuple(base_table.shape)}"
    rows = torch.nonzero((table != base_table.to(table.dtype)).any(dim=1)).flatten()
    packed = {k: v for k, v in sd.items() if k != TOKEN_TABLE}
    packed[TABLE_ROWS], packed[TABLE_VALUES] = rows, table[rows].clone()
    return packed


def unpack_token_table(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_token_table``: the full state dict, its token table rebuilt from ``base``'s."""
    if TABLE_ROWS not in sd or TABLE_VALUES not in sd:
        raise NadaError(f"these CLIP weights do not hold {TABLE_ROWS} and {TABLE_VALUES}: they are not a shared-table copy")
    rows, values = sd[TABLE_ROWS].long(), sd[TABLE_VALUES]
    table = base[TOKEN_TABLE].to(values.dtype).clone()
    if values.shape != (len(rows), table.shape[1]) or (len(rows) and int(rows.max()) >= table.shape[0]):
        raise NadaError(f"the shared token table rows ({tuple(values.shape)}) do not fit the base table ({tuple(table.shape)}): "
                        "the copy and its base come from different models; reinstall nada")
    table[rows] = values
    full = {k: v for k, v in sd.items() if k not in (TABLE_ROWS, TABLE_VALUES)}
    full[TOKEN_TABLE] = table
    return full


def clip_cache_dir() -> Path:
    """Folder of downloaded and hand-placed CLIP weights: $NADA_CLIP_CACHE, default $NADA_CACHE/clip."""
    from nada.weights.download import cache_dir

    if os.environ.get("NADA_CLIP_CACHE"):
        return Path(os.environ["NADA_CLIP_CACHE"]).expanduser()
    return cache_dir() / "clip"


def offline() -> bool:
    """True when NADA_OFFLINE or HF_HUB_OFFLINE asks for no network access."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("NADA_OFFLINE", "HF_HUB_OFFLINE"))


def _as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size given as int or (H, W) -> (H, W)."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _short(e: BaseException, limit: int = 300) -> str:
    """An exception as one short line for an error message."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finish(model: nn.Module, tokenizer: Callable, pp: ClipPreprocess, name: str, device: str | torch.device,
            antialias: bool, precision: str) -> ClipModel:
    """Move to the device, lower the precision of matmul weights if asked, and wrap."""
    import open_clip

    model = model.to(device)
    dtype = PRECISIONS[precision]
    if dtype != torch.float32:
        # Same mixed precision as OpenAI's fp16 release: matmul weights low, LayerNorms in float32.
        open_clip.model.convert_weights_to_lp(model, dtype=dtype)
    return ClipModel(model, tokenizer, pp, name, antialias=antialias, input_dtype=dtype).to(device)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, read safely; a nested "state_dict" and "module." prefixes are unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        elif _is_torchscript_archive(path):
            sd = read_torchscript_tensors(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NadaError(f"CLIP weights {path} could not be read ({_short(e)}): "
                        "the file is truncated or not a weights file; download it again") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise NadaError(f"CLIP weights {path} hold a {type(sd).__name__}, not a state dict: give a CLIP state-dict file")
    # OpenAI's files carry three sizes as tensors; the architecture is read from the shapes instead.
    return {k.removeprefix("module."): v for k, v in sd.items()
            if isinstance(v, torch.Tensor) and k not in ("input_resolution", "context_length", "vocab_size")}


# ---------------------------------------------------------------- TorchScript archives, read as data only

# OpenAI distributes CLIP as TorchScript archives (the files in ~/.cache/clip). torch.load refuses them
# under weights_only=True and torch.jit.load compiles the code inside, so the tensors are read directly:
# the archive's data.pkl is unpickled with every TorchScript class replaced by an inert attribute holder.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a TorchScript class while unpickling: it only keeps the attributes it is given."""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """A tensor view of a flat storage, copied so it owns its memory."""
    return torch.as_strided(storage, size, stride, offset).clone()


def _first_argument(value: Any, *_: Any) -> Any:
    """TorchScript's type-tagging helpers (torch.jit._pickle) return their first argument unchanged."""
    return value


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript data.pkl allowing only tensor rebuilding; nothing from the file runs."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _first_argument
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected storage record {pid!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype)[:numel] if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _is_torchscript_archive(path: Path) -> bool:
    """True for a zip holding TorchScript code (``<prefix>/code/``) beside its ``data.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n for n in archive.namelist())


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript module archive, as a flat dict with dotted names (CPU)."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1)
        prefix = pkl[: -len("data.pkl")]
        root = _TorchScriptUnpickler(archive.read(pkl), archive, prefix).load()

    def walk(obj: Any, name: str) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        for key, value in vars(obj).items():
            if isinstance(value, torch.Tensor) and key != "attn_mask":  # masks are rebuilt, not weights
                found[name + key] = value
            elif isinstance(value, _ScriptObject):
                found.update(walk(value, f"{name}{key}."))
        return found

    if not isinstance(root, _ScriptObject):
        raise ValueError("the archive does not hold a TorchScript module")
    return walk(root, "")


def _build_openai_layout(sd: dict[str, torch.Tensor]) -> nn.Module:
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
    model = open_clip.CLIP(sd["text_projection"].shape[1], vision_cfg=vision, text_cfg=text, quick_gelu=True)
    model.load_state_dict(sd, strict=True)
    return model


def load_clip_openai_file(
    path: str | os.PathLike, device: str | torch.device = "cpu", antialias: bool = True, precision: str = "fp32",
    name: str | None = None,
) -> ClipModel:
    """Load a CLIP weights file in OpenAI's state-dict layout (the architecture follows from the shapes)."""
    import open_clip

    path = Path(path)
    sd = _read_state_dict(path)
    try:
        model = _build_openai_layout(sd)
    except (KeyError, RuntimeError, ValueError) as e:
        raise NadaError(
            f"CLIP weights {path} are not in OpenAI's CLIP layout ({_short(e)}): "
            "give an OpenAI CLIP state dict, or a folder with an open_clip config JSON beside the weights"
        ) from None
    pp = ClipPreprocess(size=_as_pair(model.visual.image_size))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return _finish(model, tokenizer, pp, name or str(path), device, antialias, precision)


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
        raise NadaError(f"CLIP config {config_path} is unreadable or incomplete ({_short(e)}): "
                        "it needs embed_dim, vision_cfg and text_cfg as in open_clip's model_configs") from None
    return model_cfg, pp_cfg


def load_clip_from_config(
    config_path: str | os.PathLike, weights_path: str | os.PathLike, device: str | torch.device = "cpu",
    antialias: bool = True, precision: str = "fp32", name: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> ClipModel:
    """Load an open_clip model from a config JSON (see ``read_clip_config``) and a weights file.

    The tokenizer is open_clip's default (OpenAI BPE, with the config's context length) unless
    ``text_cfg.hf_tokenizer_name`` names another. ``state_dict``, when given, holds the weights already
    read (and rebuilt) from ``weights_path``.
    """
    import open_clip

    config_path, weights_path = Path(config_path), Path(weights_path)
    model_cfg, pp_cfg = read_clip_config(config_path)
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
                text_cfg["hf_tokenizer_name"], context_length=text_cfg.get("context_length", 77))
        else:
            tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    except Exception as e:
        raise NadaError(f"CLIP model from {config_path} and {weights_path} could not be built ({_short(e)}): "
                        "check that the weights belong to that config and the file is complete") from None
    pp = ClipPreprocess.from_open_clip({**pp_cfg, "size": _as_pair(model.visual.image_size)})
    return _finish(model, tokenizer, pp, name or str(config_path.parent), device, antialias, precision)


def build_random_clip(
    name: str, device: str | torch.device = "cpu", seed: int = 0, antialias: bool = True, precision: str = "fp32"
) -> ClipModel:
    """The architecture of an OpenAI name or ``open_clip:MODEL[/TAG]`` with seeded random weights (benchmarks, tests)."""
    import open_clip

    if name in OPENAI_MODELS:
        model_name = f"{OPENAI_MODELS[name]}-quickgelu"
    elif name.startswith(OPEN_CLIP_PREFIX):
        model_name = name[len(OPEN_CLIP_PREFIX) :].partition("/")[0]
    else:
        raise NadaError(f"no architecture known for {name!r}: use one of {', '.join(OPENAI_MODELS)} or 'open_clip:MODEL'")
    if model_name not in open_clip.list_models():
        raise NadaError(f"unknown open_clip model {model_name!r}: see open_clip.list_models()")
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(seed)
        net = open_clip.create_model(model_name, pretrained=None, device="cpu")
    pp = ClipPreprocess.from_open_clip(net.visual.preprocess_cfg)
    return _finish(net, open_clip.get_tokenizer(model_name), pp, f"{name} (random)", device, antialias, precision)


def _load_folder(folder: Path, device: str | torch.device, antialias: bool, precision: str) -> ClipModel:
    """A folder with an open_clip config JSON and a weights file, named as in ``_CONFIG_NAMES``/``_WEIGHT_NAMES``."""
    config = next((folder / n for n in _CONFIG_NAMES if (folder / n).is_file()), None)
    weights = next((folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()), None)
    if config is None or weights is None:
        raise NadaError(
            f"CLIP folder {folder} needs a config ({' or '.join(_CONFIG_NAMES)}) "
            f"and weights ({' or '.join(_WEIGHT_NAMES)}): add the missing file"
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
        raise NadaError(f"open_clip model {model!r} has no pretrained tag {tag!r}: use one of {', '.join(tags) or '(none)'}")
    # open_clip's convention: "org/repo/" means the default file name, "org/repo/file.bin" names one.
    repo, filename = os.path.split(cfg["hf_hub"]) if cfg.get("hf_hub") else ("", "")
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip prefers a safetensors twin of the same weights when the repository has one.
    safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else os.path.splitext(filename)[0] + ".safetensors"
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


def _download_candidates(src: _PretrainedSource) -> list[tuple["WeightsSource", Path]]:
    """Each file holding the weights of `src`: its nada.weights.download source and place in clip_cache_dir(), best first."""
    from nada.weights.download import WeightsSource

    if src.hf_repo:
        return [(WeightsSource(f, hf_repo=src.hf_repo), clip_cache_dir() / f"{src.local_stem}{os.path.splitext(f)[1]}")
                for f in src.hf_files]
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
    source: "WeightsSource | None"  # the preferred file to download; None when open_clip knows no address
    dest: Path


def pretrained_weights(name: str) -> PretrainedWeights | None:
    """The weights file a pretrained CLIP name needs (None for toy CLIPs and paths); NadaError for unknown names."""
    name = str(name).strip()
    pair = _model_tag(name)
    if pair is None:
        return None  # toy CLIPs and paths; load_clip explains a malformed open_clip name
    src, _ = _pretrained_source(*pair, name)
    candidates = _download_candidates(src)
    source, dest = candidates[0] if candidates else (None, clip_cache_dir() / f"{src.local_stem}.pt")
    return PretrainedWeights(name, _find_cached(src), source, dest)


def fetch_pretrained_weights(name: str) -> Path:
    """The weights file of a pretrained CLIP name (OpenAI or open_clip:MODEL/TAG), downloaded when missing."""
    name = str(name).strip()
    pair = _model_tag(name)
    if pair is None:
        raise NadaError(f"{name!r} is not a pretrained CLIP name: {valid_names_hint()}")
    src, _ = _pretrained_source(*pair, name)
    return _pretrained_file(src, name)


def _model_tag(name: str) -> tuple[str, str] | None:
    """The open_clip (model, tag) pair of an OpenAI or 'open_clip:MODEL/TAG' name; None for any other name."""
    if name in OPENAI_MODELS:
        return f"{OPENAI_MODELS[name]}-quickgelu", "openai"
    model, sep, tag = name[len(OPEN_CLIP_PREFIX) :].partition("/")
    return (model, tag) if name.startswith(OPEN_CLIP_PREFIX) and sep and model and tag else None


def _pretrained_file(src: _PretrainedSource, display: str) -> Path:
    """Path of the weights file: found on this machine, else downloaded into clip_cache_dir() unless offline."""
    from nada.weights.download import fetch

    cached = _find_cached(src)
    if cached is not None:
        return cached
    candidates = _download_candidates(src)
    if not candidates:
        raise NadaError(f"CLIP weights for {display!r} are not on this machine and open_clip knows no address "
                        f"for them: save them as {clip_cache_dir() / src.local_stem}.pt")
    errors: list[NadaError] = []
    for source, dest in candidates:  # a repository may hold only the second (older) file name
        try:
            return fetch(source, "clip", dest=dest)
        except NadaError as e:
            errors.append(NadaError(f"CLIP {display!r}: {e}"))
            if offline():
                break
    raise errors[0]


def _load_pretrained(model: str, tag: str, display: str, device: str | torch.device, antialias: bool, precision: str) -> ClipModel:
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
        raise NadaError(f"CLIP weights {path} for {display!r} could not be loaded ({_short(e)}): "
                        "it is truncated or not the weights of that model; delete it and download it again") from None
    pp = ClipPreprocess.from_open_clip(net.visual.preprocess_cfg)
    tokenizer = open_clip.get_tokenizer(model)
    return _finish(net, tokenizer, pp, display, device, antialias, precision)
