"""The toy world as a nada plugin: registers its generator, prompts, profile, presets, translator, judge, commands.

nada's core knows nothing of the toy world: `register` (named in pyproject's ``nada.plugins`` entry points)
adds every part through the same public functions a third-party base would use (docs/plugins.md).
nada's modules are imported inside the functions below: `nada.plugins.load_plugins` imports this module from
inside registry lookups, which may run while one of those modules (the CLI among them) is itself importing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nada.config import AdaptConfig
    from nada.generator.networks import Generator
    from nada.photos.perceptual import ClipFeatureDistance
    from nada.profiles import WorldJudges

NAME = "toy"
# A tiny CLIP is easy to satisfy with colour changes that are no style, and each architecture has its
# own such changes: the guide is the packaged toy CLIP, its stability-trained copy (weighted 2) and the
# convolutional toy-rn, which share one text space, smoothed by noise; views, the structure term and
# the keep term on the six face attributes keep the faces (docs/toy_quality.md measures each part).
TOY_RECIPE: tuple[tuple[str, Any], ...] = (
    ("clip", "toy,toy-robust:2,toy-rn"),
    ("layers", "all"),
    ("iterations", 300),
    ("lr", 0.005),
    ("clip_views", 8),
    ("clip_noise", 0.4),
    ("lambda_structure", 1.0),
    ("keep", NAME),
    ("lambda_keep", 0.1),
    ("seed", 0),
)
# The toy translator's drawings of the frozen faces as targets, no CLIP term: the strict judge calls 96-98 % of the
# faces sketches where the CLIP recipe makes none (docs/toy_quality.md, "The toy translator"). Its lr is the
# supervised oracle's Adam step (0.005 after nada's 4/5), its noise the oracle's stored buffers.
TRANSLATOR_RECIPE: dict[str, Any] = {
    "translator": NAME,
    "lambda_translate": 1.0,
    "lambda_direction": 0.0,
    "keep": "",
    "lambda_structure": 0.0,
    "clip_views": 0,
    "clip_noise": 0.0,
    "lr": 0.00625,
    "noise_mode": "const",
}
# Packaged presets: style -> (description, changes to TOY_RECIPE); the styles the guides move least get a
# larger step (docs/presets.md gives the measurements behind each lr).
TOY_STYLES: dict[str, tuple[str, dict[str, Any]]] = {
    "sketch": ("toy faces drawn in pencil (the toy translator's drawings as targets)", TRANSLATOR_RECIPE),
    "watercolor": ("toy faces as watercolour washes", {}),
    "pixel art": ("toy faces as blocky pixel art", {"lr": 0.014}),
    "pop art": ("toy faces inked and dotted like pop art", {"lr": 0.01}),
}


def register() -> None:
    """Register the toy world's parts with nada's registries (called once by `nada.plugins.load_plugins`)."""
    from nada.toy.clips import register_toy_clips

    register_toy_clips()
    _register_generator()
    _register_prompts()
    _register_profile()
    _register_presets()
    _register_translator()
    _register_commands()


def load_toy_perceptual(device: str | torch.device = "cpu") -> "ClipFeatureDistance":
    """The toy world's perceptual distance for inversion: token features of the toy CLIP, x, y [N, 3, H, W] -> [N]."""
    from nada.guidance.clip import load_clip
    from nada.photos.perceptual import ClipFeatureDistance

    return ClipFeatureDistance(load_clip(NAME, device=device))


def _register_generator() -> None:
    from nada.weights.download import WeightsSource
    from nada.weights.registry import RegisteredGenerator, register_generator

    weights = WeightsSource("generator.pt", package_path="assets/toy/generator.pt")
    register_generator(
        RegisteredGenerator(NAME, weights, 64, "64x64 toy faces trained by nada, small enough for the CPU (packaged)")
    )


