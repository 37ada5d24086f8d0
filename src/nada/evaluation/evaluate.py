"""`nada eval`: the numbers papers report for adapted generators, each against its base, on the same seeded latents.

For N latents z (``torch.randn(N, style_dim)`` from ``torch.Generator().manual_seed(seed)``, the same for every
model), the base generator and every adapted one render G(z) with the stored noise. Then, per model:

- **CLIP directional similarity**: cos(E_I(adapted) - E_I(base), text direction source -> target), mean over z,
  and the **target-text score** cos(E_I(image), E_T(target)) for adapted and base images, read by a judge CLIP
  (`choose_judge`: by default one that did not guide the run).
- **identity**: cos(ArcFace(base), ArcFace(adapted)) per z (faces; `nada.photos.perceptual.IdentityLoss`).
- **diversity**: mean pairwise perceptual distance among adapted images (LPIPS, or the distance of the
  base's evaluation world) over the same pairs of latents, and its ratio to the base's.
- **FID / KID** against a folder of reference images, with torchmetrics (Inception features from
  ``nada.photos.perceptual.WEIGHTS["inception-fid"]``, or the evaluation world's features).
- **a base's own world**: a base whose profile has an evaluation world (`nada.profiles.EvalWorld`) is judged
  with that world's networks, and its quality metrics join each model's row under the world's name.

Images are [N, 3, H, W] in [-1, 1] throughout. docs/eval.md defines every number.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from tqdm.auto import tqdm

from nada.config import AdaptConfig, preset_config
from nada.errors import NadaError
from nada.generator.checkpoints import load_generator, read_metadata
from nada.guidance import losses
from nada.guidance.clip import load_clip, parse_clip_spec
from nada.guidance.templates import IMAGENET_TEMPLATES, get_prompt_set, prompt_set_for
from nada.io import atomic_save_image, atomic_write, z_from_seeds
from nada.photos.images import IMAGE_SUFFIXES
from nada.photos.perceptual import (
    downsample_for_lpips,
    load_identity_loss,
    load_lpips,
    resolve_weights,
)
from nada.profiles import EvalWorld, WorldJudges, eval_world, profile_for
from nada.weights import presets
from nada.weights.presets import share_mean_latent
from nada.weights.safe_load import read_state_dict

if TYPE_CHECKING:
    from nada.generator.networks import Generator
    from nada.guidance.clip import ClipModel

FID_MIN_SAMPLES = 5000  # below this FID is strongly biased upwards (StyleGAN papers use 50k, few-shot work 5k)
KID_MIN_SAMPLES = 1000  # KID is unbiased, but its spread over subsets is large below this
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
JUDGE_CANDIDATES = ("ViT-L/14", "ViT-B/16", "ViT-B/32", "RN50")  # real world, most independent first
SMALL_SIDE = 256  # images kept for diversity and the figure are stored at most this large


# ---------------------------------------------------------------- models to evaluate


@dataclass
class EvalModel:
    """One adapted generator to evaluate: a label, where it came from and what its metadata says."""

    label: str
    source: str  # path of its weights file, or "preset:NAME"
    base: str | None
    source_text: str | None
    target_text: str | None
    guided_by: list[str]
    generator: "Generator | None" = None


def _clip_names(spec: str | None) -> list[str]:
    """Model names of a CLIP spec such as "ViT-B/32,ViT-B/16:0.5" (weights dropped); [] for None."""
    if not spec:
        return []

    return [name for name, _ in parse_clip_spec(str(spec))]


def _from_metadata(label: str, source: str, meta: dict[str, Any]) -> EvalModel:
    cfg = meta.get("adapt_config") or {}
    clip = meta.get("clip") or cfg.get("clip")
    if clip == "auto":
        clip = AdaptConfig.from_dict(cfg).resolved_clip() if cfg else None
    return EvalModel(
        label,
        source,
        meta.get("base_model") or meta.get("base"),
        meta.get("source"),
        meta.get("target"),
        _clip_names(clip),
    )


def describe_model(spec: str) -> EvalModel:
    """What `spec` names: a run folder (its generator.pt), a checkpoint file or a preset name; nothing is loaded."""

    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "generator.pt"
        if not path.is_file():
            raise NadaError(
                f"{spec} is a folder without generator.pt: give a finished `nada adapt` run folder or a checkpoint"
            )
    if path.is_file():
        meta = _metadata(path)
        return _from_metadata(path.parent.name if path.name == "generator.pt" else path.stem, str(path), meta)
    if spec in presets.known_presets():
        p = presets.get_preset(spec)
        status = presets.preset_status(p)
        meta = presets.packed_info(status.path)["metadata"] if status.path and presets.is_compact(status.path) else {}
        model = _from_metadata(spec, f"preset:{spec}", meta)
        model.base, model.source_text, model.target_text = p.base, p.source, p.target
        model.guided_by = model.guided_by or _clip_names(preset_config(p, ".").resolved_clip())
        return model
    raise NadaError(f"{spec!r} is neither a run folder, a checkpoint file nor a preset name: see `nada presets list`")


def _metadata(path: Path) -> dict[str, Any]:
    """Checkpoint metadata (nada checkpoints or compact presets); {} for files that carry none."""

    if presets.is_compact(path):
        return dict(presets.packed_info(path)["metadata"])
    try:
        return read_metadata(path)
    except NadaError:
        return {}


def load_model(model: EvalModel, device: torch.device) -> "Generator":
    """The generator of `model` in eval mode on `device`."""

    if model.source.startswith("preset:"):
        return presets.load_preset(model.source.removeprefix("preset:"), device=device)
    if presets.is_compact(Path(model.source)):
        return presets.load_preset_file(model.source, device=device)
    return load_generator(model.source, device=device).eval()


def common_value(models: Sequence[EvalModel], attr: str, given: str | None, flag: str) -> str:
    """The one base/source/target shared by every model (or `given`); NadaError when unknown or different."""
    if given:
        return given
    values = {getattr(m, attr) for m in models}
    if None in values:
        unknown = next(m.label for m in models if getattr(m, attr) is None)
        raise NadaError(f"{unknown} does not record its {attr.replace('_text', '')}: pass {flag}")
    if len(values) > 1 and attr == "base":
        raise NadaError(
            f"the models were adapted from different bases ({', '.join(sorted(values))}): compare models of one base"
        )
    return values.pop() if len(values) == 1 else ""


# ---------------------------------------------------------------- the judge CLIP


def choose_judge(
    guided: Sequence[str], world: EvalWorld | None = None, requested: str | None = None
) -> tuple[str, str]:
    """(judge CLIP name, one-line note): `requested`, else the first candidate that guided none of the runs."""
    if requested:
        used = requested in guided
        return requested, f"judge CLIP {requested} (chosen by --judge{'; it also guided a run' if used else ''})"
    candidates = world.judge_candidates if world is not None else JUDGE_CANDIDATES
    for name in candidates:
        if name not in guided:
            return name, f"judge CLIP {name} (did not guide any evaluated run)"
    return candidates[0], (
        f"judge CLIP {candidates[0]} (it also guided the runs: every candidate of "
        f"{', '.join(candidates)} did; pass --judge to choose another)"
    )


# ---------------------------------------------------------------- metric functions (pure)


def directional_similarity(f_base: torch.Tensor, f_adapted: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """cos(f_adapted - f_base, direction) per image: image features [N, D], unit text direction [1, D] -> [N]."""
    return F.cosine_similarity(f_adapted - f_base, direction.expand_as(f_base), dim=-1)


def text_score(f_img: torch.Tensor, f_text: torch.Tensor) -> torch.Tensor:
    """cos(image feature, text feature) per image: [N, D], [1, D] -> [N] (CLIPScore without its 2.5 scale)."""
    return F.cosine_similarity(f_img, f_text.expand_as(f_img), dim=-1)


def latent_pairs(n: int, max_pairs: int, seed: int = 0) -> torch.Tensor:
    """Index pairs [P, 2] (i < j) for diversity: all of them up to `max_pairs`, else a seeded sample of that many."""
    assert n >= 2, "diversity needs at least 2 samples"
    pairs = torch.tensor(list(itertools.combinations(range(n), 2)))
    if len(pairs) <= max_pairs:
        return pairs
    keep = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:max_pairs]
    return pairs[keep.sort().values]


@torch.no_grad()
def mean_pairwise_distance(
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    pairs: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> float:
    """Mean of distance(images[i], images[j]) over `pairs` [P, 2]; images [N, 3, H, W] (uint8 or [-1, 1]).

    Only the images of one batch of pairs are moved to `device` at a time.
    """
    total = 0.0
    for chunk in pairs.split(batch_size):
        x, y = (as_float(images[chunk[:, k]].to(device or images.device)) for k in (0, 1))
        total += float(distance(x, y).double().sum())
    return total / len(pairs)


def as_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] in [0, 255] -> float in [-1, 1]; float input is returned as it is."""
    return img.float() / 127.5 - 1 if img.dtype == torch.uint8 else img


