"""Perceptual losses for GAN inversion: LPIPS, the ArcFace identity loss, and a CLIP-feature distance.

Every distance is an ``nn.Module`` whose ``forward(x, y)`` takes two batches [N, 3, H, W] in [-1, 1]
and returns one value per pair, [N] (lower is closer); the networks are frozen and stay in eval mode.

- `LPIPS` (Zhang et al. 2018, version 0.1): ImageNet VGG-16 or AlexNet features at five ReLU taps,
  each unit-normalised over channels, squared differences weighted per channel by the learned linear
  layers, averaged over space and summed over taps. The backbone weights are torchvision's ImageNet
  files, the linear layers the ones released with the paper.
- `IdentityLoss`: 1 - cosine similarity of ArcFace embeddings from the IR-SE50 network (`IRSE50`,
  TreB1eN's InsightFace_Pytorch model ``model_ir_se50.pth``, the file the pSp/e4e/StyleGAN-NADA
  literature uses), on the face region of a 256x256 view, as in pSp's ID loss.
- `ClipFeatureDistance`: LPIPS's recipe without learned weights on a CLIP vision transformer's token
  maps (unit-normalised tokens, squared differences, spatial mean, mean over blocks): the distance for a
  base whose images LPIPS's ImageNet features do not know, with a CLIP trained on exactly them.

Weights files are resolved in one place, `resolve_weights`, from the table `WEIGHTS` (sources in the
format of `nada.weights.download`): nada's cache (``$NADA_CACHE/weights/<key>/<file>``) first, then places
where other tools already keep the same files (torch's hub cache for torchvision's ImageNet files,
the ``lpips`` package for the linear layers), and finally a download into nada's cache by
`nada.weights.download.fetch`. The
ArcFace file is only published on Google Drive, which serves a web page rather than the file to
programs, so it is never downloaded: the error names the address and the exact path to save it as.
All files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nada.errors import NadaError, one_line
from nada.weights import download
from nada.weights.download import WeightsSource, local_path, missing_file_error
from nada.weights.safe_load import read_state_dict

WEIGHTS: dict[str, WeightsSource] = {
    "lpips-vgg": WeightsSource(
        "vgg.pth", url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
    ),
    "lpips-alex": WeightsSource(
        "alex.pth", url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
    ),
    # torchvision's ImageNet weights; the 8 hex digits in the names are the start of their SHA-256.
    "vgg16-imagenet": WeightsSource("vgg16-397923af.pth", url="https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alexnet-imagenet": WeightsSource(
        "alexnet-owt-7be5be79.pth", url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    ),
    # FID/KID's Inception-v3 (the TF FID network as converted by torch-fidelity), for nada.evaluation.evaluate via
    # torchmetrics.
    "inception-fid": WeightsSource(
        "weights-inception-2015-12-05-6726825d.pth",
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
    ),
    "arcface-ir-se50": WeightsSource(
        "model_ir_se50.pth", url="https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view?usp=sharing"
    ),
}
MANUAL_ONLY = frozenset({"arcface-ir-se50"})  # hosted where programs cannot download: placed by hand
LPIPS_NETS = ("vgg", "alex")
LPIPS_MAX_SIDE = 256  # larger images are area-downsampled first, as in rosinality's projector

# net -> (feature indices that end each tap, channels per tap, backbone weights key)
_LPIPS_ARCH: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {
    "vgg": ((4, 9, 16, 23, 30), (64, 128, 256, 512, 512), "vgg16-imagenet"),
    "alex": ((2, 5, 8, 10, 12), (64, 192, 384, 256, 256), "alexnet-imagenet"),
}


# ---------------------------------------------------------------- weights


def _elsewhere(key: str) -> list[Path]:
    """Places other tools keep the same file: torch's hub cache (torchvision), the lpips package's weights folder."""
    name = WEIGHTS[key].filename
    places = [Path(torch.hub.get_dir()) / "checkpoints" / name]
    if key.startswith("lpips-"):
        spec = importlib.util.find_spec("lpips")  # located, not imported
        for folder in (spec.submodule_search_locations or []) if spec else []:
            places.append(Path(folder) / "weights" / "v0.1" / name)
    return places


def resolve_weights(key: str, progress: bool = True) -> Path:
    """Local path of the weights file `key` of `WEIGHTS`, downloading it into nada's cache when allowed and possible."""

    if key not in WEIGHTS:
        raise NadaError(f"unknown weights {key!r}: use one of {', '.join(sorted(WEIGHTS))}")
    source = WEIGHTS[key]
    dest = local_path(source, key)
    for path in (dest, *_elsewhere(key)):  # a file placed in nada's cache wins
        if path.is_file():
            return path
    if key in MANUAL_ONLY:
        raise missing_file_error(
            source, dest, "it cannot be downloaded automatically (Google Drive serves a web page, not the file)"
        )
    return download.fetch(source, key, progress=progress)


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """load_state_dict(strict=True) with a NadaError naming the file when the weights do not fit."""
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        why = one_line(e)
        raise NadaError(f"{path} does not hold the {what} weights ({why}): fetch the right file again") from None


