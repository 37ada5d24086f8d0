"""GAN inversion: find the W+ code for which the base generator redraws a given (aligned) image.

Optimisation-based inversion in the extended latent space W+ (one style vector per generator layer,
Abdal et al. 2019), started from the mean latent so the search begins at the "average face". The
loss per image is

    lambda_mse * MSE(G(w+), x) + lambda_lpips * perceptual(G(w+), x) + lambda_id * identity(G(w+), x)

with LPIPS as the perceptual distance and the ArcFace identity loss for real faces (defaults 0.8,
0.5, 1.0 as in the StyleGAN/e4e literature). A base whose profile (`nada.profiles`) brings its own
perceptual distance uses that instead of LPIPS, and the identity loss only where the profile says it
applies (the identity network knows human faces only). Adam with the learning-rate schedule of
rosinality's projector (short warm-up, cosine ramp-down). Noise stays the generator's stored constant noise,
so the code found renders the same image in every generator adapted from this base (`render_wplus`).

`build_losses` loads the networks and refuses, naming the missing file, when a wanted loss has no
weights, unless ``allow_missing=True``, in which case that loss is dropped and reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nada.errors import NadaError
from nada.photos import perceptual as P
from nada.photos.perceptual import downsample_for_lpips
from nada.profiles import Profile, profile_base, profile_for

# "face": LPIPS and ArcFace; "profile": the perceptual distance of the base's profile (nada.profiles).
LOSS_KINDS = ("face", "profile")


@dataclass(frozen=True)
class InvertConfig:
    """Settings of one inversion: steps, learning rate and the weight of each loss."""

    steps: int = 300
    lr: float = 0.1
    lambda_mse: float = 0.8
    lambda_lpips: float = 0.5
    lambda_id: float = 1.0
    lpips_net: str = "vgg"  # "vgg" (the inversion literature's choice) or "alex"
    lr_rampup: float = 0.05  # fraction of the steps spent warming the learning rate up
    lr_rampdown: float = 0.25  # fraction of the steps over which it decays to zero at the end
    noise_mode: str = "const"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise NadaError(f"inversion steps {self.steps} is negative: use 0 or more (e.g. 300)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise NadaError(f"inversion learning rate {self.lr} is invalid: use a positive number such as 0.1")
        for name in ("lambda_mse", "lambda_lpips", "lambda_id"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise NadaError(f"loss weight {name}={v} is invalid: use 0 or a positive number")
        if self.lambda_mse + self.lambda_lpips + self.lambda_id == 0:
            raise NadaError("every inversion loss weight is 0: give at least one loss a positive weight")
        if self.lpips_net not in ("vgg", "alex"):
            raise NadaError(f"unknown LPIPS network {self.lpips_net!r}: use vgg or alex")
        if self.noise_mode not in ("const", "none"):
            raise NadaError(
                f"inversion noise mode {self.noise_mode!r} is invalid: "
                "use const or none (random noise cannot be inverted)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict of every setting."""
        return asdict(self)


@dataclass
class ReconstructionLosses:
    """The loss networks an inversion uses; None where a loss is off, dropped or does not apply."""

    perceptual: nn.Module | None = None
    perceptual_name: str = ""  # "LPIPS (vgg)", or the name a base's profile gives its own distance
    identity: nn.Module | None = None
    dropped: list[str] = field(default_factory=list)  # one line per loss dropped for missing weights

    def to(self, device: str | torch.device) -> "ReconstructionLosses":
        """Move every network to `device`."""
        for m in (self.perceptual, self.identity):
            if m is not None:
                m.to(device)
        return self


def base_profile(base: str, metadata: Mapping[str, Any] | None = None) -> Profile | None:
    """The profile of `base`, or of the registered base its nada metadata names; None when it has none."""
    profile = profile_for(str(base))
    for key in ("base_model", "base"):
        value = (metadata or {}).get(key)
        if profile is None and isinstance(value, str) and profile_base(value) is not None:
            profile = profile_for(value)
    return profile


