"""The StyleGAN-NADA adaptation loop: train a copy of a generator so that its images move, in CLIP
space, from the source domain towards the target domain while a frozen copy stays as the anchor.

Read `adapt` from top to bottom: set-up (run folder, generators, CLIP, directions, optimizer), then
per iteration, in the official loop's order: sample the training latents, choose the layers to
train (the selection draws its own latents after them), render the frozen and the trained image
from the same latents (and by default the same noise), compute the weighted CLIP losses, take an
Adam step; log, draw samples, save checkpoints and the resume state.

A run folder holds:

- ``config.json``: the `AdaptConfig` of the run.
- ``log.jsonl``: one JSON object per iteration: step, total loss, every active loss term
  (ensemble-weighted, before its lambda), the layers trained in that step, seconds (host time; on
  CUDA exact only summed between two log writes). Records are read from the device and written
  every ``log_every`` steps, before every save and on Ctrl-C.
- ``samples/step_000050.png``: grids, top row the frozen generator, bottom row the trained one, for
  the latents of seeds 0 .. n-1 at truncation 0.7 towards the stored mean latent.
- ``checkpoints/step_000100.pt`` every ``save_every`` steps and ``generator.pt`` at the end:
  nada checkpoints (rosinality layout + metadata), loadable by ``nada.generator.checkpoints.load_generator``;
  with ``params="domain"`` kilobyte domain files (`nada.generator.domains`), which it loads onto their base.
- ``state.pt``: what a resumed run needs besides the weights: step, Adam state, the states of the
  run's two random generators, the current layer selection, and which checkpoint holds the weights.

Determinism: the latents, mixing, selection latents, views and patch centres come from one
``torch.Generator`` on the CPU seeded by ``config.seed`` (the same numbers on every device); the
per-layer noise of training and selection comes from a second one on the run's device (seeded from
``config.seed`` too), so no noise crosses from host to device. Neither is the global RNG, so a run
is reproducible for a seed and device, and N iterations in one go equal, bit for bit on the CPU,
N/2 iterations, an interruption and a resumed run of the rest.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.nn.attention import SDPBackend, sdpa_kernel

from nada import __version__
from nada.adaptation.layers import (
    LayerSelector,
    SelectionContext,
    fresh_noise,
    parse_layers,
    set_trainable,
    synthesis_parameters,
    trainable_names,
)
from nada.config import AdaptConfig
from nada.errors import NadaError, NadaWarning
from nada.generator.checkpoints import load_generator, save_checkpoint
from nada.generator.domains import DomainGenerator, is_domain_payload, save_domain
from nada.guidance import losses
from nada.guidance.clip import load_clip_ensemble, parse_clip_spec
from nada.guidance.templates import get_prompt_set
from nada.guidance.translators import Translate, load_translator
from nada.io import (
    TMP_SUFFIX,
    BackgroundWriter,
    atomic_save_image,
    atomic_torch_save,
    atomic_write,
    image_grid,
    lock_folder,
    resolve_device,
    z_from_seeds,
)
from nada.photos.images import IMAGE_SUFFIXES
from nada.weights.safe_load import torch_load

if TYPE_CHECKING:
    from nada.generator.networks import Generator
    from nada.guidance.clip import ClipModel

# Official StyleGAN-NADA builds its optimizer like rosinality's GAN training with lazy regularisation
# every 4 steps: lr * 4/5 and betas ** (4/5). Kept so that published hyperparameters mean the same here.
G_REG_RATIO = 4 / 5
# Settings that may change when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = ("iterations", "device", "out_dir", "sample_every", "save_every", "log_every")
# The noise generator's seed is config.seed plus this, so that noise and latents never share a stream.
NOISE_STREAM = 1_000_033
# The official first-step rule: re-encode the trained image shifted by this when its edit is exactly zero.
OFFICIAL_SHIFT = 1e-6
# zlib level of the sample grids: much faster to encode than Pillow's default 6, for a little more bytes (see
# docs/performance.md).
SAMPLE_PNG_LEVEL = 1

Callback = Callable[[int, dict[str, Any]], None]


# ---------------------------------------------------------------- the run folder


@dataclass(frozen=True)
class RunPaths:
    """File layout of a run folder (see the module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def final(self) -> Path:
        return self.root / "generator.pt"

    @property
    def lock(self) -> Path:
        return self.root / ".nada-run.lock"

    def sample(self, step: int) -> Path:
        return self.root / "samples" / f"step_{step:06d}.png"

    def checkpoint(self, step: int) -> Path:
        return self.root / "checkpoints" / f"step_{step:06d}.pt"

    def has_run(self) -> bool:
        """True when the folder already holds (part of) a run."""
        return any(p.exists() for p in (self.config, self.log, self.state, self.final))

    def clear(self) -> None:
        """Delete the files a run writes (only those), for ``force``."""
        for p in (self.config, self.log, self.state, self.final):
            p.unlink(missing_ok=True)
        for sub, pattern in (("samples", "step_*.png"), ("checkpoints", "step_*.pt")):
            folder = self.root / sub
            for p in folder.glob(pattern):
                p.unlink()
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def claim_run_dir(config: AdaptConfig, resume: bool, force: bool) -> AbstractContextManager[RunPaths]:
    """Claim out_dir for one run: create it, hold its exclusive lock until the block ends, refuse unasked overwrites.

    A second run into a held folder is refused with one line naming the holder (pid, host, start
    time); the kernel drops the lock when the holder exits, also after ``kill -9``. Temporary files
    that a killed save left behind are removed, as no other run can be writing here. ``resume`` in a
    folder without saved state warns and starts at step 0 rather than failing: a job script that
    always passes --resume (a preemptible machine restarting it) must also start the run the first time.
    """
    return _claimed(RunPaths(Path(config.out_dir).expanduser()), resume, force)


@contextmanager
def _claimed(paths: RunPaths, resume: bool, force: bool) -> Iterator[RunPaths]:
    fd = lock_folder(paths.root, paths.lock.name, "--out")
    try:
        _remove_stale_temp_files(paths.root)
        if paths.has_run() and not (resume or force):
            raise NadaError(
                f"{paths.root} already holds an adaptation run: pass --resume to continue it, "
                "--force to start it over, or choose another --out"
            )
        if resume and not paths.state.exists():
            message = f"nothing to resume in {paths.root}: no state was saved yet, so the run starts at step 0"
            warnings.warn(message, NadaWarning, stacklevel=2)
        yield paths
    finally:
        os.close(fd)


def _remove_stale_temp_files(root: Path) -> None:
    """Delete the temporary files of saves that a kill interrupted (only nada's own, recognised by their suffix)."""
    for folder in (root, root / "samples", root / "checkpoints"):
        for p in folder.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)