def as_uint8(img: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def shrink(img: torch.Tensor, side: int = SMALL_SIDE) -> torch.Tensor:
    """Area-downsample [N, 3, H, W] so its longer side is at most `side`."""

    return downsample_for_lpips(img, side)


# ---------------------------------------------------------------- FID and KID (torchmetrics)


def inception_weights(progress: bool = True) -> Path:
    """The FID Inception weights file through the weights registry, checked to hold tensors only."""

    path = resolve_weights("inception-fid", progress)
    read_state_dict(path, what="FID Inception weights")  # the one safe reader: the file holds tensors only
    return path


def fid_kid_metrics(
    feature: nn.Module | None, n_real: int, n_fake: int, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """torchmetrics FID and KID on `feature` (None: the standard 2048-d Inception pool features via the registry)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise NadaError("FID/KID need torchmetrics: pip install 'nada[eval]'") from None
    subset = max(2, min(KID_SUBSET_SIZE, n_real, n_fake))
    if feature is None:
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            raise NadaError("FID/KID with Inception features need torch-fidelity: pip install 'nada[eval]'") from None
        path = str(inception_weights())
        # antialias=False: torch-fidelity's TF1-compatible resize, the one the published FID numbers used
        fid = FrechetInceptionDistance(2048, feature_extractor_weights_path=path, antialias=False)
        feature = fid.inception  # one Inception for both metrics
    else:
        fid = FrechetInceptionDistance(feature)
    with warnings.catch_warnings():  # KID keeps every feature vector: intended, they are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature, subsets=KID_SUBSETS, subset_size=subset)
    return fid.to(device), kid.to(device)


def reference_batches(
    folder: str | os.PathLike, size: int, batch_size: int, limit: int | None = None
) -> Iterator[torch.Tensor]:
    """uint8 [B, 3, size, size] batches of a folder's images (sorted by name), resized (Lanczos) to size x size."""

    files = reference_files(folder)[:limit]
    for start in range(0, len(files), batch_size):
        batch = []
        for p in files[start : start + batch_size]:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.LANCZOS)
                batch.append(
                    torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
                )
        yield torch.stack(batch)


def reference_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a reference folder, sorted; NadaError when it is missing or holds fewer than 2."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NadaError(f"reference folder {root} does not exist: give a folder of real images of the target domain")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise NadaError(
            f"reference folder {root} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}): FID/KID need many"
        )
    return files


