"""Configuration of a domain adaptation run: one frozen dataclass and the one function that resolves it.

`AdaptConfig` holds every setting; its defaults follow the official StyleGAN-NADA code
(rinongal/StyleGAN-nada, ``ZSSGAN/options/train_options.py`` and ``train.py``) unless a comment says why
not. `resolve` puts a base generator's profile (`nada.profiles`), a preset's recipe, a reference mode and
the user's options on top, in that order; the CLI (``nada adapt``), the Python API, ``nada sweep`` and the
web app all call it, so a setting comes from the same place whichever front end starts the run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from nada.errors import NadaError
from nada.guidance.clip import parse_clip_spec
from nada.guidance.losses import keep_groups
from nada.guidance.templates import attribute_groups, prompt_set_for, prompt_sets
from nada.guidance.translators import check_translator
from nada.limits import check_truncation
from nada.profiles import get_profile, profile_base
from nada.weights.preset_table import Preset, get_preset, trained_dir

# "auto" for the CLIP means the base profile's guide, else the paper's ViT-B/32; for the templates, the
# prompt set registered for the guiding CLIPs, else CLIP's ImageNet prompts (nada.guidance.templates).
AUTO = "auto"
PAPER_CLIP = "ViT-B/32"
NOISE_CHOICES = ("random", "independent", "const", "none")
SELECT_NOISE_CHOICES = ("random", "const")
FIRST_STEP_CHOICES = ("limit", "shift")
SCORE_CHOICES = ("mean_abs", "l2")
LAYER_SET_CHOICES = ("nada", "official")
PARAMS_CHOICES = ("weights", "domain")
# Reference modes: AdaptConfig values that reproduce a published implementation (docs/adapt.md lists
# every default that departs from it). "official": rinongal/StyleGAN-nada @ dc8406a.
REFERENCES: dict[str, dict[str, Any]] = {
    "official": {
        "layer_sets": "official",
        "select_score": "mean_abs",
        "select_noise": "random",
        "noise_mode": "independent",
        "first_step": "shift",
        "antialias": False,
        "templates": "imagenet",
    },
}


@dataclass(frozen=True)
class AdaptConfig:
    """Everything that defines an adaptation run (plain types only, so it round-trips through JSON)."""

    # What to adapt, towards what.
    target: str = ""  # target domain text, e.g. "sketch"; may stay empty when target_images is given
    source: str = "photo"  # source domain text describing what the generator makes now
    generator: str = ""  # checkpoint path or registered name (see nada.generator.checkpoints.load_generator)
    target_images: str | None = None  # folder of example images of the target style (image-guided)
    target_images_batch: int = (
        16  # generated source images whose mean embedding the image direction starts from (official img2img_batch)
    )

    # CLIP guidance.
    clip: str = AUTO  # one model or a weighted ensemble, e.g. "ViT-B/32,ViT-B/16:0.5"; see resolved_clip
    templates: str = AUTO  # a registered prompt set (nada.guidance.templates) or auto; see resolved_templates
    antialias: bool = True  # antialiased resize to CLIP's input (see nada.guidance.clip); False = official numbers
    # The directional loss at a pair of equal images (the first step with shared noise): "limit" uses its
    # first-order limit 1 - edit . direction; "shift" is the official rule (re-encode the image + 1e-6).
    first_step: str = "limit"
    lambda_direction: float = 1.0
    lambda_global: float = 0.0
    lambda_manifold: float = 0.0
    lambda_texture: float = 0.0
    lambda_patch: float = 0.0
    lambda_structure: float = (
        0.0  # edge-map correlation with the frozen image (nada's own content anchor; see losses.structure_loss)
    )
    # Cross-sample consistency: each adapted image's CLIP similarities to the other images of the batch (all
    # views) keep the frozen images' distribution (Ojha et al.'s cross-domain correspondence; losses.consistency_loss).
    lambda_consistency: float = 0.0
    # An image translator (a registered name, nada.guidance.translators) redraws each frozen image in the target
    # domain, and the translation term pulls the trained image of the same latent towards that drawing (MSE).
    translator: str = ""
    lambda_translate: float = 0.0
    # Attributes the adapted images must keep, read zero-shot by the CLIP: prompt groups split by ';', the
    # values of one attribute by '|' ("a smiling face|a neutral face|a frowning face; a face with glasses|a
    # face without glasses"), or the name of registered attribute groups ("NAME", or "NAME:a,b" for some of
    # them: an edit of one attribute keeps the others). Empty: no such term.
    keep: str = ""
    lambda_keep: float = 1.0  # weight of the keep term (losses.keep_loss); used only when `keep` names attributes
    # Random views (zoomed, shifted, slightly rotated crops) per image pair for the CLIP terms; 0 uses
    # the plain images, as the official code. Views blunt pixel patterns that fool one exact input of
    # a weak CLIP: tiny CLIPs need them (docs/adapt.md, "Profiles").
    clip_views: int = 0
    # Gaussian noise (this standard deviation, images in [-1, 1]) added to every image the CLIP terms
    # see, the same noise for the frozen and the trained image of a pair: the guide's gradient becomes
    # an average over noisy copies (randomised smoothing), which favours changes that survive noise.
    clip_noise: float = 0.0

    # What trains: "weights" (the chosen layers' weights, as the paper) or "domain" (only a domain vector of
    # per-channel style offsets, HyperDomainNet; the run's generator.pt is a kilobyte domain file,
    # see nada.generator.domains).
    params: str = "weights"
    # Which layers train (see nada.adaptation.layers for the specs); with params "domain", which layers'
    # slices of the vector.
    layers: str = "auto:3"
    select_every: int = 1  # re-run a data-driven selection every N iterations (the official code: every one)
    auto_batch: int = 8  # latents used by the auto/grad selection (official auto_layer_batch)
    # auto:K renders and back-propagates this many of the auto_batch latents at a time (0: all at once). Each
    # latent's gradient is the same (the loss is a batch mean, rescaled per chunk); peak memory falls.
    select_chunk: int = 0
    select_score: str = (
        "mean_abs"  # how auto:K ranks W+ rows: "mean_abs" (official) or "l2" (see nada.adaptation.layers)
    )
    select_noise: str = "random"  # selection renders with fresh noise ("random", official) or stored noise ("const")
    # "official": `all` is the official set (constant, conv1, convs; no to_rgb) and auto:K maps row i to the
    # official code's layer (convs.{i-2}); "nada": `all` is every conv and to_rgb, rows map to the layers they drive.
    layer_sets: str = "nada"

    # Optimisation.
    iterations: int = 300
    batch_size: int = 2
    # Given as in the official command line; like the official train.py the optimizer multiplies lr by
    # g_reg_ratio = 4/5 and raises both betas to that power (Adam lr 0.0016, betas (0, 0.99197)), so
    # published StyleGAN-NADA settings reproduce the same effective step sizes here.
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    # The official default is 0.0: rosinality's 0.9 belongs to GAN training, where mixing is a regulariser.
    mixing_prob: float = 0.0
    # "random" draws fresh noise each iteration from the run's noise generator and gives the SAME noise to
    # the frozen and the trained generator, so their difference is the domain change alone; "independent"
    # draws one noise for each (the official code); "const" uses the stored noise buffers.
    noise_mode: str = "random"
    seed: int = 0

    # Outputs.
    out_dir: str = "runs/adapt"
    n_sample_images: int = 8  # sample grids show the latents of seeds 0 .. n-1 (the same as `nada generate`)
    sample_truncation: float = 0.7
    sample_every: int = 50  # iterations between sample grids (0: only at the start and the end)
    save_every: int = 100  # iterations between checkpoints + resume state (0: only at the end)
    # Iterations between reads of the loss values from the device (one host sync). The log still gets a
    # line per iteration: the records wait in memory and are written at these reads, at every save, at the
    # end and on Ctrl-C, so the log on disk always reaches at least the saved state's step.
    log_every: int = 10

    # Execution.
    device: str = "auto"
    bf16: bool = False  # bfloat16 autocast for generator and CLIP forward passes on CUDA (ignored on CPU)
    tf32: bool = False  # TF32 for CUDA float32 matmuls and convolutions during the run (False: IEEE float32 for both)
    # Deterministic CUDA kernels during the loop (cuDNN, PyTorch, cuBLAS workspace, CLIP's resize as matmuls), so
    # that two runs with one seed give the same weights; the CPU always is. See docs/performance.md for its cost.
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AdaptConfig":
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NadaError(f"unknown adaptation settings {unknown}: valid names are {sorted(known)}")
        return cls(**dict(d))

    @classmethod
    def reference(cls, name: str, **changes: Any) -> "AdaptConfig":
        """The config of a reference mode (see REFERENCES), with ``changes`` on top."""
        if name not in REFERENCES:
            raise NadaError(f"unknown reference mode {name!r}: use one of {', '.join(REFERENCES)}")
        return cls(**{**REFERENCES[name], **changes})

    def resolved_clip(self) -> str:
        """The CLIP spec actually used: "auto" means the base profile's guide, else ViT-B/32."""
        if self.clip.strip().lower() != AUTO:
            return self.clip
        profile = get_profile(profile_base(self.generator) or "")
        return str((profile.options() if profile else {}).get("clip", PAPER_CLIP))

    def resolved_templates(self) -> str:
        """The prompt set actually used: "auto" means the set registered for every guiding CLIP, else "imagenet"."""
        if self.templates != AUTO:
            return self.templates
        return prompt_set_for([name for name, _ in parse_clip_spec(self.resolved_clip())])

    def resolved_keep(self) -> list[list[str]]:
        """The keep term's prompt groups (one list of value prompts per attribute); [] when `keep` is empty."""
        spec = self.keep.strip()
        if not spec:
            return []
        groups = attribute_groups(spec)
        return groups if groups is not None else keep_groups(spec)

    def replace(self, **changes: Any) -> "AdaptConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def validate(self) -> None:
        """Raise one NadaError for the first setting that cannot work (texts, numbers, choices)."""
        if not self.source.strip():
            raise NadaError("the source text is empty: describe what the generator makes now, e.g. --source 'photo'")
        if not self.target.strip() and not self.target_images:
            raise NadaError(
                "the target text is empty: describe the new domain, e.g. --target 'sketch' (or give --target-images)"
            )
        if self.target.strip() and self.source.strip().lower() == self.target.strip().lower():
            raise NadaError(
                f"source and target are the same text ({self.source!r}): the target must describe a different domain"
            )
        positive_ints = (
            "iterations",
            "batch_size",
            "select_every",
            "auto_batch",
            "n_sample_images",
            "target_images_batch",
            "log_every",
        )
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise NadaError(f"{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("sample_every", "save_every", "seed", "clip_views", "select_chunk"):
            if int(getattr(self, name)) < 0:
                raise NadaError(f"{name} must be 0 or more (got {getattr(self, name)})")
        if not (0 <= self.clip_noise <= 1):
            raise NadaError(
                f"clip_noise must lie in [0, 1] (got {self.clip_noise}): "
                "it is a standard deviation for images in [-1, 1]"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NadaError(f"lr must be a positive number (got {self.lr})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise NadaError(f"Adam betas must lie in [0, 1) (got {self.beta1}, {self.beta2})")
        if not 0 <= self.mixing_prob <= 1:
            raise NadaError(f"mixing_prob must lie in [0, 1] (got {self.mixing_prob})")
        lambdas = {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("lambda_")}
        if any(v < 0 or not math.isfinite(v) for v in lambdas.values()):
            raise NadaError(f"loss weights must be finite and >= 0 (got {lambdas})")
        if not self.keep.strip():
            lambdas.pop("lambda_keep")  # without attributes to keep the term does not exist
        if not any(v > 0 for v in lambdas.values()):
            raise NadaError("every loss weight is 0, so nothing would train: set e.g. lambda_direction to 1")
        if self.lambda_consistency > 0 and self.batch_size * max(1, self.clip_views) < 3:
            raise NadaError(
                "the consistency loss compares each image with the others of its batch: "
                f"batch_size {self.batch_size} x clip_views {self.clip_views} gives fewer than 3 images; "
                "raise --batch-size or --clip-views, or set lambda_consistency to 0"
            )
        if self.lambda_translate > 0:
            if not self.translator.strip():
                raise NadaError("lambda_translate is set but no translator is named: pass --translator NAME")
            check_translator(self.translator)
        self.resolved_keep()  # a keep spec that names no attribute or unknown ones fails here, not in the run
        if self.templates not in (AUTO, *prompt_sets()):
            raise NadaError(f"unknown templates {self.templates!r}: use one of {', '.join((AUTO, *prompt_sets()))}")
        choices = {"noise_mode": NOISE_CHOICES, "select_noise": SELECT_NOISE_CHOICES, "first_step": FIRST_STEP_CHOICES}
        choices.update(select_score=SCORE_CHOICES, layer_sets=LAYER_SET_CHOICES, params=PARAMS_CHOICES)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise NadaError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        check_truncation(self.sample_truncation, "sample_truncation")
        if not self.out_dir.strip():
            raise NadaError("out_dir is empty: give a folder for the run's outputs, e.g. --out runs/sketch")
        if not str(self.generator).strip():
            raise NadaError(
                "no base generator given: pass --generator with a registered name "
                "(see `nada presets generators`) or a checkpoint path"
            )


@dataclass(frozen=True)
class WebLimits:
    """Server-side limits on what one visitor of `nada web` may ask for; `nada web --max-...` flags override them."""

    max_iterations: int = 1000  # Adapt iterations per job: a 300-iteration recipe fits, hours of one CPU do not
    max_batch: int = 8  # latents per Adapt iteration
    max_views: int = 16  # random CLIP views per image pair (recipes use up to 8)
    max_seeds: int = 64  # images per Generate click
    max_steps: int = 1000  # inversion steps per Stylize click
    max_upload_pixels: int = 4096 * 4096  # width x height of an uploaded photo, read from its header before decoding
    max_upload_mb: int = 25  # size of one uploaded file

    def validate(self) -> None:
        """NadaError naming the first limit that is not a positive whole number."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise NadaError(f"web limit {f.name} must be a whole number of at least 1 (got {value!r})")

    def check_adapt(self, config: AdaptConfig) -> None:
        """NadaError when an Adapt job is larger than these limits (iterations, batch, views)."""
        for value, limit, what in (
            (config.iterations, self.max_iterations, "iterations"),
            (config.batch_size, self.max_batch, "latents per iteration"),
            (config.clip_views, self.max_views, "CLIP views"),
        ):
            if value > limit:
                raise NadaError(
                    f"{value} {what} asked for: this server runs at most {limit} per adaptation; ask for fewer"
                )


# Command-line flags of the AdaptConfig fields whose flag is not ``--field-name`` (nada adapt).
CLI_FLAGS: dict[str, str] = {"mixing_prob": "--mixing", "out_dir": "--out", "n_sample_images": "--n-samples"}


def cli_flag(field: str) -> str:
    """The `nada adapt` flag that sets an AdaptConfig field; booleans that default to True take ``--no-``."""
    flag = CLI_FLAGS.get(field) or "--" + field.replace("_", "-")
    return "--no-" + flag[2:] if getattr(AdaptConfig, field) is True else flag


# ---------------------------------------------------------------- resolution

# Where a resolved setting came from, lowest precedence first.
SOURCES = ("default", "profile", "preset", "reference", "user")


def resolve(
    base: str | None = None,
    preset: str | None = None,
    user: Mapping[str, Any] | None = None,
    reference: str | None = None,
) -> tuple[AdaptConfig, dict[str, str]]:
    """The AdaptConfig of a run and each field's source: defaults < base profile < preset < reference < user.

    `base` is a registered name or a checkpoint path (its metadata's base gives the profile); without it
    the preset's base is used. `user` holds only the options the user gave explicitly.
    """
    user = dict(user or {})
    _check_names(user, "user options")
    layers: list[tuple[str, dict[str, Any]]] = []
    recipe = get_preset(preset) if preset else None
    if recipe is not None:
        layers.append(
            (
                "preset",
                {"generator": recipe.base, "source": recipe.source, "target": recipe.target, **dict(recipe.options)},
            )
        )
    if base:
        user["generator"] = str(base)
    generator = user.get("generator") or (recipe.base if recipe is not None else "")
    profile = get_profile(profile_base(generator) or "") if generator else None
    if profile is not None:
        layers.insert(0, ("profile", profile.options()))
    if reference:
        if reference not in REFERENCES:
            raise NadaError(f"unknown reference mode {reference!r}: use one of {', '.join(REFERENCES)}")
        layers.append(("reference", REFERENCES[reference]))
    layers.append(("user", user))
    values: dict[str, Any] = {}
    sources = {f.name: "default" for f in fields(AdaptConfig)}
    for source, options in layers:
        _check_names(options, f"{source} options")
        values.update(options)
        sources.update({k: source for k in options})
    return AdaptConfig(**values), sources


def preset_config(preset: str | Preset, out_dir: str | os.PathLike | None = None) -> AdaptConfig:
    """The AdaptConfig that trains `preset` (its base's profile, then its recipe); run folder `trained_dir`."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    out = str(out_dir if out_dir is not None else trained_dir(p.name))
    return resolve(p.base, preset=p.name, user={"out_dir": out})[0]


def _check_names(options: Mapping[str, Any], what: str) -> None:
    """NadaError naming option names that are no AdaptConfig field."""
    unknown = sorted(set(options) - {f.name for f in fields(AdaptConfig)})
    if unknown:
        raise NadaError(f"unknown adaptation settings {unknown} in the {what}: use AdaptConfig field names")


def describe(config: AdaptConfig, sources: Mapping[str, str]) -> str:
    """Every setting of `config`, one per line, with where its value came from (as `--print-config` shows)."""
    width = max(len(f.name) for f in fields(AdaptConfig))
    lines = [
        f"{f.name:<{width}}  {getattr(config, f.name)!r:<40}  {sources.get(f.name, 'default')}"
        for f in fields(AdaptConfig)
    ]
    resolved = {"clip": config.resolved_clip(), "templates": config.resolved_templates()}
    lines += [
        f"{'(' + k + ')':<{width}}  {v!r:<40}  resolved from {getattr(config, k)!r}"
        for k, v in resolved.items()
        if v != getattr(config, k)
    ]
    return "\n".join(line.rstrip() for line in lines)