def _check_resumable(stored: dict[str, Any], config: AdaptConfig, where: Path) -> None:
    """Refuse to resume a run whose computation-relevant settings differ from the current ones."""
    current = config.to_dict()
    stored = {**AdaptConfig().to_dict(), **stored}  # a setting added since the run was saved has its default
    diff = sorted(
        k for k in set(stored) | set(current) if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k)
    )
    if diff:
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in diff)
        raise NadaError(
            f"cannot resume the run in {where} with different settings ({details}): "
            "use the original settings, --force to start over, or another --out"
        )


# What state.pt holds, each entry with the type it must have.
STATE_TYPES: dict[str, type] = {
    "step": int,
    "optimizer": dict,
    "rng": torch.Tensor,
    "selected": list,
    "trained": list,
    "checkpoint": str,
    "config": dict,
}


def _load_state(paths: RunPaths) -> dict[str, Any]:
    """The resume state plus the weights of the checkpoint it names (key "g_ema"); NadaError if unreadable or bad."""
    state = _read_torch_file(paths.state, paths.root)
    problem = _state_problem(state, paths.root)
    if problem is None:
        ckpt = _read_torch_file(paths.root / state["checkpoint"], paths.root)
        weights = _trained_tensors(ckpt)
        problem = _tensors_problem(weights, f"the checkpoint {state['checkpoint']}")
    if problem is not None:
        raise NadaError(f"the saved state of the run in {paths.root} is unusable ({problem}): start over with --force")
    return {**state, "g_ema": weights}


def _trained_tensors(ckpt: Any) -> Any:
    """The trained tensors of a run checkpoint: the generator's state dict, or {"vector": [D]} of a domain file."""
    if is_domain_payload(ckpt):
        return {"vector": ckpt.get("domain")}
    return ckpt.get("g_ema") if isinstance(ckpt, dict) else None


def _read_torch_file(path: Path, root: Path) -> Any:
    """A run file read with the one safe reader; a one-line NadaError that ends in --force if it fails."""
    return torch_load(path, what=f"the saved state of the run in {root}:", fix="start over with --force")


def _state_problem(state: Any, root: Path) -> str | None:
    """What is wrong with a loaded state.pt (keys, types, finiteness, a checkpoint outside the run folder), or None."""
    if not isinstance(state, dict):
        return "state.pt holds no dictionary"
    wrong = [k for k, kind in STATE_TYPES.items() if not isinstance(state.get(k), kind)]
    if wrong:
        return f"state.pt lacks or mistypes {', '.join(wrong)}"
    target = (root / state["checkpoint"]).resolve()
    if not target.is_relative_to(root.resolve()):
        return f"state.pt names the checkpoint {state['checkpoint']!r}, outside the run folder"
    entries = [e for e in state["optimizer"].get("state", {}).values() if isinstance(e, dict)]
    moments = [t for entry in entries for t in entry.values()]
    return _tensors_problem({str(i): t for i, t in enumerate(moments)}, "the optimizer state", allow_empty=True)


def _tensors_problem(tensors: Any, what: str, allow_empty: bool = False) -> str | None:
    """Why ``tensors`` is not a non-empty dict of finite tensors, or None."""
    if not isinstance(tensors, dict) or not (tensors or allow_empty):
        return f"{what} holds no weights"
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            return f"{what}: {key} is not a tensor"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"{what}: {key} contains NaN or infinite values"
    return None


def _read_log(path: Path, upto: int) -> list[str]:
    """Lines of a JSON-lines log whose step is at most ``upto`` (later ones belong to lost work)."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= upto:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return keep


class LogBuffer:
    """Iteration records whose loss values stay on the device until one read-back writes them all to the log."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")
        self.pending: list[tuple[int, torch.Tensor, list[str], Any, float]] = []

    def add(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], layers: Any, seconds: float) -> None:
        """Keep one iteration's record; `loss` and `terms` are 0-d tensors, read back only at `flush`."""
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])
        self.pending.append((step, values, list(terms), layers, seconds))

    def flush(self) -> list[dict[str, Any]]:
        """Read every pending value back in one transfer, append the records to the log, return them."""
        if not self.pending:
            return []
        values = torch.cat([p[1] for p in self.pending]).tolist()
        records, at = [], 0
        for step, v, names, layers, seconds in self.pending:
            loss, *terms = values[at : at + v.numel()]
            at += v.numel()
            record = {"step": step, "loss": loss, **dict(zip(names, terms)), "layers": layers, "seconds": seconds}
            records.append(record)
        self.file.write("".join(json.dumps(r) + "\n" for r in records))
        self.file.flush()
        self.pending = []
        return records

    def close(self) -> None:
        """Write what is pending (when the device still answers) and close the file."""
        with suppress(Exception):  # after a device error the original exception is the one to report
            self.flush()
        self.file.close()


