"""StyleGAN2 generator in pure PyTorch with exactly the state-dict layout of rosinality's stylegan2-pytorch.

The module names, parameter names, shapes and buffers (``noises.noise_i``, blur ``kernel`` buffers,
``input.input``, ``style.1.weight`` ...) follow rosinality's ``Generator`` so that the public FFHQ
checkpoint loads with ``strict=True``. The arithmetic follows the same formulas, reorganised for speed:
activations are channels-last, the batch runs as one convolution per sample (no grouped
convolution), demodulation is a small matmul, blurs are depthwise convolutions instead of the
generic upfirdn2d, the skip up-sampling is one depthwise transposed convolution, and biases, the
sqrt(2) activation gain and noise are folded into as few passes over the activations as possible.
Outputs agree with the reference to float32 rounding (about 1e-5 on images of magnitude ~5).

That arrangement is the CPU's ("cpu" layout). On CUDA the generator switches, per call, to NCHW
activations with the batch folded into the groups of one convolution ("grouped" layout, the
reference's fused modulated convolution), or to a weight shared by the batch with the styles applied
to the activations ("activations" layout). `Generator.layout` forces one ("auto" chooses by device);
every layout computes the same numbers up to float32 rounding, from the same state dict.

Layout conventions: images are [N, 3, H, W] with values around [-1, 1]; latents z and w are
[N, style_dim]; W+ latents ("ws") are [N, n_latent, style_dim].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nada.dataclass_dict import strict_from_dict
from nada.errors import NadaError

NOISE_MODES = ("const", "random", "none")
# "auto" picks "grouped" for CUDA tensors and "cpu" otherwise (see the module docstring).
LAYOUTS = ("auto", "cpu", "grouped", "activations")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_layout(layout: str, device: torch.device) -> str:
    """The concrete layout for activations on `device`: "auto" becomes "grouped" on CUDA, "cpu" elsewhere."""
    if layout not in LAYOUTS:
        raise NadaError(f"unknown generator layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        return "grouped" if device.type == "cuda" else "cpu"
    return layout


# ---------------------------------------------------------------- configuration


def default_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table (resolution -> feature maps), restricted to resolutions 4 .. size."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {res: ch for res, ch in table.items() if res <= size}


@dataclass(frozen=True)
class GeneratorConfig:
    """Constructor arguments of `Generator`; `channels` is an optional (resolution, count) table."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    lr_mlp: float = 0.01
    channels: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        # Normalise containers so that equal configs compare equal and the dataclass stays hashable.
        object.__setattr__(self, "blur_kernel", tuple(int(k) for k in self.blur_kernel))
        if self.channels is not None:
            items = self.channels.items() if isinstance(self.channels, Mapping) else self.channels
            object.__setattr__(self, "channels", tuple(sorted((int(r), int(c)) for r, c in items)))
        if len(self.blur_kernel) < 2 or len(self.blur_kernel) % 2:
            raise NadaError(
                f"blur kernel {list(self.blur_kernel)} is not supported: give an even number of taps, e.g. [1, 3, 3, 1]"
            )
        log_size = math.log2(self.size) if self.size > 0 else 0.5
        if self.size < 8 or log_size != int(log_size):
            raise NadaError(f"generator size {self.size} is not supported: use a power of two >= 8 (e.g. 256 or 1024)")
        if self.n_mlp < 1 or self.style_dim < 1:
            raise NadaError(f"bad generator config (n_mlp={self.n_mlp}, style_dim={self.style_dim}): both must be >= 1")
        missing = [r for r in self.resolutions if r not in self.channel_table]
        if missing:
            raise NadaError(
                f"channel table {dict(self.channels or ())} lacks resolutions {missing}: give a count for every "
                f"resolution 4 .. {self.size}"
            )

    @property
    def resolutions(self) -> list[int]:
        """The synthesis resolutions 4, 8, ..., size."""
        return [2**i for i in range(2, int(math.log2(self.size)) + 1)]

    @property
    def channel_table(self) -> dict[int, int]:
        """Resolution -> feature maps actually used (the override, else rosinality's default table)."""
        if self.channels is None:
            return default_channels(self.size, self.channel_multiplier)
        return dict(self.channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (ints, floats, lists, an int->int dict) that `from_dict` turns back into this config."""
        d = asdict(self)
        d["blur_kernel"] = list(self.blur_kernel)
        d["channels"] = None if self.channels is None else dict(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeneratorConfig":
        """Inverse of `to_dict`; accepts string resolution keys as produced by JSON."""
        fix = "the checkpoint was written by another tool or version"
        return strict_from_dict(cls, d, "generator config keys", fix)


@dataclass(frozen=True)
class LayerInfo:
    """One synthesis layer: its module name inside the generator, kind, output resolution and driving W+ row."""

    name: str
    kind: str  # "conv" or "to_rgb"
    resolution: int
    wplus_index: int


# ---------------------------------------------------------------- low-level ops


def make_kernel(k: Sequence[int]) -> torch.Tensor:
    """Separable 1-D taps -> normalised 2-D FIR kernel [K, K] summing to 1."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, scale: float = math.sqrt(2)
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), leaky-ReLU, and multiply by sqrt(2) to keep unit variance; any [N, C, ...]."""
    assert x.shape[1] == bias.shape[0], f"bias for {bias.shape[0]} channels applied to {tuple(x.shape)}"
    b = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + b, negative_slope) * scale


def depthwise_fir(
    x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Convolve each channel of [N, C, H, W] with the 2-D FIR `kernel` after zero padding (pad0 before, pad1 after),
    plus an optional bias [C]."""
    c = x.shape[1]
    # F.conv2d correlates; flipping makes it a true convolution like upfirdn2d.
    w = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    if pad[0] == pad[1]:
        return F.conv2d(x, w, bias, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), w, bias, groups=c)