def _register_prompts() -> None:
    from nada.guidance.templates import register_attribute_groups, register_prompt_set
    from nada.toy.clips import TOY_CLIPS
    from nada.toy.render import ATTRIBUTE_PROMPTS, TEMPLATES

    register_prompt_set(NAME, TEMPLATES, clips=tuple(TOY_CLIPS))  # the prompts the toy CLIPs were trained with
    register_attribute_groups(NAME, ATTRIBUTE_PROMPTS)


def _register_profile() -> None:
    from nada.profiles import EvalWorld, Profile, register_profile

    def load_perceptual(device: Any = "cpu") -> Any:
        """The toy CLIP's token-feature distance (looked up at call time, so tests can stand in for it)."""
        return load_toy_perceptual(device)

    register_profile(
        Profile(
            NAME,
            TOY_RECIPE,
            perceptual=("toy CLIP features", load_perceptual),
            identity=False,
            alignment="none",
            judge=judge,
            description="the toy recipe (docs/toy_quality.md)",
            evaluation=EvalWorld(NAME, ("toy-rn", "toy-robust", "toy"), eval_judges, EVAL_COLUMNS, EVAL_SHEET),
        )
    )


def _register_presets() -> None:
    from nada.weights.download import WeightsSource
    from nada.weights.presets import Preset, register_preset

    for style, (description, changes) in TOY_STYLES.items():
        name = f"{NAME}-" + style.replace(" ", "-")
        options = tuple({**dict(TOY_RECIPE), **changes}.items())
        weights = WeightsSource(f"{name}.pt", package_path=f"assets/toy/presets/{name}.pt")
        register_preset(Preset(name, NAME, "photo", style, options, weights, description))
    # Domain vectors where they hold up against full fine-tuning (docs/domains.md measures all four styles).
    name = f"{NAME}-watercolor-dv"
    options = tuple((k, 0.05 if k == "lr" else v) for k, v in TOY_RECIPE) + (("params", "domain"),)
    weights = WeightsSource(f"{name}.pt", package_path=f"assets/toy/presets/{name}.pt")
    register_preset(
        Preset(
            name,
            NAME,
            "photo",
            "watercolor",
            options,
            weights,
            "toy faces as watercolour washes (a domain vector: 1,312 numbers, 9 KB)",
        )
    )


def _register_translator() -> None:
    from nada.guidance.translators import register_translator
    from nada.toy.translator import load_toy_translator

    register_translator(
        NAME, load_toy_translator, "toy faces redrawn in a toy style by a denoising prior on their part maps (packaged)"
    )


def _register_commands() -> None:
    from nada.frontends.cli import register_command
    from nada.toy import cli

    register_command(
        NAME,
        "toy-world tools: `nada toy judge IMAGES --target sketch` prints the strict toy judge's verdicts",
        cli.add_arguments,
        cli.run,
    )


# The toy judge's quality metrics in `nada eval` tables and on the sweep's contact sheet; the stroke columns are the
# paired fidelity (nada.toy.judge): adapted images, unadapted faces and the best global filter against the true renders.
EVAL_COLUMNS = (
    ("target_rate", "TOY-TGT", "{:.0%}"),
    ("content_kept", "TOY-KEPT", "{:.0%}"),
    ("diversity_ratio", "TOY-DIV", "{:.2f}"),
    ("frozen_target_rate", "TOY-TGT-BASE", "{:.0%}"),
    ("fidelity.adapted.stroke", "STROKE", "{:.4f}"),
    ("fidelity.unadapted.stroke", "STROKE-BASE", "{:.4f}"),
    ("fidelity.best_filter.stroke", "STROKE-FILTER", "{:.4f}"),
)
EVAL_SHEET = (("target_rate", "tgt"), ("content_kept", "kept"))
EVAL_NOTE = (
    "STROKE: distance of the adapted images to the true renders of the same faces in the target style (lower is "
    "closer); STROKE-BASE and STROKE-FILTER: the same for the unadapted faces and for the best global filter of them; "
    "the supervised oracle of docs/toy_quality.md is not run (110-200 s of fine-tuning per target)"
)