@contextmanager
def fp32_precision(device: torch.device, tf32: bool) -> Iterator[None]:
    """Within the block, CUDA float32 matmuls and convolutions use TF32 (tf32) or IEEE float32; nothing on CPU."""
    if device.type != "cuda":
        yield
        return
    if not hasattr(torch.backends.cudnn, "conv"):  # torch before 2.9: the older switches
        before_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before_flags
        return
    mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (mm.fp32_precision, conv.fp32_precision)
    mm.fp32_precision = conv.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        mm.fp32_precision, conv.fp32_precision = before


@contextmanager
def deterministic_kernels(device: torch.device, enabled: bool) -> Iterator[None]:
    """Within the block (CUDA, ``enabled``), deterministic kernels only: cuDNN's, PyTorch's, a fixed cuBLAS workspace.

    Ops without a deterministic CUDA kernel warn instead of failing; CLIP's resize has its own (`nada.guidance.clip`),
    and attention runs in its plain matmul form, since the fused kernels' backward stays free in warn-only
    mode. The previous settings come back afterwards. Does nothing on the CPU, whose kernels already are.
    """
    if not enabled or device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    # cuBLAS reads this when it makes a workspace: set before the process's first matmul to hold everywhere.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


class PhaseClock:
    """Seconds per phase of a run, added to a caller's dict; `lap(name)` books the time since the previous lap.

    Without a dict it does nothing. With one it synchronises CUDA at each lap, so the device's queued work
    is booked to the phase that queued it.
    """

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings, self.device = timings, torch.device("cpu")
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the seconds since the previous lap (or the start) to ``name``."""
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


# ---------------------------------------------------------------- CLIP guidance


@dataclass(frozen=True)
class Guide:
    """One CLIP model of the ensemble with everything precomputed that its losses need (features [1,D] or [P,D])."""

    clip: "ClipModel"
    weight: float
    direction: torch.Tensor  # unit source -> target direction (from texts or target images)
    select_target: torch.Tensor  # what the auto/grad layer selection pulls images towards
    global_target: torch.Tensor  # the global loss's target text (or mean target image feature)
    source_anchor: torch.Tensor  # template-mean source text feature (manifold loss)
    target_anchor: torch.Tensor  # template-mean target text feature (manifold loss)
    part_directions: torch.Tensor | None  # per-part directions (patch loss), None when unused
    keep_text: tuple[torch.Tensor, ...] = ()  # unit text features [K,D] of each attribute to keep (keep loss)


def load_target_images(folder: str | os.PathLike) -> list[torch.Tensor]:
    """Every readable image of a folder as [1, 3, H, W] in [-1, 1] (sorted by name); NadaError if none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise NadaError(
            f"target images folder {root} does not exist or is not a folder: give a folder of example images"
        )
    images = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(p) as im:
                arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8).view(
                    im.height, im.width, 3
                )
        except (OSError, UnidentifiedImageError, ValueError):
            warnings.warn(f"skipping unreadable image {p}", stacklevel=2)
            continue
        images.append(arr.permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1)
    if not images:
        raise NadaError(
            f"target images folder {root} holds no readable image ({', '.join(IMAGE_SUFFIXES)}): "
            "add example images of the target style"
        )
    return images


@torch.no_grad()
def build_guides(
    ensemble: Sequence[tuple["ClipModel", float]],
    config: AdaptConfig,
    G_frozen: "Generator",
    target_images: list[torch.Tensor] | None,
) -> list[Guide]:
    """Precompute, per CLIP model, the directions and anchors of the losses (constants of the objective)."""
    templates = get_prompt_set(config.resolved_templates())
    source_imgs = None
    if target_images is not None:
        # The image direction starts from the mean embedding of generated source images, drawn from
        # a stream of their own so that the loop's random numbers do not depend on this option.
        gen = torch.Generator().manual_seed(config.seed + 1_000_003)
        z = torch.randn(config.target_images_batch, G_frozen.style_dim, generator=gen)
        source_imgs = torch.cat([G_frozen(c.to(_device_of(G_frozen))) for c in z.split(config.batch_size)])
    guides = []
    for clip, weight in ensemble:
        unit = lambda f: torch.nn.functional.normalize(f, dim=-1)  # noqa: E731
        if target_images is not None:
            direction = losses.image_direction(clip, target_images, source_imgs)
            image_mean = unit(
                torch.cat([unit(clip.encode_image(t.to(clip.device))) for t in target_images]).mean(0, keepdim=True)
            )
        has_text = bool(config.target.strip())
        # Each prompt set is encoded once; the direction and both anchors share the features.
        source_feats = losses.text_features(clip, config.source, templates)
        target_feats = losses.text_features(clip, config.target, templates) if has_text else None
        if target_images is None:
            direction = losses.direction_between(source_feats, target_feats)
        # The official code pulls towards the bare target text during layer selection and towards
        # "a <target>" in its global loss term; both are kept as they are.
        select_target = unit(clip.encode_text([config.target])) if has_text else image_mean
        global_target = unit(clip.encode_text([f"a {config.target}"])) if has_text else image_mean
        source_anchor = losses.mean_feature(source_feats)
        target_anchor = losses.mean_feature(target_feats) if has_text else image_mean
        parts = (
            losses.part_text_directions(clip, config.source, config.target, templates=templates)
            if config.lambda_patch > 0
            else None
        )
        keep = (
            tuple(unit(clip.encode_text(group)) for group in config.resolved_keep()) if config.lambda_keep > 0 else ()
        )
        guides.append(
            Guide(
                clip, float(weight), direction, select_target, global_target, source_anchor, target_anchor, parts, keep
            )
        )
    return guides