def grouped(op: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """op over the batch folded into groups: x [N, C, H, W] (NCHW), weight [N, A, B, k, k] -> [N, A', H', W'].

    `op` is F.conv2d (weight [N, out, in, k, k]) or F.conv_transpose2d (weight [N, in, out, k, k]).
    """
    n, _, h, w = x.shape
    out = op(x.reshape(1, -1, h, w), weight.reshape(-1, *weight.shape[2:]), groups=n, **kwargs)
    return out.view(n, -1, *out.shape[2:])


def per_sample(
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Apply op(x[i:i+1], weights[i]) to every sample of [N, ...] and stack the results along dim 0.

    One convolution per sample keeps the channels-last layout that the CPU convolutions are fast
    with (folding the batch into groups would need an NCHW copy) and gives every sample the same
    numbers whatever the batch it is computed in.
    """
    # split/unbind rather than indexing: their backward is one concatenation, not N zero-filled copies.
    outs = [op(xi, wi) for xi, wi in zip(x.split(1), weights.unbind(0))]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# ---------------------------------------------------------------- building blocks


class PixelNorm(nn.Module):
    """Normalise each latent [N, D] to unit root-mean-square over D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights scaled at run time), optional fused leaky-ReLU; [N, in] -> [N,
    out]."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 2 and x.shape[1] == self.weight.shape[1], (
            f"expected [N, {self.weight.shape[1]}], got {tuple(x.shape)}"
        )
        # Scaling the small product instead of the weight saves a pass over [out, in] on every call.
        out = torch.addmm(self.bias * self.lr_mul, x, self.weight.t(), alpha=self.scale)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.activation else out


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by the scaled leaky-ReLU; [N, C, H, W] -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class Blur(nn.Module):
    """FIR low-pass filter (rosinality `Blur`), applied as a depthwise convolution; [N, C, H, W] -> [N, C, H', W']."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        # The gain factor**2 restores the energy lost to the zeros inserted by a preceding up-sampling.
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return depthwise_fir(x, self.kernel, self.pad, bias)


class Upsample(nn.Module):
    """2x FIR up-sampling of [N, C, H, W] -> [N, C, 2H, 2W] (upfirdn2d with up=2 as one depthwise transposed conv)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        self.factor = factor
        k = self.kernel.shape[0]
        assert k % 2 == 0 and factor == 2, "the transposed-conv form needs an even kernel and factor 2"
        # upfirdn2d zero-inserts, pads pad0 = (p+1)//2 + factor-1 with p = k - factor, and convolves
        # with the kernel; a stride-2 transposed conv with the unflipped kernel and padding
        # k-1-pad0 = (k-2)//2 gives the same output.
        self.padding = (k - factor) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype)[None, None].expand(c, 1, *self.kernel.shape)
        return F.conv_transpose2d(x, w, stride=self.factor, padding=self.padding, groups=c)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated, optionally 2x up-sampling) convolution; x [N, C, H, W], style [N, D].

    Its output is a fresh tensor that `StyledConv` and `ToRGB` go on updating in place (to save
    memory passes), so hook the enclosing `StyledConv`/`ToRGB` to read activations.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        # Registration order matters: `weight`, then `blur`, then `modulation` as in the reference state dict.
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.layout = "auto"  # set for the whole generator by `Generator.layout`

    def styles(self, style: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample input-channel scales [N, in] from styles [N, style_dim], times (1 + domain [N or 1, in])."""
        s = self.modulation(style) * self.scale
        return s if domain is None else s * (1 + domain.to(s.dtype))

    def demodulation(self, s: torch.Tensor) -> torch.Tensor:
        """Output-channel factors [N, out] that give every modulated filter unit norm, from scales s [N, in]."""
        # sum over (in, k, k) of (w * s)^2 as a small matmul, without building per-sample weights.
        return torch.rsqrt(s.square() @ self.weight[0].square().sum([2, 3]).t() + 1e-8)

    def modulated_weight(
        self, style: torch.Tensor, gain: float = 1.0, domain: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-sample weights [N, out, in, k, k] from styles [N, style_dim] and a domain, times an output gain."""
        s = self.styles(style, domain)
        coef = s[:, None, :] * (self.demodulation(s)[:, :, None] * gain if self.demodulate else gain)
        return self.weight[0][None] * coef[..., None, None]

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        gain: float = 1.0,
        bias: torch.Tensor | None = None,
        domain: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """gain * modconv(x, style) + bias: x [N, in, H, W] -> [N, out, H', W']; domain [N or 1, in] scales styles."""
        n, c, h, w = x.shape
        assert c == self.in_channel, f"expected {self.in_channel} input channels, got {tuple(x.shape)}"
        assert style.ndim == 2 and style.shape[0] == n, f"style {tuple(style.shape)} does not match input batch {n}"
        layout = resolve_layout(self.layout, x.device)
        # Same result two ways; pick the one that touches less memory. Where a filter bank is
        # larger than a feature map (low resolutions), scale the activations and share one weight
        # across the batch; elsewhere build per-sample weights and convolve each sample with its own.
        if layout == "activations" or c * self.kernel_size**2 > h * w:
            return self._modulate_activations(x, style, gain, bias, domain)
        if layout == "grouped":
            return self._modulate_weights_grouped(x, style, gain, bias, domain)
        return self._modulate_weights(x, style, gain, bias, domain)

    def _modulate_weights(
        self, x: torch.Tensor, style: torch.Tensor, gain: float, bias: torch.Tensor | None, domain: torch.Tensor | None
    ) -> torch.Tensor:
        weight = self.modulated_weight(style, gain, domain)
        if self.upsample:
            # conv_transpose2d wants [in, out, k, k]; the bias goes after the blur, as in the reference.
            out = per_sample(lambda xi, wi: F.conv_transpose2d(xi, wi.transpose(0, 1), stride=2), x, weight)
            return self.blur(out, bias)
        return per_sample(lambda xi, wi: F.conv2d(xi, wi, bias, padding=self.padding), x, weight)

    def _modulate_weights_grouped(
        self, x: torch.Tensor, style: torch.Tensor, gain: float, bias: torch.Tensor | None, domain: torch.Tensor | None
    ) -> torch.Tensor:
        weight = self.modulated_weight(style, gain, domain)
        if self.upsample:
            out = grouped(F.conv_transpose2d, x, weight.transpose(1, 2), stride=2)
            return self.blur(out, bias)
        if bias is not None:
            bias = bias.repeat(x.shape[0])
        return grouped(F.conv2d, x, weight, bias=bias, padding=self.padding)

    def _modulate_activations(
        self, x: torch.Tensor, style: torch.Tensor, gain: float, bias: torch.Tensor | None, domain: torch.Tensor | None
    ) -> torch.Tensor:
        n = x.shape[0]
        s = self.styles(style, domain)
        x = x * s.view(n, -1, 1, 1)
        w = self.weight[0]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, w.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, w, padding=self.padding)
        d = self.demodulation(s) * gain if self.demodulate else s.new_full((n, self.out_channel), gain)
        if bias is None:
            return out * d.view(n, -1, 1, 1)
        return torch.addcmul(bias.view(1, -1, 1, 1), out, d.view(n, -1, 1, 1))