def loss_kind_for_base(base: str, metadata: Mapping[str, Any] | None = None) -> str:
    """'profile' when the base's profile brings its own perceptual distance, else 'face' (LPIPS and ArcFace)."""
    profile = base_profile(base, metadata)
    return "profile" if profile is not None and profile.perceptual is not None else "face"


def build_losses(
    config: InvertConfig,
    kind: str = "face",
    device: str | torch.device = "cpu",
    allow_missing: bool = False,
    progress: bool = True,
    base: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ReconstructionLosses:
    """Load the perceptual/identity networks that `config` weights for `kind` ('face', or 'profile': `base`'s own).

    A loss whose weights are unavailable raises the loader's NadaError (which says which file to put
    where) plus the hint to pass ``--allow-missing-losses``; with ``allow_missing`` it is dropped instead.
    """
    if kind not in LOSS_KINDS:
        raise NadaError(f"unknown loss set {kind!r}: use one of {', '.join(LOSS_KINDS)}")
    profile = base_profile(base, metadata) if base is not None else None
    if kind == "profile" and (profile is None or profile.perceptual is None):
        raise NadaError(f"the base {base!r} has no profile with its own perceptual distance: use the 'face' losses")
    out = ReconstructionLosses()

    def attempt(what: str, load: Callable[[], nn.Module]) -> nn.Module | None:
        try:
            return load()
        except NadaError as e:
            if not allow_missing:
                raise NadaError(f"{e} -- or pass --allow-missing-losses to invert without the {what} loss") from None
            out.dropped.append(f"{what}: {e}")
            return None

    if config.lambda_lpips > 0:
        if kind == "profile":
            name, loader = profile.perceptual
            out.perceptual, out.perceptual_name = attempt(name, lambda: loader(device)), name
        else:
            out.perceptual = attempt("LPIPS", lambda: P.load_lpips(config.lpips_net, device, progress))
            out.perceptual_name = f"LPIPS ({config.lpips_net})"
    identity = profile.identity if profile is not None else kind == "face"
    if config.lambda_id > 0 and identity:
        out.identity = attempt("identity (ArcFace)", lambda: P.load_identity_loss(device, progress))
    return out


@dataclass(frozen=True)
class InversionResult:
    """W+ codes [N, n_latent, style_dim], their renders [N, 3, S, S] in [-1, 1] and per-image quality."""

    wplus: torch.Tensor
    reconstruction: torch.Tensor
    mse: list[float]  # per image, on [-1, 1] values
    perceptual: list[float] | None  # per image, None when no perceptual loss ran
    perceptual_name: str
    history: list[dict[str, float]]  # per logged step: step, lr, loss and its parts (batch means)


def lr_at(step: int, config: InvertConfig) -> float:
    """Learning rate at `step` (0-based): linear warm-up, flat, cosine ramp-down to zero (rosinality's projector)."""
    t = step / max(config.steps, 1)
    ramp = min(1.0, (1 - t) / config.lr_rampdown) if config.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if config.lr_rampup > 0:
        ramp *= min(1.0, t / config.lr_rampup)
    return config.lr * ramp


def _per_image_losses(
    img: torch.Tensor, target: torch.Tensor, losses: ReconstructionLosses, config: InvertConfig
) -> dict[str, torch.Tensor]:
    """Each loss as [N] for renders img and targets, both [N, 3, S, S] in [-1, 1]."""

    parts = {"mse": (img - target).pow(2).mean(dim=(1, 2, 3))}
    if losses.perceptual is not None:
        parts["perceptual"] = losses.perceptual(downsample_for_lpips(img), downsample_for_lpips(target))
    if losses.identity is not None:
        parts["id"] = losses.identity(img, target)
    return parts


def _weighted(parts: dict[str, torch.Tensor], config: InvertConfig) -> torch.Tensor:
    weights = {"mse": config.lambda_mse, "perceptual": config.lambda_lpips, "id": config.lambda_id}
    return sum(weights[k] * v for k, v in parts.items())  # type: ignore[return-value]


def invert(
    G: nn.Module,
    target: torch.Tensor,
    config: InvertConfig = InvertConfig(),
    losses: ReconstructionLosses | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> InversionResult:
    """Optimise W+ codes so that G.synthesis redraws target [N, 3, G.size, G.size] in [-1, 1]; G is not changed."""
    losses = losses if losses is not None else ReconstructionLosses()
    size = G.size
    assert target.ndim == 4 and target.shape[1:] == (3, size, size), (
        f"targets must be aligned images [N, 3, {size}, {size}], got {tuple(target.shape)}"
    )
    if not bool(G.mean_latent.any()):
        raise NadaError(
            "the base generator has no mean latent, which inversion starts from: "
            "load it from a checkpoint that stores one"
        )
    device = G.mean_latent.device
    target = target.to(device=device, dtype=torch.float32)
    G.eval()
    was_trainable = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)  # only the codes learn
    n = target.shape[0]
    ws = G.mean_latent.detach().view(1, 1, -1).repeat(n, G.n_latent, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=config.lr, betas=(0.9, 0.999))
    history: list[dict[str, float]] = []
    try:
        from tqdm import tqdm

        bar = tqdm(range(config.steps), desc="inverting", unit="step", disable=not progress, leave=False)
        for step in bar:
            lr = lr_at(step, config)
            for group in opt.param_groups:
                group["lr"] = lr
            parts = _per_image_losses(G.synthesis(ws, noise_mode=config.noise_mode), target, losses, config)
            loss = _weighted(parts, config)
            opt.zero_grad(set_to_none=True)
            # Summed over images: each image's code gets the gradient of its own loss, whatever N is.
            loss.sum().backward()
            opt.step()
            if step % log_every == 0 or step == config.steps - 1:
                row = {"step": float(step), "lr": lr, "loss": float(loss.detach().mean())} | {
                    k: float(v.detach().mean()) for k, v in parts.items()
                }
                history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", mse=f"{row['mse']:.4f}")
        with torch.no_grad():  # quality is reported on what the user gets: the clamped image
            recon = G.synthesis(ws.detach(), noise_mode=config.noise_mode).float().clamp(-1, 1)
            final = _per_image_losses(recon, target.clamp(-1, 1), losses, config)
    finally:
        for p, flag in zip(G.parameters(), was_trainable):
            p.requires_grad_(flag)
    perceptual = [float(v) for v in final["perceptual"]] if "perceptual" in final else None
    return InversionResult(
        wplus=ws.detach(),
        reconstruction=recon,
        mse=[float(v) for v in final["mse"]],
        perceptual=perceptual,
        perceptual_name=losses.perceptual_name if perceptual is not None else "",
        history=history,
    )


@torch.no_grad()
def render_wplus(
    G: nn.Module, wplus: torch.Tensor, noise: list[torch.Tensor] | None = None, batch_size: int = 4
) -> torch.Tensor:
    """Render W+ codes [N, n_latent, style_dim] with G (e.g. an adapted generator) -> [N, 3, S, S] in [-1, 1]
    on the CPU.

    Pass the base generator's ``noise_buffers()`` as `noise` so the adapted render uses the very noise
    the code was found with.
    """
    assert wplus.ndim == 3 and wplus.shape[1:] == (G.n_latent, G.style_dim), (
        f"W+ codes must be [N, {G.n_latent}, {G.style_dim}], got {tuple(wplus.shape)}: "
        "was this generator adapted from another base?"
    )
    device = G.mean_latent.device
    G.eval()
    noise = [t.to(device) for t in noise] if noise is not None else None
    out = [G.synthesis(chunk.to(device), noise=noise).float().clamp(-1, 1).cpu() for chunk in wplus.split(batch_size)]
    return torch.cat(out)


def resize_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [N, 3, H, W] to [N, 3, size, size] (antialiased bicubic; no-op at that size)."""
    if img.shape[-2:] == (size, size):
        return img
    return F.interpolate(img.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(
        -1, 1
    )