def sample_count_warnings(n_fake: int, n_real: int) -> list[str]:
    """Warnings for sample counts below the usual ones for FID and KID (empty when they are met)."""
    out = []
    if min(n_fake, n_real) < FID_MIN_SAMPLES:
        out.append(
            f"FID on {n_fake} generated and {n_real} reference images: below {FID_MIN_SAMPLES} it is biased upwards "
            "and only comparable between runs with the same counts (papers use 5k-50k)"
        )
    if min(n_fake, n_real) < KID_MIN_SAMPLES:
        out.append(
            f"KID on fewer than {KID_MIN_SAMPLES} images per side: unbiased, but its spread over subsets is large"
        )
    return out


# ---------------------------------------------------------------- settings and judges


@dataclass(frozen=True)
class EvalSettings:
    """What `evaluate` measures and on how many latents (seeds first_seed .. first_seed + n - 1, as `nada generate`)."""

    n: int = 64
    first_seed: int = 0
    truncation: float = 1.0
    batch_size: int = 8
    judge: str | None = None  # judge CLIP; None: `choose_judge`
    reference: str | None = None  # folder of real target-domain images for FID/KID
    identity: bool = True  # ArcFace identity (real world only: an evaluation world reads content its own way)
    lpips_net: str = "vgg"
    max_pairs: int = 500  # latent pairs for diversity
    columns: int = 6  # samples per row of the figure

    def validate(self) -> None:
        """NadaError for a setting that cannot work."""
        if self.n < 2:
            raise NadaError(f"--n {self.n}: evaluation needs at least 2 latents (diversity compares pairs)")
        if self.batch_size < 1 or self.max_pairs < 1 or self.columns < 1:
            raise NadaError("--batch-size, --max-pairs and --columns must be at least 1")
        if not math.isfinite(self.truncation):
            raise NadaError(f"truncation {self.truncation} is not a finite number: use e.g. 0.7 or 1")