# ---------------------------------------------------------------- LPIPS


def _unit_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise feature maps [N, C, H, W] to unit length over channels (LPIPS's normalize_tensor)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG-16 ``features`` up to relu5_3 (indices 0 .. 29, same state-dict keys), without the
    classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            cin = int(v)
    return nn.Sequential(*layers)


def _alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` up to relu5 (indices 0 .. 11, same state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class LPIPS(nn.Module):
    """LPIPS v0.1 distance: x, y [N, 3, H, W] in [-1, 1] -> [N]; `net` is "vgg" or "alex"."""

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in _LPIPS_ARCH:
            raise NadaError(f"unknown LPIPS network {net!r}: use one of {', '.join(LPIPS_NETS)}")
        taps, channels, _ = _LPIPS_ARCH[net]
        self.net = net
        self.taps = taps
        self.features = _vgg16_features() if net == "vgg" else _alexnet_features()
        assert len(self.features) == taps[-1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        # LPIPS v0.1 maps [-1, 1] inputs to roughly ImageNet-normalised ones with these constants.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPS":
        """Always eval: a frozen metric (its dropout must never fire)."""
        return super().train(False)

    def load_weights(self, backbone: Path, linear: Path) -> "LPIPS":
        """Load torchvision's ImageNet file (its ``features.*`` part) and the LPIPS linear layers
        (``lin{k}.model.1.weight``)."""
        sd = read_state_dict(backbone)
        feats = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
        feats = {k: v for k, v in feats.items() if int(k.split(".")[0]) < self.taps[-1]}
        _load_into(self.features, feats, backbone, f"torchvision {self.net} ImageNet")
        lin = read_state_dict(linear)
        lins = {
            f"{k}.weight": lin.get(f"lin{k}.model.1.weight", lin.get(f"lin{k}.weight")) for k in range(len(self.lins))
        }
        if any(v is None for v in lins.values()):
            raise NadaError(
                f"{linear} does not hold LPIPS linear layers (lin0 .. lin{len(self.lins) - 1}): fetch the right file "
                "again"
            )
        _load_into(self.lins, lins, linear, f"LPIPS {self.net} linear-layer")
        return self

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone activations at the five taps for x [N, 3, H, W] in [-1, 1]."""
        h = (x - self.shift) / self.scale
        out, start = [], 0
        for end in self.taps:
            for i in range(start, end):
                h = self.features[i](h)
            out.append(h)
            start = end
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per pair: x, y [N, 3, H, W] in [-1, 1] -> [N]."""
        assert x.shape == y.shape and x.ndim == 4 and x.shape[1] == 3, (
            f"expected equal [N, 3, H, W], got {tuple(x.shape)}, {tuple(y.shape)}"
        )
        n = x.shape[0]
        feats = self.tap_features(torch.cat([x, y]).float())
        total = x.new_zeros(n, dtype=torch.float32)
        for f, lin in zip(feats, self.lins):
            d = (_unit_channels(f[:n]) - _unit_channels(f[n:])).pow(2)
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total


def load_lpips(net: str = "vgg", device: str | torch.device = "cpu", progress: bool = True) -> LPIPS:
    """LPIPS with pretrained weights on `device`; NadaError (saying which file to put where) when they are
    unavailable."""
    if net not in _LPIPS_ARCH:
        raise NadaError(f"unknown LPIPS network {net!r}: use one of {', '.join(LPIPS_NETS)}")
    backbone = resolve_weights(_LPIPS_ARCH[net][2], progress)
    linear = resolve_weights(f"lpips-{net}", progress)
    return LPIPS(net).load_weights(backbone, linear).to(device)


def downsample_for_lpips(img: torch.Tensor, max_side: int = LPIPS_MAX_SIDE) -> torch.Tensor:
    """Area-downsample [N, 3, H, W] so its longer side is at most `max_side` (LPIPS was calibrated on small images)."""
    h, w = img.shape[-2:]
    if max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return F.interpolate(img, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")


# ---------------------------------------------------------------- ArcFace IR-SE50


class _SqueezeExcite(nn.Module):
    """Channel gating: x * sigmoid(fc2(relu(fc1(mean over space of x)))), with 1x1 convolutions."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class _Unit(nn.Module):
    """Improved-residual unit with squeeze-excitation: BN-conv-PReLU-conv(stride)-BN-SE plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cin == cout:  # identity, subsampled by a 1x1 max-pool when strided (as in the released model)
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            _SqueezeExcite(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 (state-dict layout of ``model_ir_se50.pth``): faces [N, 3, 112, 112] in [-1, 1] -> unit
    embeddings [N, 512]."""

    STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # (channels, units); the first unit of each stage has stride 2

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, cin = [], 64
        for cout, n in self.STAGES:
            units += [_Unit(cin, cout, 2)] + [_Unit(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)
        )
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "IRSE50":
        """Always eval: batch-norm statistics and dropout stay fixed."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 112, 112] in [-1, 1] -> L2-normalised embeddings [N, 512]."""
        assert x.ndim == 4 and x.shape[1:] == (3, 112, 112), f"IR-SE50 takes [N, 3, 112, 112], got {tuple(x.shape)}"
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


class IdentityLoss(nn.Module):
    """1 - cos(ArcFace(x), ArcFace(y)) per pair, x, y [N, 3, H, W] in [-1, 1] -> [N], on FFHQ-aligned faces."""

    def __init__(self, net: IRSE50) -> None:
        super().__init__()
        self.net = net

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Aligned faces [N, 3, H, W] in [-1, 1] -> embeddings [N, 512]: 256x256 view, pSp's face crop, 112x112
        pooling."""
        if img.shape[-2:] != (256, 256):
            img = F.interpolate(img.float(), size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
        face = img[:, :, 35:223, 32:220]  # the region ArcFace was trained on, inside an FFHQ-aligned crop
        return self.net(F.adaptive_avg_pool2d(face, (112, 112)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Identity distance per pair: [N]."""
        assert x.shape == y.shape, f"x {tuple(x.shape)} and y {tuple(y.shape)} differ"
        e = self.embed(torch.cat([x, y]))
        n = x.shape[0]
        return 1 - (e[:n] * e[n:]).sum(dim=1)


def load_identity_loss(device: str | torch.device = "cpu", progress: bool = True) -> IdentityLoss:
    """The ArcFace identity loss with ``model_ir_se50.pth``; NadaError (saying where to put the file) when missing."""
    path = resolve_weights("arcface-ir-se50", progress)
    net = IRSE50()
    _load_into(net, read_state_dict(path), path, "ArcFace IR-SE50")
    return IdentityLoss(net).to(device)


# ---------------------------------------------------------------- CLIP token features


class ClipFeatureDistance(nn.Module):
    """Unweighted LPIPS on a CLIP vision transformer's token maps: x, y [N, 3, H, W] in [-1, 1] -> [N]."""

    def __init__(self, clip: nn.Module, blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        visual = clip.model.visual
        if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "transformer"):
            raise NadaError(
                f"CLIP {getattr(clip, 'name', '?')} has no vision transformer: the CLIP feature distance needs a ViT "
                "CLIP"
            )
        self.clip = clip
        n = len(visual.transformer.resblocks)
        self.blocks = list(blocks) if blocks is not None else list(range(n))
        assert all(0 <= b < n for b in self.blocks), f"blocks {self.blocks} outside 0 .. {n - 1}"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per pair [N]: mean over blocks of the spatial mean of squared differences of unit-normalised
        tokens."""
        assert x.shape == y.shape and x.ndim == 4, (
            f"expected equal [N, 3, H, W], got {tuple(x.shape)}, {tuple(y.shape)}"
        )
        n = x.shape[0]
        inp = self.clip.preprocess(torch.cat([x, y])).to(self.clip.input_dtype)
        maps = self.clip.model.visual.forward_intermediates(inp, indices=self.blocks, intermediates_only=True)[
            "image_intermediates"
        ]
        total = x.new_zeros(n, dtype=torch.float32)
        for f in maps:
            f = f.float()
            total = total + (_unit_channels(f[:n]) - _unit_channels(f[n:])).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total / len(maps)
