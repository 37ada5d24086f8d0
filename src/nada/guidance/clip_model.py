"""The frozen CLIP wrapper of the NADA losses (`ClipModel`) and its differentiable preprocessing.

Preprocessing (``ClipModel.preprocess``) maps generator output in [-1, 1] to CLIP input inside the
autograd graph: ``(x + 1) / 2``, bicubic resize of the shorter side to the model's input size, centre
crop, mean/std normalisation. The resize is antialiased by default: that is what current torchvision
does in CLIP's own preprocessing of PIL images, and without it a 1024 -> 224 resize reads a 4x4
bicubic window per output pixel, so detail finer than the output grid aliases into the features the
generator is trained against. ``antialias=False`` reproduces the official StyleGAN-NADA numbers,
computed with the non-antialiased tensor resize of the torchvision of its time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def preprocess_images(
    img: torch.Tensor, pp: ClipPreprocess, mean: torch.Tensor, std: torch.Tensor, antialias: bool
) -> torch.Tensor:
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
        self.register_buffer(
            "mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
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


def wrap_clip(
    model: nn.Module,
    tokenizer: Callable,
    pp: ClipPreprocess,
    name: str,
    device: str | torch.device,
    antialias: bool,
    precision: str,
) -> ClipModel:
    """Move to the device, lower the precision of matmul weights if asked, and wrap."""
    import open_clip

    model = model.to(device)
    dtype = PRECISIONS[precision]
    if dtype != torch.float32:
        # Same mixed precision as OpenAI's fp16 release: matmul weights low, LayerNorms in float32.
        open_clip.model.convert_weights_to_lp(model, dtype=dtype)
    return ClipModel(model, tokenizer, pp, name, antialias=antialias, input_dtype=dtype).to(device)


def as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size given as int or (H, W) -> (H, W)."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