class NoiseInjection(nn.Module):
    """Add per-pixel noise [N or 1, 1, H, W] scaled by one learned strength; `None` adds nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        assert noise.ndim == 4 and noise.shape[1] == 1 and noise.shape[2:] == x.shape[2:], (
            f"noise {tuple(noise.shape)} does not fit activations {tuple(x.shape)}"
        )
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 constant that starts synthesis, repeated over the batch; -> [N, C, 4, 4]."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv + noise + biased leaky-ReLU: one synthesis "conv" layer; [N, C, H, W] -> [N, C', H', W']."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None, domain: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Same as activate(noise(conv(x))), with fewer passes over the activations: the bias rides
        # in the convolution and the sqrt(2) gain of the activation is folded into the linear part
        # (leaky_relu(g*y) = g*leaky_relu(y) for g > 0).
        gain = math.sqrt(2)
        out = self.conv(x, style, gain=gain, bias=self.activate.bias * gain, domain=domain)
        if noise is not None:
            assert noise.ndim == 4 and noise.shape[1] == 1 and noise.shape[2:] == out.shape[2:], (
                f"noise {tuple(noise.shape)} does not fit activations {tuple(out.shape)}"
            )
            # In place on the fresh conv output: the convolution's backward does not need it.
            out = out.add_(self.noise.weight * gain * noise)
        return F.leaky_relu_(out, 0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB plus bias, added to the up-sampled previous RGB skip; -> [N, 3, H, W]."""

    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        # Registration order matters: `bias`, `upsample`, `conv` as in the reference state dict.
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None, domain: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, style, bias=self.bias.view(3), domain=domain)
        if skip is not None:
            out = out.add_(self.upsample(skip))  # in place on a fresh tensor, safe for autograd
        return out