def _device_of(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter."""
    return next(module.parameters()).device


def patch_size_for(resolution: int) -> int:
    """Patch side for the patch loss: the official 510 at 1024, scaled with the image size."""
    return max(2, (510 * resolution) // 1024)


def loss_terms(
    guides: Sequence[Guide],
    img_frozen: torch.Tensor,
    img_train: torch.Tensor,
    config: AdaptConfig,
    rng: torch.Generator,
    translated: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every active loss term (lambda > 0), each summed over the ensemble with the models' weights.

    Images [N, 3, H, W] in [-1, 1]; gradients reach ``img_train`` only; ``translated``: the translator's drawings
    of ``img_frozen`` (the translation term). Each model encodes each image batch once and all of its terms reuse
    those features. The texture term compares the unnormalised features of the ensemble's own models (the
    official code always loads CLIP RN50 for it).
    """
    terms: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        terms[name] = terms.get(name, 0) + value

    if config.lambda_translate > 0:
        assert translated is not None, "the translation term needs the translator's drawings"
        add("translate", losses.translation_loss(img_train, translated))

    centers = None
    if config.lambda_patch > 0:
        centers = losses.random_patch_centers(img_train.shape, 1, patch_size_for(img_train.shape[-1]), generator=rng)
    if config.lambda_structure > 0:  # on the generated images themselves, before any CLIP view
        add("structure", losses.structure_loss(img_frozen, img_train))
    if not uses_clip_terms(config):
        return terms
    seen_frozen, seen_train = img_frozen, img_train  # what the CLIP terms encode; the patch term cuts its own crops
    # Only the plain directional term asks which pairs are still equal images.
    plain_direction = config.lambda_direction > 0 and config.first_step != "shift"
    at_rest = images_at_rest(img_frozen, img_train) if plain_direction else None
    if config.clip_views > 0:
        views = paired_views(img_frozen.shape[0], config.clip_views, rng, img_train.device)
        seen_frozen, seen_train = apply_views(img_frozen, views), apply_views(img_train, views)
        if at_rest is not None:
            at_rest = at_rest.repeat_interleave(config.clip_views)  # paired views of equal images are equal
    if config.clip_noise > 0:
        noise = paired_noise(seen_frozen.shape, config.clip_noise, rng, img_train.device)
        seen_frozen, seen_train = seen_frozen + noise, seen_train + noise
    for g in guides:
        with torch.no_grad():
            f_src = g.clip.encode_image(seen_frozen)
        f_tgt = g.clip.encode_image(seen_train)
        if config.lambda_direction > 0:
            if config.first_step == "shift":
                add("direction", g.weight * shifted_directional_term(g.clip, f_src, f_tgt, seen_train, g.direction))
            else:
                add("direction", g.weight * directional_term(f_src, f_tgt, g.direction, at_rest))
        if config.lambda_global > 0:
            add("global", g.weight * losses.global_loss(f_tgt, g.global_target, g.clip.logit_scale))
        if config.lambda_manifold > 0:
            add("manifold", g.weight * losses.manifold_angle_loss(f_src, f_tgt, g.source_anchor, g.target_anchor))
        if config.lambda_texture > 0:
            add("texture", g.weight * losses.texture_loss(f_src, f_tgt))
        if g.keep_text:
            add("keep", g.weight * losses.keep_loss(f_src, f_tgt, g.keep_text, g.clip.logit_scale))
        if config.lambda_consistency > 0:
            add("consistency", g.weight * losses.consistency_loss(f_src, f_tgt))
        if config.lambda_patch > 0:
            size = patch_size_for(img_train.shape[-1])
            add(
                "patch",
                g.weight
                * losses.patch_directional_loss(g.clip, img_frozen, img_train, g.part_directions, centers, size),
            )
    return terms


def uses_clip_terms(config: AdaptConfig) -> bool:
    """Whether any loss term of ``config`` reads CLIP features (else the images need not be encoded)."""
    clip_terms = ("direction", "global", "manifold", "texture", "patch", "consistency")
    keeps = bool(config.keep.strip()) and config.lambda_keep > 0
    return keeps or any(getattr(config, f"lambda_{name}") > 0 for name in clip_terms)


def paired_views(n: int, views: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Affine sampling matrices [n * views, 2, 3]: each image's views zoom 1-1.25x, shift and turn up to 6 degrees.

    The same matrices serve the frozen and the trained image of a pair, so a pair's views differ only
    by the domain change. Drawn on the CPU from the run's generator (resumable, device-independent).
    """
    m = n * views
    zoom = 1.0 / (1.0 + 0.25 * torch.rand(m, generator=rng))  # < 1: a crop, magnified to the full size
    angle = (torch.rand(m, generator=rng) * 2 - 1) * (6.0 * torch.pi / 180)
    shift = (torch.rand(m, 2, generator=rng) * 2 - 1) * (1.0 - zoom[:, None] + 0.06)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return theta.to(device)


def paired_noise(shape: torch.Size, std: float, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Gaussian noise [N, 3, H, W] with standard deviation ``std``, drawn on the CPU from the run's generator.

    The same tensor is added to the frozen and the trained image of each pair, so it never looks like an
    edit; it only smooths the guide (its gradient becomes an average over noisy inputs).
    """
    return (torch.randn(shape, generator=rng) * std).to(device)


def apply_views(img: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Views [n * V, 3, H, W] of images [n, 3, H, W] (view j of image i at row i * V + j), reflected at the borders."""
    views = theta.shape[0] // img.shape[0]
    assert views * img.shape[0] == theta.shape[0], f"{theta.shape[0]} views do not split over {img.shape[0]} images"
    src = img.repeat_interleave(views, dim=0)
    grid = torch.nn.functional.affine_grid(theta.to(img.dtype), list(src.shape), align_corners=False)
    return torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# Unit-feature edits shorter than this are rounding noise between equal images (seen: 7e-8).
EDIT_AT_REST = 1e-5
# Pixels (in [-1, 1]) of two renderings of equal images differ by at most this much, or a few units of rounding of
# their dtype: CUDA's free kernels differ between calls (3.6e-7 seen in float32); one training step moves far more.
IMAGE_AT_REST = 1e-3


def images_at_rest(img_frozen: torch.Tensor, img_train: torch.Tensor) -> torch.Tensor:
    """Which pairs of images [N, 3, H, W] are equal up to rounding: bool [N] (the first step renders only such)."""
    eps = torch.finfo(torch.promote_types(img_frozen.dtype, img_train.dtype)).eps
    gap = (img_train.detach() - img_frozen.detach()).flatten(1).abs().amax(dim=1)
    return gap <= max(IMAGE_AT_REST, 4 * eps)


def directional_term(
    f_src: torch.Tensor, f_tgt: torch.Tensor, direction: torch.Tensor, at_rest: torch.Tensor | None = None
) -> torch.Tensor:
    """The directional loss over features [N, D], with its first-order limit for samples whose images are equal.

    Where the trained image still equals the frozen one (the first step, when both render the same
    latents with the same noise) the edit e = unit(f_tgt) - unit(f_src) is zero and has no direction.
    There the loss is 1 - e . direction: it equals 1 at e = 0 and its gradient points along the edit
    that best follows the direction, with the magnitude of an ordinary step. The official code
    instead measures the edit of a 1e-6-shifted image; the gradient of that normalised near-zero
    edit is about a million times too large and fills Adam's second-moment estimate, which then
    (beta2 = 0.992) shrinks every later step for thousands of iterations. ``at_rest`` (bool [N],
    `images_at_rest`) marks the pairs whose images are equal, which the features alone cannot show
    in reduced precision (TF32 on an H200: ViT-B/32's step-1 term read 1.004, from an edit of rounding alone).
    """
    edit = torch.nn.functional.normalize(f_tgt, dim=-1) - torch.nn.functional.normalize(f_src, dim=-1)
    # Equal images need not give bit-equal features (CLIP's attention takes a different kernel when
    # no gradient is needed), so "no edit yet" is an edit below rounding level, not exactly zero.
    still = edit.norm(dim=-1) <= EDIT_AT_REST
    if at_rest is not None:
        still = still | at_rest
    if not bool(still.any()):
        return losses.directional_loss(f_src, f_tgt, direction)
    total = (1 - edit[still] @ direction[0]).sum()
    moving = ~still
    if bool(moving.any()):
        total = total + losses.directional_loss(f_src[moving], f_tgt[moving], direction) * int(moving.sum())
    return total / f_src.shape[0]


def shifted_directional_term(
    clip: "ClipModel", f_src: torch.Tensor, f_tgt: torch.Tensor, img_train: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """The official directional loss over features [N, D]: when the batch's unit edits sum to exactly zero
    (equal images), the trained images [N, 3, H, W] are encoded again shifted by 1e-6 (``first_step="shift"``)."""
    unit = torch.nn.functional.normalize
    if float((unit(f_tgt.detach(), dim=-1) - unit(f_src, dim=-1)).sum()) == 0:
        f_tgt = clip.encode_image(img_train + OFFICIAL_SHIFT)
    return losses.directional_loss(f_src, f_tgt, direction)


def selection_loss(guides: Sequence[Guide], img: torch.Tensor) -> torch.Tensor:
    """The layer selection's objective: ensemble-weighted global loss of images [N,3,H,W] towards the target,
    at each model's logit scale."""
    terms = [
        g.weight * losses.global_loss(g.clip.encode_image(img), g.select_target, g.clip.logit_scale) for g in guides
    ]
    return sum(terms)  # type: ignore[return-value]


# ---------------------------------------------------------------- latents and noise


@torch.no_grad()
def sample_w(G: "Generator", n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """w [n, style_dim] through G's mapping for z drawn on the CPU from ``rng`` (the same on every device)."""
    return G.mapping(torch.randn(n, G.style_dim, generator=rng).to(device))


@torch.no_grad()
def sample_latents(
    G: "Generator", n: int, mixing_prob: float, rng: torch.Generator, device: torch.device
) -> torch.Tensor:
    """W+ latents [n, n_latent, style_dim] (no gradient); with probability ``mixing_prob`` two w's are style-mixed."""
    w = sample_w(G, n, rng, device)
    if mixing_prob > 0 and float(torch.rand((), generator=rng)) < mixing_prob:
        # As in rosinality's mixing: rows before a random crossover from one w, the rest from another.
        inject = int(torch.randint(1, G.n_latent, (), generator=rng))
        return G.mix_ws(w, sample_w(G, n, rng, device), inject)
    return G.broadcast_w(w)


def sample_noise(
    G: "Generator", n: int, mode: str, rng: torch.Generator, device: torch.device
) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
    """Per-layer noise [n, 1, r, r] for the frozen and the trained generator, drawn on ``device`` from ``rng``.

    "random": one draw shared by both; "independent": the frozen generator's draw, then the trained one's
    (the official order); other modes: (None, None), the generators' own noise mode.
    """
    if mode not in ("random", "independent"):
        return None, None
    frozen = fresh_noise(G, n, rng, device)
    return frozen, (frozen if mode == "random" else fresh_noise(G, n, rng, device))


def noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """The run's noise generator: on ``device``, seeded from the run's seed (a stream apart from the latents')."""
    return torch.Generator(device=device).manual_seed(seed + NOISE_STREAM)


@torch.no_grad()
def render_samples(G: "Generator", n: int, truncation: float, batch_size: int) -> torch.Tensor:
    """Images [n, 3, H, W] for the latents of seeds 0 .. n-1 at the given truncation, stored noise."""
    z = z_from_seeds(list(range(n)), G.style_dim).to(_device_of(G))
    return torch.cat([G(chunk, truncation_psi=truncation, noise_mode="const") for chunk in z.split(batch_size)])


# ---------------------------------------------------------------- Ctrl-C handling


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag checked between iterations (a second one interrupts at once).

    Only possible in the main thread; elsewhere this does nothing and a KeyboardInterrupt is handled
    by the loop's own guard.
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ---------------------------------------------------------------- the loop


def _as_ensemble(clip: Any) -> list[tuple["ClipModel", float]]:
    """A ClipModel or a list of (ClipModel, weight) -> list of (ClipModel, weight)."""
    if isinstance(clip, (list, tuple)):
        return [(m, float(w)) for m, w in clip]
    return [(clip, 1.0)]


def adapt(
    config: AdaptConfig,
    progress: bool = True,
    G_base: "Generator | None" = None,
    clip: "ClipModel | Sequence[tuple[ClipModel, float]] | None" = None,
    *,
    resume: bool = False,
    force: bool = False,
    callback: Callback | None = None,
    G_start: "Generator | None" = None,
    timings: dict[str, float] | None = None,
) -> "Generator":
    """Adapt a generator from ``config.source`` to ``config.target``; returns the trained generator (eval mode).

    ``G_base`` and ``clip`` replace loading ``config.generator`` / ``config.clip`` (``clip`` is one
    ClipModel or a list of (ClipModel, weight)); ``config.generator`` still names the base model in
    the checkpoint metadata. ``resume`` continues the run in ``config.out_dir``
    from its last saved state; ``force`` starts that folder over. ``callback(step, record)`` is called
    after every iteration with the record written to the log. ``G_start`` gives the trained copy other
    starting weights than the frozen base (same architecture), e.g. to replay a reference run. The run
    folder stays locked (see `claim_run_dir`) until `adapt` returns or raises. ``timings``, when given,
    receives the seconds spent in each phase ("setup", "iterations", "grids", "saves"; see `PhaseClock`).
    """
    with ExitStack() as held:
        return _adapt(config, progress, G_base, clip, resume, force, callback, G_start, held, PhaseClock(timings))


@dataclass
class _Run:
    """What one adaptation holds from setup to the end: networks, objective, optimizer, random streams, progress."""

    config: AdaptConfig
    paths: RunPaths
    device: torch.device
    selector: LayerSelector
    G_frozen: "Generator"
    G_train: "Generator"
    clip_label: str  # the guide as the checkpoint metadata records it
    guides: list[Guide]
    optimizer: torch.optim.Optimizer
    rng: torch.Generator
    noise_rng: torch.Generator
    translate: "Translate | None" = None  # the translator of the translation term (nada.guidance.translators)
    step: int = 0
    selected: list[str] | None = None
    trained: set[str] = field(default_factory=set)
    complete: bool = False  # a resumed run that had already reached its iterations
    log: "LogBuffer | None" = None
    ctx: SelectionContext | None = None
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    clock: "PhaseClock | None" = None
    writer: BackgroundWriter | None = None  # sample grids are PNG-encoded on its thread while training goes on
    frozen_row: torch.Tensor | None = None  # the grids' top row, drawn once (the frozen generator never changes)


def _adapt(
    config: AdaptConfig,
    progress: bool,
    G_base: "Generator | None",
    clip: "ClipModel | Sequence[tuple[ClipModel, float]] | None",
    resume: bool,
    force: bool,
    callback: Callback | None,
    G_start: "Generator | None",
    held: ExitStack,
    clock: "PhaseClock",
) -> "Generator":
    """The body of `adapt`: set up, iterate, save; ``held`` keeps the run folder claimed until `adapt` ends."""
    run = _setup(config, G_base, clip, resume, force, G_start, held)
    clock.device, run.clock, run.writer = run.device, clock, BackgroundWriter()
    held.callback(run.writer.close)
    clock.lap("setup")
    if run.step == 0:
        _save_samples(run, 0)
    bar = _progress_bar(progress, run.step, config.iterations)
    # The state at the start of the current iteration: what a save after an interruption must record.
    boundary = _boundary(run.rng, run.noise_rng, run.selected, run.trained)
    updating = False
    try:
        with (
            _DeferredInterrupt() as interrupt,
            fp32_precision(run.device, config.tf32),
            deterministic_kernels(run.device, config.deterministic),
        ):
            while run.step < config.iterations:
                t0 = time.perf_counter()
                boundary = _boundary(run.rng, run.noise_rng, run.selected, run.trained)
                loss, terms = _forward(run)
                updating = True
                _update(run, loss)
                boundary = _boundary(run.rng, run.noise_rng, run.selected, run.trained)
                updating = False
                _bookkeeping(run, loss, terms, boundary, bar, callback, time.perf_counter() - t0)
                if interrupt.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        # Save where the last complete iteration left off, unless the interrupt hit the weight update.
        if not updating and run.step > 0:
            _save(run, boundary, final=False)
        raise
    finally:
        bar.close()
        run.log.close()
    if not run.complete:
        _save_samples(run, run.step)
        _save(run, boundary, final=True)
    run.writer.wait()
    clock.lap("grids")
    run.G_train.eval().requires_grad_(False)
    return run.G_train.folded() if config.params == "domain" else run.G_train


def _setup(
    config: AdaptConfig,
    G_base: "Generator | None",
    clip: "ClipModel | Sequence[tuple[ClipModel, float]] | None",
    resume: bool,
    force: bool,
    G_start: "Generator | None",
    held: ExitStack,
) -> _Run:
    """Validate, claim the run folder, build generators, guides and optimizer, and restore a saved state."""
    selector = _validated_selector(config, clip)
    paths = held.enter_context(claim_run_dir(config, resume, force))
    device = resolve_device(config.device)
    G_frozen, G_train = _generators(config, G_base, G_start, selector, device)
    if clip is None:
        # Only the CLIP terms and the data-driven layer selections read CLIP; a run with neither loads none.
        needed = uses_clip_terms(config) or selector.dynamic
        ensemble = load_clip_ensemble(config.resolved_clip(), device, antialias=config.antialias) if needed else []
    else:
        ensemble = _as_ensemble(clip)
    clip_label = config.resolved_clip() if clip is None else ", ".join(f"{m.name}:{w}" for m, w in ensemble)
    target_images = load_target_images(config.target_images) if config.target_images else None
    guides = build_guides(ensemble, config, G_frozen, target_images)
    # Every synthesis parameter is in the optimizer; only selected layers get gradients, and Adam skips
    # parameters whose gradient is None, so unselected layers never move.
    optimizer = torch.optim.Adam(
        synthesis_parameters(G_train),
        lr=config.lr * G_REG_RATIO,
        betas=(config.beta1**G_REG_RATIO, config.beta2**G_REG_RATIO),
    )
    rng, noise_rng = torch.Generator().manual_seed(config.seed), noise_generator(config.seed, device)
    run = _Run(config, paths, device, selector, G_frozen, G_train, clip_label, guides, optimizer, rng, noise_rng)
    _restore(run, resume)
    run.ctx = SelectionContext(
        sample_w=lambda n: sample_w(G_frozen, n, rng, device),
        image_loss=lambda img: selection_loss(guides, img),
        batch_size=config.auto_batch,
        chunk=config.select_chunk,
        sample_noise=None if config.select_noise == "const" else lambda n: fresh_noise(G_frozen, n, noise_rng, device),
    )
    run.autocast = _autocast(config, device)
    if config.lambda_translate > 0:
        run.translate = load_translator(config.translator, config.source, config.target, device)
    return run


def _validated_selector(config: AdaptConfig, clip: Any) -> LayerSelector:
    """The layer selector, after every check that needs nothing loaded (settings, layer and CLIP specs)."""
    config.validate()
    selector = parse_layers(config.layers, score=config.select_score, layer_sets=config.layer_sets)
    if config.lambda_patch > 0 and not config.target.strip():
        raise NadaError(
            "the patch loss needs a target text: give --target as well as --target-images, or set lambda_patch to 0"
        )
    if clip is None:
        parse_clip_spec(config.resolved_clip())  # a malformed list fails here, before any loading
    return selector


def _generators(
    config: AdaptConfig,
    G_base: "Generator | None",
    G_start: "Generator | None",
    selector: LayerSelector,
    device: torch.device,
) -> tuple["Generator", "Generator"]:
    """G_frozen, the fixed anchor, and G_train, the copy whose chosen layers learn (no gradients yet)."""
    base = G_base if G_base is not None else load_generator(config.generator, device=device)
    selector.validate(base)
    G_frozen = deepcopy(base).to(device).eval().requires_grad_(False)
    if not bool(G_frozen.mean_latent.any()):
        G_frozen.compute_mean_latent(seed=config.seed)  # samples need a truncation centre
    G_train = _trained_copy(G_frozen, config)  # requires_grad stays False until layers are selected
    if G_start is not None:
        if config.params == "domain":
            raise NadaError(
                "G_start sets starting weights, but params 'domain' trains a vector on the frozen "
                "weights: use one of the two"
            )
        G_train.load_state_dict(G_start.state_dict())
    return G_frozen, G_train


def _restore(run: _Run, resume: bool) -> None:
    """Continue from the run folder's saved state (resume) or start it fresh; write its config and log."""
    config, paths = run.config, run.paths
    state = _load_state(paths) if resume and paths.state.exists() else None
    if state is not None:
        _check_resumable(state["config"], config, paths.root)
        _load_trained(run.G_train, state["g_ema"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.rng.set_state(state["rng"])
        run.noise_rng.set_state(state["noise_rng"])
        run.step, run.selected, run.trained = int(state["step"]), list(state["selected"]), set(state["trained"])
        if run.step > config.iterations:
            raise NadaError(
                f"the run in {paths.root} already has {run.step} iterations: ask for at least that many "
                f"(--iterations {run.step})"
            )
        run.complete = run.step >= config.iterations
        set_trainable(run.G_train, run.selected)
        log_lines = _read_log(paths.log, run.step)
    else:
        if paths.has_run():
            if paths.config.exists() and resume:
                _check_resumable(json.loads(paths.config.read_text(encoding="utf-8")), config, paths.root)
            paths.clear()  # force, or a resume with nothing saved yet: start over
        log_lines = []
    atomic_write(paths.config, lambda tmp: tmp.write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8"))
    atomic_write(paths.log, lambda tmp: tmp.write_text("".join(line + "\n" for line in log_lines), encoding="utf-8"))
    run.log = LogBuffer(paths.log)


def _autocast(config: AdaptConfig, device: torch.device) -> Callable[[], AbstractContextManager[Any]]:
    """bf16 autocast on CUDA when asked for, else a no-op; warns for settings that apply only on CUDA."""
    use_bf16 = config.bf16 and device.type == "cuda"
    if config.bf16 and not use_bf16:
        warnings.warn("bf16 autocast is only used on CUDA; running in float32", stacklevel=2)
    if config.tf32 and device.type != "cuda":
        warnings.warn("TF32 is only used on CUDA; running in float32", stacklevel=2)
    if config.deterministic and device.type != "cuda":
        warnings.warn("deterministic only changes CUDA runs; the CPU runs deterministically already", stacklevel=2)
    return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext


def _forward(run: _Run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One iteration's latents, layer selection, images of both generators and weighted loss (and its terms)."""
    config, device = run.config, run.device
    # 1. the training latents, drawn before the selection's as in the official loop
    ws = sample_latents(run.G_frozen, config.batch_size, config.mixing_prob, run.rng, device)
    # 2. layers to train (dynamic strategies every select_every steps, static ones once)
    if run.selected is None or (run.selector.dynamic and run.step % config.select_every == 0):
        # Always in fp32: bf16 rounds away the small W+ changes the selection ranks (docs/performance.md).
        run.selected = run.selector.select(run.G_train, run.ctx)
        set_trainable(run.G_train, run.selected)
    # 3. the same latents (and by default the same noise) for both generators
    noise_frozen, noise_train = sample_noise(run.G_frozen, config.batch_size, config.noise_mode, run.noise_rng, device)
    noise_mode = "const" if noise_frozen is not None else config.noise_mode
    with run.autocast():
        with torch.no_grad():
            img_frozen = run.G_frozen.synthesis(ws, noise=noise_frozen, noise_mode=noise_mode)
        img_train = run.G_train.synthesis(ws, noise=noise_train, noise_mode=noise_mode)
    # 4. the translator's drawings of the frozen images, their noise seeded by the step (the same on resume)
    translated = None
    if run.translate is not None:
        with torch.no_grad():
            translated = run.translate(img_frozen.float(), config.seed * 1_000_003 + run.step)
    with run.autocast():
        # 5. weighted losses
        terms = loss_terms(run.guides, img_frozen, img_train, config, run.rng, translated)
    loss = sum(getattr(config, f"lambda_{name}") * value for name, value in terms.items())
    return loss, terms


def _update(run: _Run, loss: torch.Tensor) -> None:
    """5. One Adam step on the selected layers; the step counts and its layers join the trained set."""
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.trained.update(run.selected)


def _bookkeeping(
    run: _Run,
    loss: torch.Tensor,
    terms: dict[str, torch.Tensor],
    boundary: dict[str, Any],
    bar: Any,
    callback: Callback | None,
    seconds: float,
) -> None:
    """6. Log (a callback sees every record, so it reads each step back), samples, checkpoints, the callback."""
    config, step = run.config, run.step
    run.log.add(step, loss, terms, run.selected, round(seconds, 4))
    bar.update(1)
    if callback is not None or step % config.log_every == 0:
        records = run.log.flush()
        bar.set_postfix(loss=f"{records[-1]['loss']:.4f}")
    if config.sample_every and step % config.sample_every == 0 and step < config.iterations:
        _save_samples(run, step)
    if config.save_every and step % config.save_every == 0 and step < config.iterations:
        _save(run, boundary, final=False)
    if callback is not None:
        callback(step, records[-1])


def _save_samples(run: _Run, at: int) -> None:
    """The sample grid of step `at`: the frozen generator's row above the trained one's."""
    config = run.config
    run.clock.lap("iterations")
    if run.frozen_row is None:  # kept on the host: at 1024 it would hold 100 MB of device memory for the whole run
        run.frozen_row = render_samples(
            run.G_frozen, config.n_sample_images, config.sample_truncation, config.batch_size
        ).cpu()
    rows = [
        run.frozen_row.to(run.device),
        render_samples(run.G_train, config.n_sample_images, config.sample_truncation, config.batch_size),
    ]
    run.writer.submit(atomic_save_image, image_grid(rows), run.paths.sample(at), compress_level=SAMPLE_PNG_LEVEL)
    run.clock.lap("grids")


def _save(run: _Run, boundary: dict[str, Any], final: bool) -> Path:
    """Checkpoint the trained generator, then the resume state that points at it (the log first reaches the step)."""
    config, paths, at = run.config, run.paths, run.step
    run.clock.lap("iterations")
    run.log.flush()
    target = paths.final if final else paths.checkpoint(at)
    order = trainable_names(run.G_train)
    metadata = {
        "base_model": config.generator,
        "source": config.source,
        "target": config.target,
        "target_images": config.target_images,
        "clip": run.clip_label,
        "templates": config.resolved_templates(),
        "layers": config.layers,
        "trained_layers": [n for n in order if n in boundary["trained"]],
        "iterations": at,
        "adapt_config": config.to_dict(),
        "nada_version": __version__,
    }
    if config.params == "domain":
        save_domain(target, run.G_train.vector(), run.G_frozen, config.generator, metadata, overwrite=True)
    else:
        save_checkpoint(target, run.G_train, metadata, overwrite=True)
    resume_state = {
        "step": at,
        "optimizer": run.optimizer.state_dict(),
        "rng": boundary["rng"],
        "noise_rng": boundary["noise_rng"],
        "selected": list(boundary["selected"] or []),
        "trained": sorted(boundary["trained"]),
        "checkpoint": str(target.relative_to(paths.root)),
        "config": config.to_dict(),
    }
    atomic_torch_save(resume_state, paths.state)
    run.clock.lap("saves")
    return target


def _trained_copy(G_frozen: "Generator", config: AdaptConfig) -> torch.nn.Module:
    """What the run trains: a copy of the frozen generator, or a zero domain vector on it (params "domain")."""
    if config.params == "domain":
        return DomainGenerator(G_frozen)
    return deepcopy(G_frozen)


def _load_trained(G_train: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Restore the trained tensors of a saved run (a state dict, or {"vector": [D]} for a domain run)."""
    if isinstance(G_train, DomainGenerator):
        if "vector" not in tensors:
            raise NadaError("the saved run trained weights, not a domain vector: resume it with --params weights")
        G_train.load_vector(tensors["vector"].to(_device_of(G_train)))
    else:
        G_train.load_state_dict(tensors)


def _boundary(
    rng: torch.Generator, noise_rng: torch.Generator, selected: list[str] | None, trained: set[str]
) -> dict[str, Any]:
    """What a save at this point must record: both generators' states and the layer selection so far."""
    return {"rng": rng.get_state(), "noise_rng": noise_rng.get_state(), "selected": selected, "trained": set(trained)}


def _progress_bar(enabled: bool, start: int, total: int) -> Any:
    """A tqdm bar (loss in the postfix, ETA from tqdm) or a silent stand-in."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="adapt", unit="it", dynamic_ncols=True)