@dataclass
class Judges:
    """The frozen networks that score images; None where a metric is not computed."""

    clip: "ClipModel"
    clip_note: str
    templates: Sequence[str]
    distance: nn.Module  # perceptual distance x, y -> [N] for diversity
    distance_name: str
    identity: nn.Module | None = None
    identity_note: str = ""
    quality: Callable[..., dict[str, Any] | None] | None = None  # an evaluation world's extra metrics
    quality_note: str = ""  # what those metrics compare with (the world's WorldJudges.quality_note)
    world: str = "real"
    fid_feature: nn.Module | None = None  # None: Inception through the registry
    fid_name: str = ""


def _collect(loaders: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every loader; one NadaError naming every weights file that is missing, instead of the first only."""
    out, errors = {}, []
    for key, load in loaders.items():
        try:
            out[key] = load()
        except NadaError as e:
            errors.append(f"{key}: {e}")
    if errors:
        raise NadaError(f"{len(errors)} judge weights unavailable -- " + " | ".join(errors))
    return out


def load_judges(settings: EvalSettings, world: EvalWorld | None, guided: Sequence[str], device: torch.device) -> Judges:
    """Load every judge network the settings ask for (an evaluation world's or the real world's), failing once for
    all missing files."""
    judge, note = choose_judge(guided, world, settings.judge)
    loaders: dict[str, Callable[[], Any]] = {"judge CLIP": lambda: load_clip(judge, device)}
    if world is not None:
        loaders[f"{world.name} judges"] = lambda: world.load(device)
    else:
        loaders["LPIPS"] = lambda: load_lpips(settings.lpips_net, device)
        if settings.identity:
            loaders["ArcFace"] = lambda: load_identity_loss(device)
        if settings.reference:
            loaders["FID Inception"] = inception_weights
    got = _collect(loaders)
    templates = get_prompt_set(prompt_set_for([judge])) or IMAGENET_TEMPLATES
    if world is not None:
        kit: WorldJudges = got[f"{world.name} judges"]
        return Judges(
            got["judge CLIP"],
            note,
            templates,
            kit.distance,
            kit.distance_name,
            identity_note=kit.identity_note,
            quality=kit.quality,
            quality_note=kit.quality_note,
            world=world.name,
            fid_feature=kit.fid_feature,
            fid_name=kit.fid_name,
        )
    identity = got.get("ArcFace")
    return Judges(
        got["judge CLIP"],
        note,
        templates,
        got["LPIPS"],
        f"LPIPS {settings.lpips_net}",
        identity=identity,
        identity_note="ArcFace IR-SE50" if identity is not None else "not measured (--no-identity)",
        fid_name="Inception-v3 pool3 (2048)",
    )


@torch.no_grad()
def text_targets(judges: Judges, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's unit text direction source -> target [1, D] and unit mean target text feature [1, D] (CPU)."""

    clip = judges.clip
    direction = losses.text_direction(clip, source, target, judges.templates)
    return direction.float().cpu(), losses.mean_text_feature(clip, target, judges.templates).float().cpu()


# ---------------------------------------------------------------- evaluation


@dataclass
class _Pass:
    """What one generator's pass over the latents leaves: judge features, identity embeddings, small images."""

    clip_features: torch.Tensor
    small: torch.Tensor
    identity: torch.Tensor | None
    truncation: float  # the psi the images were rendered with
    fid: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def _render_pass(
    G: "Generator",
    z: torch.Tensor,
    judges: Judges,
    settings: EvalSettings,
    label: str,
    progress: bool,
    metrics: tuple[nn.Module, nn.Module] | None,
) -> _Pass:
    """Render z in batches through G and keep what the metrics need (nothing at full resolution)."""

    device = next(G.parameters()).device
    feats, smalls, ids = [], [], []
    for chunk in tqdm(
        z.split(settings.batch_size), desc=f"eval {label}", disable=not progress, leave=False, file=sys.stderr
    ):
        img = G(chunk.to(device), truncation_psi=settings.truncation, noise_mode="const").float().clamp(-1, 1)
        feats.append(judges.clip.encode_image(img).float().cpu())
        small = shrink(img)
        smalls.append(small.cpu() if small.shape[-1] <= 64 else as_uint8(small).cpu())
        if judges.identity is not None:
            ids.append(judges.identity.embed(img).cpu())
        if metrics is not None:
            for m in metrics:
                m.update(as_uint8(img), real=False)
    out = _Pass(torch.cat(feats), torch.cat(smalls), torch.cat(ids) if ids else None, settings.truncation)
    if metrics is not None:
        out.fid = _compute_fid_kid(*metrics)
    return out


def _compute_fid_kid(fid: nn.Module, kid: nn.Module) -> dict[str, float]:
    """FID, KID mean and std; the generated side is reset afterwards so the reference side is reused."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # KID draws its subsets with the global generator: fixed, so reruns agree
        kid_mean, kid_std = kid.compute()
    out = {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
    for m in (fid, kid):
        _reset_fake(m)
    return out


def _reset_fake(metric: nn.Module) -> None:
    """Forget the generated images of a FID/KID metric but keep its reference features."""
    keep = metric.reset_real_features
    metric.reset_real_features = False
    metric.reset()
    metric.reset_real_features = keep


def _reference_metrics(
    judges: Judges, settings: EvalSettings, size: int, n_fake: int, device: torch.device, progress: bool
) -> tuple[tuple[nn.Module, nn.Module] | None, list[str]]:
    """FID/KID metrics holding the reference folder's features, and the sample-count warnings (None: no folder)."""
    if not settings.reference:
        return None, []

    n_real = len(reference_files(settings.reference))
    fid, kid = fid_kid_metrics(judges.fid_feature, n_real, n_fake, device)
    batches = reference_batches(settings.reference, size, settings.batch_size)
    for batch in tqdm(
        batches,
        total=math.ceil(n_real / settings.batch_size),
        desc="eval reference",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    ):
        for m in (fid, kid):
            m.update(batch.to(device), real=True)
    for m in (fid, kid):
        m.reset_real_features = False
    return (fid, kid), sample_count_warnings(n_fake, n_real)


def _model_metrics(
    model: EvalModel, base: _Pass, run: _Pass, judges: Judges, pairs: torch.Tensor, base_div: float, z: torch.Tensor
) -> dict[str, Any]:
    """Every number of one adapted generator against its base (means over the latents z), for its own texts."""
    text_dir, text_tgt = text_targets(judges, model.source_text, model.target_text)
    direction = directional_similarity(base.clip_features, run.clip_features, text_dir)
    div = mean_pairwise_distance(judges.distance, run.small, pairs, device=_device(judges.distance))
    out: dict[str, Any] = {
        "clip_direction": float(direction.mean()),
        "clip_direction_std": float(direction.std()),
        "clip_target": float(text_score(run.clip_features, text_tgt).mean()),
        "clip_target_base": float(text_score(base.clip_features, text_tgt).mean()),
        "identity": None,
        "diversity": div,
        "diversity_ratio": div / base_div if base_div > 0 else None,
        **run.fid,
    }
    if run.identity is not None and base.identity is not None:
        out["identity"] = float((base.identity * run.identity).sum(1).mean())
    if judges.quality is not None:
        pair = [as_float(p.small) for p in (base, run)]
        out[judges.world] = judges.quality(model.source_text, model.target_text, *pair, z, run.truncation)
    return out


def _device(module: nn.Module) -> torch.device:
    p = next(itertools.chain(module.parameters(), module.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class EvalResult:
    """The report (JSON-ready) and the sample images of every row for the figure ([C, 3, h, w] in [-1, 1])."""

    report: dict[str, Any]
    samples: list[torch.Tensor]


def evaluate(
    models: Sequence[EvalModel],
    base_G: "Generator",
    base_name: str,
    settings: EvalSettings,
    judges: Judges,
    progress: bool = True,
) -> EvalResult:
    """Score every adapted generator of `models` (loaded, with texts) against `base_G` on the same latents."""

    settings.validate()
    z = z_from_seeds(list(range(settings.first_seed, settings.first_seed + settings.n)), base_G.style_dim)
    device = next(base_G.parameters()).device
    metrics, warns = _reference_metrics(judges, settings, base_G.size, settings.n, device, progress)
    base = _render_pass(base_G, z, judges, settings, "base", progress, metrics)
    pairs = latent_pairs(settings.n, settings.max_pairs, settings.first_seed)
    base_div = mean_pairwise_distance(judges.distance, base.small, pairs, device=_device(judges.distance))
    base_row = {"diversity": base_div, **base.fid}
    rows, samples = [], [as_float(base.small[: settings.columns]).float()]
    for m in models:
        run = _render_pass(m.generator, z, judges, settings, m.label, progress, metrics)
        rows.append(
            {
                "label": m.label,
                "model": m.source,
                "source": m.source_text,
                "target": m.target_text,
                "guided_by": m.guided_by,
                **_model_metrics(m, base, run, judges, pairs, base_div, z),
            }
        )
        samples.append(as_float(run.small[: settings.columns]).float())
    report = _report_header(base_name, settings, judges, len(pairs), warns)
    report.update(base_metrics=base_row, models=rows)
    return EvalResult(report, samples)


def _report_header(
    base_name: str, settings: EvalSettings, judges: Judges, n_pairs: int, warns: list[str]
) -> dict[str, Any]:
    return {
        "base_generator": base_name,
        "world": judges.world,
        "n": settings.n,
        "seeds": f"{settings.first_seed}-{settings.first_seed + settings.n - 1}",
        "latents": "z of each seed as in `nada generate` (torch.Generator().manual_seed(seed)), stored noise",
        "truncation": settings.truncation,
        "judge_clip": judges.clip.name,
        "judge_note": judges.clip_note,
        "identity": judges.identity_note,
        "diversity_metric": judges.distance_name,
        "diversity_pairs": n_pairs,
        "reference": settings.reference,
        "fid_features": judges.fid_name if settings.reference else None,
        **({"quality_note": judges.quality_note} if judges.quality_note else {}),
        "warnings": warns,
    }


# ---------------------------------------------------------------- table, figure, files

# (report key, column header, format); an evaluation world adds "<world>.<key>" columns (EvalWorld.columns)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("clip_direction", "CLIP-DIR", "{:.3f}"),
    ("clip_target", "CLIP-TGT", "{:.3f}"),
    ("clip_target_base", "CLIP-TGT-BASE", "{:.3f}"),
    ("identity", "ID", "{:.3f}"),
    ("diversity", "DIV", "{:.4f}"),
    ("diversity_ratio", "DIV-RATIO", "{:.2f}"),
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
)


def world_columns(report: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The columns of the report's evaluation world: its quality keys under the world's name (none: real world)."""
    world = eval_world(str(report.get("world")))
    return tuple((f"{world.name}.{k}", h, f) for k, h, f in world.columns) if world else ()


def report_columns(report: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The columns shown: COLUMNS that some row has a value for, then every column of the report's world."""
    rows = [report["base_metrics"], *report["models"]]
    shown = tuple(c for c in COLUMNS if any(lookup(r, c[0]) is not None for r in rows))
    return shown + world_columns(report)


def lookup(row: dict[str, Any], key: str) -> Any:
    """The value at a dotted key ("toy.fidelity.adapted.stroke") of a report row; None where any part is missing."""
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(row: dict[str, Any], key: str, fmt: str, missing: str) -> str:
    value = lookup(row, key)
    return missing if value is None else fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """The terminal table: a row for the base and one per model; "-": not measured for the base, "n/a": no value."""
    cols = report_columns(report)
    header = ["MODEL", *(c[1] for c in cols)]
    body = [["(base)", *(_cell(report["base_metrics"], k, f, "-") for k, _, f in cols)]]
    body += [[r["label"], *(_cell(r, k, f, "n/a") for k, _, f in cols)] for r in report["models"]]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body])


def _font(size: int) -> Any:

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _bar_chart(title: str, labels: list[str], values: list[float | None], fmt: str, w: int = 240, h: int = 150) -> Any:
    """One bar per row (base first, grey), value printed above each bar, zero line at the bottom or middle."""

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 4), title, fill="black", font=_font(13))
    known = [v for v in values if v is not None and math.isfinite(v)]
    top, bottom = 40, h - 22
    lo, hi = min(0.0, *known) if known else 0.0, max(0.0, *known) if known else 1.0
    span = (hi - lo) or 1.0
    y0 = bottom - (0 - lo) / span * (bottom - top)
    slot = (w - 12) / max(1, len(values))
    for i, (label, v) in enumerate(zip(labels, values)):
        x = 6 + i * slot
        if v is not None and math.isfinite(v):
            y = bottom - (v - lo) / span * (bottom - top)
            d.rectangle(
                [x + 3, min(y, y0), x + slot - 3, max(y, y0)], fill=_COLOURS[i % len(_COLOURS)] if i else "#999999"
            )
            d.text((x + 3, min(y, y0) - 13), fmt.format(v), fill="black", font=_font(10))
        elif i:  # a model without this number says so; the base bar stays empty (not measured for it)
            d.text((x + 3, y0 - 13), "n/a", fill="black", font=_font(10))
        d.text((x + 3, bottom + 4), label[:6], fill="black", font=_font(10))
    d.line([6, y0, w - 6, y0], fill="black")
    return img


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def make_figure(result: EvalResult, thumb: int = 96) -> Any:
    """PIL figure: a row of samples per generator (base first) at the left, bar charts of every metric at the right."""

    report = result.report
    rows = [{"label": "(base)", **report["base_metrics"]}, *report["models"]]
    labels = [f"{i}" if i else "base" for i in range(len(rows))]
    label_w, pad = 170, 4
    cols = max(s.shape[0] for s in result.samples)
    left_w, left_h = label_w + cols * (thumb + pad), len(rows) * (thumb + pad) + 30
    world = world_columns(report)  # charted even without a value, so that their n/a shows
    charts = [
        _bar_chart(head, labels, [lookup(r, k) for r in rows], f)
        for k, head, f in report_columns(report)
        if (k, head, f) in world or any(isinstance(lookup(r, k), (int, float)) for r in rows)
    ]
    per_row = 3
    chart_rows = [charts[i : i + per_row] for i in range(0, len(charts), per_row)]
    right_w, right_h = per_row * 244, len(chart_rows) * 154
    fig = Image.new("RGB", (left_w + right_w + 10, max(left_h, right_h) + 10), "white")
    d = ImageDraw.Draw(fig)
    d.text(
        (6, 6),
        f"{len(report['models'])} model(s) on {report['base_generator']}; {report['judge_clip']} judges",
        fill="black",
        font=_font(13),
    )
    for i, (row, samples) in enumerate(zip(rows, result.samples)):
        y = 30 + i * (thumb + pad)
        d.text((6, y + thumb // 2 - 8), f"{labels[i]}: {row['label']}"[:24], fill="black", font=_font(12))
        for j, img in enumerate(as_uint8(samples).permute(0, 2, 3, 1).numpy()):
            fig.paste(Image.fromarray(img).resize((thumb, thumb), Image.LANCZOS), (label_w + j * (thumb + pad), y))
    for r, charts_row in enumerate(chart_rows):
        for c, chart in enumerate(charts_row):
            fig.paste(chart, (left_w + 10 + c * 244, 6 + r * 154))
    return fig


def write_outputs(result: EvalResult, out: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write eval.json, eval.png and eval.txt (the table) into `out`; NadaError if they exist and `force` is not set."""

    folder = Path(out).expanduser()
    paths = [folder / "eval.json", folder / "eval.png", folder / "eval.txt"]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise NadaError(f"{existing[0]} already exists: choose another --out or pass --force to overwrite")
    text = json.dumps(result.report, indent=2) + "\n"
    atomic_write(paths[0], lambda p: p.write_text(text, encoding="utf-8"))
    atomic_save_image(make_figure(result), paths[1])
    atomic_write(paths[2], lambda p: p.write_text(format_table(result.report) + "\n", encoding="utf-8"))
    return paths


# ---------------------------------------------------------------- one call for the CLI and the sweep


def run_eval(
    specs: Sequence[str],
    settings: EvalSettings,
    *,
    base: str | None = None,
    source: str | None = None,
    target: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Describe, check, load and score the models `specs` (run folders, checkpoints, presets) against their base."""

    settings.validate()
    if not specs:
        raise NadaError("no model to evaluate: give a run folder, a checkpoint or a preset name")
    models = [describe_model(s) for s in specs]
    base_name = common_value(models, "base", base, "--base")
    for m in models:
        m.source_text, m.target_text = source or m.source_text, target or m.target_text
        if not (m.source_text and m.target_text):
            raise NadaError(f"{m.label} does not record its source and target texts: pass --source and --target")
    device = torch.device(device)
    profile = profile_for(base_name)
    world = profile.evaluation if profile is not None else None
    guided = sorted({name for m in models for name in m.guided_by})
    judges = load_judges(settings, world, guided, device)
    log(f"nada eval: {judges.clip_note}; diversity: {judges.distance_name}; identity: {judges.identity_note}")
    if judges.quality_note:
        log(f"nada eval: {judges.world} metrics: {judges.quality_note}")
    base_G = load_generator(base_name, device=device).eval()
    for m in models:
        m.generator = load_model(m, device)
        if m.generator.size != base_G.size:
            raise NadaError(
                f"{m.label} makes {m.generator.size}px images but the base {base_name} {base_G.size}px: pass --base"
            )
        share_mean_latent(base_G, m.generator)
    return evaluate(models, base_G, base_name, settings, judges, progress)