class EvaluatorFeatures(torch.nn.Module):
    """The toy evaluator's unnormalised embedding as a torchmetrics feature network: uint8 [N, 3, H, W] -> [N, E]."""

    def __init__(self, evaluator: torch.nn.Module) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.num_features = int(evaluator.config.embed_dim)

    @torch.no_grad()
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(img.float() / 127.5 - 1 if img.dtype == torch.uint8 else img).double()


def eval_judges(device: torch.device) -> "WorldJudges":
    """The toy world's networks for `nada eval`: toy CLIP token distance, the evaluator's features and quality."""
    from nada.profiles import WorldJudges
    from nada.toy.evaluator import load_evaluator

    distance, evaluator = load_toy_perceptual(device), load_evaluator(device=device)

    def quality(
        source: str, target: str, base: torch.Tensor, adapted: torch.Tensor, z: torch.Tensor, truncation: float
    ) -> dict[str, Any] | None:
        return eval_quality(evaluator, source, target, base.to(device), adapted.to(device), z, truncation)

    note = "not measured: the toy world reads its attributes with the toy evaluator (content kept)"
    return WorldJudges(
        distance,
        "toy CLIP token distance",
        EvaluatorFeatures(evaluator),
        "toy evaluator embedding",
        note,
        quality,
        EVAL_NOTE,
    )


def eval_quality(
    evaluator: torch.nn.Module,
    source: str,
    target: str,
    base: torch.Tensor,
    adapted: torch.Tensor,
    z: torch.Tensor,
    truncation: float,
) -> dict[str, Any] | None:
    """The toy judge's report on paired images [N, 3, 64, 64] in [-1, 1] of latents z [N, style_dim], with the paired
    fidelity when the target is a style (else `fidelity` None and `fidelity_note` says why); None for no toy target."""
    from nada.toy.judge import paired_fidelity
    from nada.toy.quality import infer_target, quality_from_images

    what = infer_target(source, target)  # None: the texts name no toy style or attribute
    if what is None:
        return None
    record = quality_from_images(evaluator, base, adapted, what).to_dict()
    if not what.is_style:
        record["fidelity_note"] = f"n/a: the attribute edit {what} has no true renders to compare with"
    elif truncation != 1:
        record["fidelity_note"] = f"n/a: at truncation {truncation} the images are not the latents' faces"
    else:
        record["fidelity"] = paired_fidelity(base, adapted, z, what.value, evaluator)
    return record


def judge(config: "AdaptConfig", G_train: "Generator", run_dir: Path) -> list[str]:
    """Judge a toy-world run with the independent evaluator; write run_dir/metrics.json; the summary lines."""
    from nada.generator.checkpoints import load_generator
    from nada.io import atomic_write
    from nada.toy.quality import run_metrics

    G_frozen = load_generator(config.generator, device=next(G_train.parameters()).device)
    report = run_metrics(G_frozen, G_train, config.source, config.target)
    if report is None:
        return [f"metrics:     none (the toy evaluator knows no style or attribute in {config.target!r})"]
    path = run_dir / "metrics.json"
    record = {
        **report.to_dict(),
        "judge": "nada.toy.evaluator (strict: none for filters and blends), not the guiding CLIP",
        "latents": "z = torch.randn(n, style_dim) from torch.Generator().manual_seed(0)",
    }
    atomic_write(path, lambda p: p.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    lines = [
        f"metrics:     {path} ({report.target}: {report.target_rate:.0%} of {report.n} adapted images, "
        f"{report.frozen_target_rate:.0%} before; content kept {report.content_kept:.0%}; "
        f"diversity {report.diversity_ratio:.2f})"
    ]
    if report.fidelity:  # stroke distance to the true renders, lower is closer (nada.toy.judge)
        fid = report.fidelity
        lines.append(
            f"fidelity:    stroke distance {fid['adapted']['stroke']:.4f} "
            f"(unadapted {fid['unadapted']['stroke']:.4f}, "
            f"best filter {fid['best_filter']['stroke']:.4f}: {fid['best_filter']['filter']})"
        )
    return lines