# ---------------------------------------------------------------- generator


class _NoDomainSlices(dict):
    """Every layer's domain slice is None: the mapping `Generator.synthesis` reads when it renders the base."""

    def __missing__(self, key: str) -> None:
        return None


_NO_DOMAIN = _NoDomainSlices()


class Generator(nn.Module):
    """StyleGAN2 generator (rosinality layout): mapping z -> w and synthesis W+ -> image [N, 3, size, size]."""

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | None = None,
    ) -> None:
        super().__init__()
        cfg = GeneratorConfig(size, style_dim, n_mlp, channel_multiplier, tuple(blur_kernel), lr_mlp, channels)  # type: ignore[arg-type]
        self.config = cfg
        self.size, self.style_dim = size, style_dim
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.channels = cfg.channel_table
        ch, bk = self.channels, cfg.blur_kernel

        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)]
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=bk)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty, kept so the module tree mirrors the reference
        self.to_rgbs = nn.ModuleList()
        in_channel = ch[4]
        for res in cfg.resolutions[1:]:
            self.convs.append(StyledConv(in_channel, ch[res], 3, style_dim, upsample=True, blur_kernel=bk))
            self.convs.append(StyledConv(ch[res], ch[res], 3, style_dim, blur_kernel=bk))
            self.to_rgbs.append(ToRGB(ch[res], style_dim, blur_kernel=bk))
            in_channel = ch[res]
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        # Not part of the state dict, so the state dict equals the reference layout; loaders set it.
        self.register_buffer("mean_latent", torch.zeros(style_dim), persistent=False)
        self._layout = "auto"

    @property
    def layout(self) -> str:
        """Activation layout of the convolutions: "auto" (by device), "cpu", "grouped" or "activations"."""
        return self._layout

    @layout.setter
    def layout(self, value: str) -> None:
        resolve_layout(value, torch.device("cpu"))  # rejects unknown names
        self._layout = value
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.layout = value

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (float32 unless the generator was cast, see `set_precision`)."""
        return self.input.input.dtype

    def set_precision(self, precision: str) -> "Generator":
        """Cast weights and buffers to "fp32" or "bf16" (native bf16 weights, no autocast); returns self."""
        if precision not in PRECISIONS:
            raise NadaError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        return self.to(PRECISIONS[precision])

    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> "Generator":
        """Build a generator (random weights) from a `GeneratorConfig`."""
        return cls(
            cfg.size,
            cfg.style_dim,
            cfg.n_mlp,
            cfg.channel_multiplier,
            cfg.blur_kernel,
            cfg.lr_mlp,
            cfg.channel_table if cfg.channels is not None else None,
        )

    # ------------------------------------------------------------ latents

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [N, style_dim] -> w [N, style_dim]."""
        assert z.ndim == 2 and z.shape[1] == self.style_dim, f"z must be [N, {self.style_dim}], got {tuple(z.shape)}"
        return self.style(z.to(self.dtype))

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """Move w [N, style_dim] (or ws [N, L, style_dim]) towards `mean_latent` by factor psi (1 = unchanged)."""
        if psi == 1:
            return w
        if not bool(self.mean_latent.any()):
            raise NadaError(
                "truncation needs the mean latent, which is not set: load a checkpoint that stores it or call "
                "G.compute_mean_latent()"
            )
        return self.mean_latent + psi * (w - self.mean_latent)

    def broadcast_w(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, style_dim] -> ws [N, n_latent, style_dim] (the same w for every layer)."""
        assert w.ndim == 2 and w.shape[1] == self.style_dim, f"w must be [N, {self.style_dim}], got {tuple(w.shape)}"
        return w.unsqueeze(1).repeat(1, self.n_latent, 1)

    def mix_ws(self, w1: torch.Tensor, w2: torch.Tensor, inject_index: int) -> torch.Tensor:
        """Style mixing: ws [N, n_latent, style_dim] with rows < inject_index from w1 [N, D], the rest from w2 [N,
        D]."""
        assert w1.shape == w2.shape, f"w1 {tuple(w1.shape)} and w2 {tuple(w2.shape)} differ"
        assert 0 <= inject_index <= self.n_latent, f"inject_index {inject_index} outside 0 .. {self.n_latent}"
        ws1, ws2 = self.broadcast_w(w1), self.broadcast_w(w2)
        return torch.cat([ws1[:, :inject_index], ws2[:, inject_index:]], dim=1)

    @torch.no_grad()
    def compute_mean_latent(self, n: int = 4096, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
        """Set and return `mean_latent` [style_dim]: the mean of w over n latents z drawn on the CPU from `seed`."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.style_dim, generator=gen)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=self.mean_latent.device)
        for chunk in z.split(batch_size):
            total += self.mapping(chunk.to(self.mean_latent)).double().sum(0)
        self.mean_latent.copy_(total / n)
        return self.mean_latent

    # ------------------------------------------------------------ synthesis

    def noise_buffers(self) -> list[torch.Tensor]:
        """The stored per-layer noise tensors [1, 1, r, r], in layer order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _layer_noise(
        self, i: int, noise: Sequence[torch.Tensor] | None, noise_mode: str, ref: torch.Tensor
    ) -> torch.Tensor | None:
        """Noise [N or 1, 1, r, r] for conv layer i from the explicit list or the mode; `ref` gives batch, device,
        dtype."""
        if noise is not None:
            return noise[i]
        if noise_mode == "const":
            return getattr(self.noises, f"noise_{i}")
        if noise_mode == "random":
            r = 2 ** ((i + 5) // 2)
            return torch.randn(ref.shape[0], 1, r, r, device=ref.device, dtype=ref.dtype)
        return None

    def synthesis(
        self,
        ws: torch.Tensor,
        noise: Sequence[torch.Tensor] | None = None,
        noise_mode: str = "const",
        domain: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synthesis network: ws [N, n_latent, style_dim] -> image [N, 3, size, size] (about [-1, 1]).

        ``domain`` is a domain vector [D] or one per sample [N, D] (D = `domain_size`, layers in
        `domain_channels` order): every layer's styles are scaled by (1 + its slice); None renders the base.
        """
        assert ws.ndim == 3 and ws.shape[1:] == (self.n_latent, self.style_dim), (
            f"ws must be [N, {self.n_latent}, {self.style_dim}], got {tuple(ws.shape)}"
        )
        if noise_mode not in NOISE_MODES:
            raise NadaError(f"unknown noise_mode {noise_mode!r}: use one of {', '.join(NOISE_MODES)}")
        if noise is not None:
            assert len(noise) == self.num_layers, f"expected {self.num_layers} noise tensors, got {len(noise)}"
        # Noise for layer i is drawn right before that layer, so random mode uses the RNG in layer order.
        # Channels-last activations: the CPU convolutions (oneDNN) are faster in that layout (docs/performance.md).
        ws = ws.to(self.dtype)
        noise = None if noise is None else [n.to(self.dtype) for n in noise]
        fmt = torch.channels_last if resolve_layout(self._layout, ws.device) == "cpu" else torch.contiguous_format
        d = self._domain_slices(domain, ws.shape[0])
        out = self.input(ws.shape[0]).contiguous(memory_format=fmt)
        out = self.conv1(out, ws[:, 0], self._layer_noise(0, noise, noise_mode, ws), d["conv1"])
        skip = self.to_rgb1(out, ws[:, 1], domain=d["to_rgb1"])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1  # index of the up-sampling conv, both in noise layers and W+ rows
            out = self.convs[2 * j](out, ws[:, i], self._layer_noise(i, noise, noise_mode, ws), d[f"convs.{2 * j}"])
            noise_i = self._layer_noise(i + 1, noise, noise_mode, ws)
            out = self.convs[2 * j + 1](out, ws[:, i + 1], noise_i, d[f"convs.{2 * j + 1}"])
            skip = to_rgb(out, ws[:, i + 2], skip, d[f"to_rgbs.{j}"])
        return skip.contiguous()

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        noise: Sequence[torch.Tensor] | None = None,
        noise_mode: str = "const",
        domain: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z [N, style_dim] -> image [N, 3, size, size], truncated towards `mean_latent` (domain: see `synthesis`)."""
        w = self.truncate(self.mapping(z), truncation_psi)
        return self.synthesis(self.broadcast_w(w), noise=noise, noise_mode=noise_mode, domain=domain)

    # ------------------------------------------------------------ domain vectors (see nada.generator.domains)

    def domain_channels(self) -> list[tuple[str, int]]:
        """(layer name, style channels) of every modulated layer in `layer_table` order: a domain vector's layout."""
        return [(info.name, self.get_submodule(info.name).conv.in_channel) for info in self.layer_table()]

    @property
    def domain_size(self) -> int:
        """Numbers in one domain vector: the style channels of every modulated conv and to_rgb layer."""
        return sum(c for _, c in self.domain_channels())

    def _domain_slices(self, domain: torch.Tensor | None, n: int) -> dict[str, torch.Tensor | None]:
        """Layer name -> its slice [N or 1, channels] of a domain vector [D] or [N, D]; every value None without one."""
        if domain is None:  # the base's forward pass: nothing to compute per call
            return _NO_DOMAIN
        layers = self.domain_channels()
        rows = domain.reshape(1, -1) if domain.ndim == 1 else domain
        if rows.ndim != 2 or rows.shape[1] != self.domain_size or rows.shape[0] not in (1, n):
            raise NadaError(
                f"domain vector of shape {list(domain.shape)} does not fit this generator: "
                f"give [{self.domain_size}] or [{n}, {self.domain_size}] (one per sample)"
            )
        parts = rows.split([c for _, c in layers], dim=1)
        return {name: part for (name, _), part in zip(layers, parts)}

    # ------------------------------------------------------------ introspection

    def layer_table(self) -> list[LayerInfo]:
        """Every synthesis layer in execution order with the W+ row that drives it (conv1<-0, to_rgb1<-1, convs[k]<-k+1,
        to_rgbs[j]<-2j+3)."""
        table = [LayerInfo("conv1", "conv", 4, 0), LayerInfo("to_rgb1", "to_rgb", 4, 1)]
        for j in range(len(self.to_rgbs)):
            res = 2 ** (j + 3)
            table.append(LayerInfo(f"convs.{2 * j}", "conv", res, 2 * j + 1))
            table.append(LayerInfo(f"convs.{2 * j + 1}", "conv", res, 2 * j + 2))
            table.append(LayerInfo(f"to_rgbs.{j}", "to_rgb", res, 2 * j + 3))
        return table
