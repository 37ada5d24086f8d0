"""The `nada` command line: one subcommand per job, each a small function that calls the library."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nada import __version__
from nada.adaptation.loop import RunPaths, adapt
from nada.config import (
    CLI_FLAGS,
    REFERENCES,
    AdaptConfig,
    WebLimits,
    describe,
    resolve,
)
from nada.errors import NadaError, NadaWarning
from nada.frontends import cli_eval as _cli_eval
from nada.frontends import web
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, given
from nada.frontends.web import DEFAULT_HOST, DEFAULT_PORT, WebBackend
from nada.generator import (
    checkpoints,  # checkpoints.load_generator: looked up at call time (tests stand in for it)
    video,
)
from nada.generator.checkpoints import read_metadata
from nada.generator.domains import DomainRows, is_multi_spec, parse_domains
from nada.generator.generate import (
    GRID_COLUMNS,
    check_grid_size,
    check_outputs,
    generate_images,
    write_outputs,
)
from nada.generator.video import WALKS
from nada.guidance.translators import registered_translators
from nada.io import (
    atomic_save_image,
    check_writable_file,
    image_grid,
    parse_seeds,
    resolve_device,
    write_error,
)
from nada.limits import check_truncation
from nada.photos.align import ALIGN_MODES
from nada.photos.images import WRITE_SUFFIXES
from nada.photos.invert import InvertConfig, loss_kind_for_base
from nada.photos.stylize import stylize
from nada.plugins import load_plugins
from nada.profiles import profile_for
from nada.runtime import retain_freed_memory
from nada.weights import preflight, presets
from nada.weights.download import human_size, local_path
from nada.weights.presets import (
    comparison_rows,
    get_preset,
    known_presets,
    load_preset,
    share_mean_latent,
)
from nada.weights.registry import first_local_generator, is_local, registered_generators

if TYPE_CHECKING:
    import torch

    from nada.generator.networks import Generator

# OS errors that mean a write failed for lack of room or rights: the CLI reports them in one line.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)

# ---------------------------------------------------------------- generate


def _run_generate(args: argparse.Namespace) -> int:
    # Every refusal (seeds, numbers, outputs) comes before any loading or rendering.
    seeds = parse_seeds(args.seeds)
    check_truncation(args.truncation)
    if args.batch_size < 1:
        raise NadaError(f"batch size {args.batch_size} is invalid: use 1 or more")

    if args.preset is not None and is_multi_spec(args.preset):
        return _run_generate_rows(args, seeds)
    compare_out = _comparison_target(args) if args.compare else None
    grid, folder = check_outputs(seeds, args.out, args.out_dir, args.force) if compare_out is None else (None, None)
    _preflight_generate(args)
    device = resolve_device(args.device)
    G, base_source = _generate_source(args, device)
    if compare_out is not None:
        print(f"wrote {_save_comparison(compare_out, base_source, G, args, seeds, device)}")
        return 0
    render = {
        "truncation_psi": args.truncation,
        "batch_size": args.batch_size,
        "device": device,
        "precision": args.precision,
    }
    for path in write_outputs(G, seeds, grid, folder, **render):
        print(f"wrote {path}")
    return 0


def _run_generate_rows(args: argparse.Namespace, seeds: list[int]) -> int:
    """`nada generate --preset a,0.5*b+0.5*c`: one grid, a row per domain or blend (the base first with --compare)."""

    if args.out_dir is not None:
        raise NadaError(
            "--preset with several domains writes one grid (a row per domain): use --out instead of --out-dir"
        )
    if args.precision != "fp32":
        raise NadaError("--precision bf16 renders one generator: use fp32 with several domains in --preset")
    out = _comparison_target(args)
    names = {name for entry in parse_domains(args.preset) for _, name in entry if name in known_presets()}
    preflight.ensure([need for name in sorted(names) for need in preflight.preset_needs(name)])
    rows = DomainRows(args.preset, resolve_device(args.device))
    images = rows.render(seeds, args.truncation, args.batch_size, base_row=args.compare)
    check_grid_size(images.shape[0] * images.shape[1], images.shape[-1])
    labels = (["base"] if args.compare else []) + rows.labels
    mode = "one generator, mixed batches" if rows.shared else "one generator per row"
    print(f"rows:        {', '.join(labels)} ({mode})")
    print(f"wrote {atomic_save_image(image_grid(list(images)), out)}")
    return 0


def _generate_source(args: argparse.Namespace, device: "torch.device") -> tuple["Generator", str | None]:  # noqa: F821
    """The generator to render (from --preset or --checkpoint) and the source of its base (None if unknown)."""
    if args.preset is not None:
        return load_preset(args.preset, device=device), args.base or get_preset(args.preset).base
    G = checkpoints.load_generator(args.checkpoint, device=device)
    base = args.base
    if args.compare and base is None:
        try:
            base = read_metadata(args.checkpoint).get("base_model")
        except NadaError:
            base = None
    return G, base


def _preflight_generate(args: argparse.Namespace) -> None:
    """Fetch (or list, when they cannot be fetched) every weights file generate needs, before loading any."""
    if args.preset is not None:
        needs = preflight.preset_needs(args.preset)
        base = args.base or get_preset(args.preset).base
    else:
        needs = preflight.generator_needs(args.checkpoint)
        base = args.base or _recorded_base(args.checkpoint)
    preflight.ensure(needs + (preflight.generator_needs(base) if args.compare else []))


def _metadata(source: str) -> dict:
    """The metadata of a nada checkpoint file; {} for names and for files of other formats."""
    if not Path(source).is_file():
        return {}
    try:
        return read_metadata(source)
    except NadaError:
        return {}


def _recorded_base(checkpoint: str) -> str | None:
    """The base generator a nada checkpoint file records, None for other sources."""
    return _metadata(checkpoint).get("base_model")


def _comparison_target(args: argparse.Namespace) -> Path:
    """The grid file --compare writes; NadaError for --out-dir, a bad suffix or an existing file without --force."""
    if args.out_dir is not None:
        raise NadaError("--compare writes one grid (base row above adapted row): use --out instead of --out-dir")
    out = Path(args.out or "grid.png")
    if out.suffix.lower() not in WRITE_SUFFIXES:
        raise NadaError(f"cannot write image {out}: use a file name ending in {', '.join(WRITE_SUFFIXES)}")
    if out.exists() and not args.force:
        raise NadaError(f"{out} already exists: choose another output or pass --force to overwrite")
    check_writable_file(out, "--out")
    return out


def _save_comparison(
    out: Path,
    base_source: str | None,
    G: "Generator",
    args: argparse.Namespace,
    seeds: list[int],
    device: "torch.device",
) -> Path:
    """Render the adapted and the base generator for the same seeds; one grid, base row above adapted row."""
    if base_source is None:
        raise NadaError(
            f"--compare needs the base generator, and {args.checkpoint} does not record one: pass --base NAME_OR_PATH"
        )
    base = checkpoints.load_generator(base_source, device=device)
    if base.size != G.size:
        raise NadaError(
            f"the base {base_source} makes {base.size}px images but the adapted generator {G.size}px: "
            "pass the base it was adapted from with --base"
        )
    check_grid_size(2 * len(seeds), G.size)
    share_mean_latent(base, G)  # one truncation centre for both rows (adaptation never trains the mapping)
    render = {
        "truncation_psi": args.truncation,
        "batch_size": args.batch_size,
        "device": device,
        "precision": args.precision,
    }
    rows = comparison_rows(generate_images(base, seeds, **render), generate_images(G, seeds, **render), GRID_COLUMNS)
    return atomic_save_image(image_grid(rows), out)


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--checkpoint",
        help=(
            "checkpoint file (rosinality .pt, NVlabs .pkl, nada .pt), a registered name (nada presets generators) "
            "or random:SIZE for an untrained generator"
        ),
    )
    what.add_argument(
        "--preset",
        help="an adapted generator by preset name (see nada presets list); downloads "
        "released weights on first use; several names ('a,b,c') draw one row each, and blends such as "
        "'0.5*ffhq-sketch+0.5*ffhq-pixar' mix domain vectors (or interpolate full weights)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="one grid with the base generator's row above the adapted row, same seeds",
    )
    p.add_argument(
        "--base",
        default=None,
        help="base generator for --compare (default: the preset's base or the checkpoint's recorded base)",
    )
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. '0-15' or '1,5,9' (default: %(default)s)")
    p.add_argument(
        "--truncation", type=float, default=1.0, help="truncation psi towards the mean latent (default: %(default)s)"
    )
    p.add_argument(
        "--out", default=None, help="write one grid image here (default: grid.png unless --out-dir is given)"
    )
    p.add_argument("--out-dir", default=None, help="write one image per seed into this folder instead of a grid")
    p.add_argument("--batch-size", type=int, default=4, help="images rendered at once (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="weights' precision: bf16 renders with native bf16 weights (fast only on CPUs with bf16 "
        "units), fp32 is exact (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


# ---------------------------------------------------------------- video


def _video_arguments(p: argparse.ArgumentParser) -> None:

    p.add_argument(
        "--preset",
        required=True,
        help="domains as in `nada generate --preset`: names or files, 'a,b' or "
        "blends such as '0.5*ffhq-sketch+0.5*ffhq-pixar'",
    )
    p.add_argument(
        "--walk",
        choices=WALKS,
        default="latent",
        help="latent: through the seeds, one panel per domain; "
        "domain: base -> a -> b on the first seed; both: the two at once (default: %(default)s)",
    )
    p.add_argument("--seeds", default="0-3", help="keyframe seeds, the latents of nada generate (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames in the video (default: %(default)s)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second (default: %(default)s)")
    p.add_argument("--size", type=int, default=None, help="side of each panel in pixels (default: the generator's)")
    p.add_argument(
        "--truncation", type=float, default=1.0, help="truncation psi towards the mean latent (default: %(default)s)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="video file, .mp4 (needs PyAV: nada[video]) or .gif (default: video.mp4, or video.gif without PyAV)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="frames rendered at once (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing video file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_video(args: argparse.Namespace) -> int:

    seeds = parse_seeds(args.seeds)
    check_truncation(args.truncation)
    if args.batch_size < 1:
        raise NadaError(f"batch size {args.batch_size} is invalid: use 1 or more")
    out = video.check_output(args.out or video.default_output(), args.force)
    video.check_frames(args.frames, args.fps, args.size or 16, 1, gif=False)  # numbers first; the GIF size once known
    names = {name for entry in parse_domains(args.preset) for _, name in entry if name in known_presets()}
    preflight.ensure([need for name in sorted(names) for need in preflight.preset_needs(name)])
    device = resolve_device(args.device)
    rows = DomainRows(args.preset, device)
    panels = video.build_panels(rows, args.walk, args.frames, args.truncation)
    size = args.size or rows.base_generator().size
    video.check_frames(args.frames, args.fps, size, len(panels), gif=out.suffix.lower() == ".gif")
    z = video.frame_latents(args.walk, seeds, args.frames, rows.base_generator().style_dim).to(device)
    frames = video.render_frames(panels, z, size, args.batch_size, progress=not args.quiet)
    path, count = video.write_video(frames, out, args.fps)
    print(f"panels:      {' | '.join(p.label for p in panels)}")
    print(f"wrote {path} ({count} frames, {args.fps:g} fps)")
    return 0


# ---------------------------------------------------------------- adapt

# AdaptConfig field -> help; flags, types and defaults come from AdaptConfig (nada.frontends.args).
ADAPT_HELP: dict[str, str] = {
    "source": "text describing what the generator makes now",
    "target": "text describing the new domain, e.g. 'sketch' (required unless --target-images)",
    "target_images": "folder of example images of the target style (image-guided adaptation)",
    "target_images_batch": "generated source images whose mean embedding the image direction starts from",
    "generator": "base generator: checkpoint path or registered name (nada presets generators)",
    "clip": "CLIP model or weighted ensemble, e.g. 'ViT-B/32,ViT-B/16:0.5'; auto: the base profile's, else ViT-B/32",
    "templates": "prompt set for text directions: imagenet, plain, a plugin's set, or auto (the set registered "
    "for the guiding CLIPs, else imagenet)",
    "antialias": "non-antialiased resize to CLIP's input, as the official code computed it",
    "first_step": "directional loss at equal images: limit (first-order limit) or shift (official)",
    "lambda_direction": "weight of the directional CLIP loss",
    "lambda_global": "weight of the global CLIP loss",
    "lambda_manifold": "weight of the manifold angle loss",
    "lambda_texture": "weight of the texture (feature MSE) loss",
    "lambda_patch": "weight of the patch directional loss",
    "lambda_structure": "weight of the structure loss (edge maps kept from the frozen image)",
    "lambda_consistency": "weight of the cross-sample consistency loss (CLIP similarities between the batch's "
    "images kept)",
    "translator": "a registered image translator whose drawings of the frozen images are the translation "
    "term's targets (nada presets translators)",
    "lambda_translate": "weight of the translation term (MSE to the translator's drawings; needs --translator)",
    "keep": "attributes the adapted images keep, read by CLIP: 'a smiling face|a neutral face; a face with "
    "glasses|a face without glasses', or registered attribute groups by name (NAME or NAME:a,b)",
    "lambda_keep": "weight of the keep loss (used only with --keep)",
    "clip_views": "random crops per image pair for the CLIP terms (0: the plain images)",
    "clip_noise": "std of Gaussian noise added to the CLIP terms' images, the same for both images of a pair",
    "params": "what trains: weights (the chosen layers) or domain (only a vector of style offsets, kilobytes)",
    "layers": "layers to train: all, last:K, auto:K[:ITERS], grad:K or NAME,NAME,...",
    "select_every": "re-select auto/grad layers every N iterations",
    "auto_batch": "latents used by the auto/grad layer selection",
    "select_chunk": "auto:K renders this many selection latents at a time, same gradients (0: all); less memory",
    "select_score": "how auto:K ranks W+ rows: mean_abs (official) or l2",
    "select_noise": "noise of the selection's renders: random (fresh, official) or const (stored)",
    "layer_sets": "nada (all: convs + to_rgbs; rows -> layers they drive) or official (all: constant + convs; "
    "official mapping)",
    "iterations": "training iterations",
    "batch_size": "latents per iteration",
    "lr": "learning rate as in the official code (Adam uses lr * 4/5)",
    "beta1": "Adam beta1 as in the official code (Adam uses beta1 ** 4/5)",
    "beta2": "Adam beta2 as in the official code (Adam uses beta2 ** 4/5)",
    "mixing_prob": "style-mixing probability",
    "noise_mode": "random (fresh, shared by both generators), independent (official), const or none",
    "seed": "seed of every random number of the run",
    "out_dir": "run folder for samples, log, checkpoints",
    "n_sample_images": "images per row of the sample grids (seeds 0..n-1)",
    "sample_truncation": "truncation of the sample grids",
    "sample_every": "iterations between sample grids (0: start and end only)",
    "save_every": "iterations between checkpoints and resume state (0: end only)",
    "log_every": "iterations between reads of the losses from the device; the log keeps all",
    "device": "auto, cpu, cuda or cuda:N",
    "bf16": "bfloat16 autocast on CUDA",
    "tf32": "TF32 matmuls and convolutions on CUDA",
    "deterministic": "deterministic CUDA kernels: one seed, the same weights (slower in fp32)",
}


def _adapt_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, AdaptConfig, ADAPT_HELP, CLI_FLAGS, defaults_note=", unless a profile or preset sets it")
    p.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="start from a preset's recipe (base, texts and options; nada presets list); flags given win",
    )
    p.add_argument(
        "--reference",
        choices=sorted(REFERENCES),
        default=None,
        help="start from a reference mode's settings (official: see docs/adapt.md); flags given win",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print every resolved setting and where it came from (default, profile, preset, reference, "
        "user), then stop",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def adapt_settings(args: argparse.Namespace) -> tuple[AdaptConfig, dict[str, str]]:
    """The resolved AdaptConfig of parsed ``nada adapt`` arguments and each setting's source (nada.config.resolve)."""
    user = given(args, list(ADAPT_HELP))
    return resolve(preset=getattr(args, "preset", None), user=user, reference=getattr(args, "reference", None))


def adapt_config(args: argparse.Namespace) -> AdaptConfig:
    """The resolved AdaptConfig of parsed ``nada adapt`` arguments."""
    return adapt_settings(args)[0]


def _run_adapt(args: argparse.Namespace) -> int:
    config, sources = adapt_settings(args)
    if args.print_config:
        print(describe(config, sources))
        return 0
    config.validate()  # settings first: a missing base or text is named before any weights are looked for
    paths = RunPaths(Path(config.out_dir))
    preflight.ensure(preflight.adapt_needs(config))
    try:
        G_train = adapt(config, progress=not args.quiet, resume=args.resume, force=args.force)
    except KeyboardInterrupt:
        if paths.state.exists():
            print(f"progress saved in {paths.root}: run the same command with --resume to continue", file=sys.stderr)
        raise
    samples = sorted((paths.root / "samples").glob("step_*.png"))
    print(f"sample grid: {samples[-1] if samples else '(none)'}")
    print(f"log:         {paths.log}")
    print(f"checkpoint:  {paths.final}")
    profile = profile_for(config.generator)
    if profile is not None and profile.judge is not None:  # the base's own judge scores the result
        for line in profile.judge(config, G_train, paths.root):
            print(line)
    return 0


# ---------------------------------------------------------------- presets


def _presets_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="table of presets: name, base, domain, whether it is on this machine")
    sub.add_parser("generators", help="table of registered base generators (names for --checkpoint and --generator)")
    sub.add_parser("translators", help="table of registered image translators (names for --translator)")
    show = sub.add_parser("show", help="details of one preset, with the `nada adapt` command that trains it")
    show.add_argument("name", help="preset name")
    pack = sub.add_parser(
        "pack", help="write the compact preset file of an adapted checkpoint (float16 differences to its base)"
    )
    pack.add_argument("name", help="preset name; the file goes where the preset table expects it unless --out is given")
    pack.add_argument("checkpoint", help="adapted checkpoint, e.g. runs/sketch/generator.pt from nada adapt")
    pack.add_argument("--out", default=None, help="output file (default: the preset's packaged or cache location)")
    pack.add_argument(
        "--base", default=None, help="registered base generator (default: the checkpoint's recorded base)"
    )
    pack.add_argument("--force", action="store_true", help="overwrite an existing preset file")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _run_presets(args: argparse.Namespace) -> int:
    if args.presets_command == "list":
        rows = []
        for name in presets.known_presets():
            p = presets.get_preset(name)
            rows.append((p.name, p.base, p.domain, presets.preset_status(p).note))
        print(_table(("NAME", "BASE", "DOMAIN (SOURCE -> TARGET)", "LOCAL"), rows))
    elif args.presets_command == "generators":

        def local(g: "RegisteredGenerator") -> str:  # noqa: F821
            if is_local(g.name):
                return "yes"
            return "no (not packaged here)" if g.weights.kind == "package" else "no (downloads on first use)"

        rows = [(g.name, str(g.resolution), local(g), g.description) for g in registered_generators()]
        print(_table(("NAME", "SIZE", "LOCAL", "DESCRIPTION"), rows))
    elif args.presets_command == "translators":
        print(_table(("NAME", "DESCRIPTION"), [(t.name, t.description) for t in registered_translators()]))
    elif args.presets_command == "show":
        _show_preset(presets.get_preset(args.name))
    else:
        _pack_preset(args)
    return 0


def _show_preset(p: "Preset") -> None:  # noqa: F821

    status = presets.preset_status(p)
    print(f"preset:      {p.name} ({p.description})")
    print(f"base:        {p.base}")
    print(f"domain:      {p.domain}")
    if p.weights is None:
        print("weights:     none released: train on demand")
    elif p.weights.kind == "package":
        print(f"weights:     packaged with nada as {p.weights.address}")
    else:
        print(f"weights:     {p.weights.address}")
        print(f"sha256:      {p.weights.sha256 or 'not published: the file is not verified'}")
    print(f"local:       {status.note}" + (f" at {status.path}" if status.path else ""))
    if status.path is not None and presets.is_compact(status.path):
        info = presets.packed_info(status.path)
        trained = {k: info["metadata"][k] for k in ("iterations", "layers", "clip") if k in info["metadata"]}
        translator = (info["metadata"].get("adapt_config") or {}).get("translator")
        trained.update({"translator": translator} if translator else {})
        print(
            f"packed:      {info['tensors']} changed tensors, {info['parameters']:,} parameters; "
            f"trained with {trained or 'unknown settings'}"
        )
    print(f"recipe:      {', '.join(f'{k}={v}' for k, v in p.options) or '(defaults)'}")
    print(f"train with:  {presets.adapt_command(p)}")
    print(f"then:        nada generate --preset {p.name} --seeds 0-7 --compare")


def _pack_preset(args: argparse.Namespace) -> None:
    p = presets.get_preset(args.name)
    if args.out is not None:
        out = Path(args.out)
    elif p.weights is not None and p.weights.kind == "package":
        out = local_path(p.weights, p.name)
    else:
        out = presets.trained_dir(p.name) / "generator.pt"
    written = presets.pack_preset(args.checkpoint, out, base=args.base or None, name=p.name, overwrite=args.force)
    info = presets.packed_info(written)
    full = Path(args.checkpoint).stat().st_size
    print(
        f"wrote {written}: {info['tensors']} changed tensors ({info['parameters']:,} parameters), "
        f"{human_size(info['bytes'])} instead of {human_size(full)} for the full checkpoint"
    )


# ---------------------------------------------------------------- stylize


# InvertConfig field -> help (its flag: INVERT_FLAGS or --field-name).
INVERT_HELP: dict[str, str] = {
    "steps": "inversion steps",
    "lr": "inversion learning rate",
    "lambda_mse": "weight of the pixel MSE loss",
    "lambda_lpips": "weight of the perceptual loss: LPIPS, or the base profile's own perceptual distance",
    "lambda_id": "weight of the ArcFace identity loss (bases whose profile uses it)",
    "lpips_net": "LPIPS backbone: vgg or alex",
}
INVERT_FLAGS = {"lambda_mse": "--mse", "lambda_lpips": "--lpips", "lambda_id": "--id"}


def _stylize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image", action="append", required=True, metavar="PATH", help="photo to stylize; repeat for several"
    )
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help="style preset (see `nada presets list`); repeatable",
    )
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="PATH", help="adapted generator checkpoint; repeatable"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: DIR/<image>/{aligned,reconstruction,<style>}.png, DIR/grid.png",
    )
    p.add_argument(
        "--base", default=None, help="base generator the styles were adapted from (default: what their metadata says)"
    )
    p.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default="auto",
        help="ffhq: detect the face and align it like FFHQ (needs nada[faces]); none: image is already aligned; "
        "auto: what the base's profile says, else ffhq (default: %(default)s)",
    )
    add_dataclass_arguments(p, InvertConfig, INVERT_HELP, INVERT_FLAGS, choices={"lpips_net": ("vgg", "alex")})
    p.add_argument(
        "--allow-missing-losses",
        action="store_true",
        help="run without losses whose weights are missing (they are named)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_stylize(args: argparse.Namespace) -> int:
    config = dataclass_from_args(InvertConfig, args, list(INVERT_HELP))
    _preflight_stylize(args, config)
    report = stylize(
        args.image,
        args.out,
        presets=args.preset,
        checkpoints=args.checkpoint,
        base=args.base,
        align=args.align,
        config=config,
        device=resolve_device(args.device),
        allow_missing_losses=args.allow_missing_losses,
        force=args.force,
        progress=not args.quiet,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    for r in report.results:
        quality = f"MSE {r.mse:.4f}"
        if r.perceptual is not None:
            quality += f", {report.perceptual_name} {r.perceptual:.4f}"
        print(f"{r.source}: reconstruction {quality} -> {Path(args.out) / r.folder}")
    print(f"grid: {Path(args.out) / 'grid.png'} ({len(report.written)} files written)")
    return 0


def _preflight_stylize(args: argparse.Namespace, config: "InvertConfig") -> None:  # noqa: F821
    """Fetch (or list) the styles', the base generator's and the losses' weights before any work."""
    needs = [n for name in args.preset for n in preflight.preset_needs(name)]
    needs += [n for ckpt in args.checkpoint for n in preflight.generator_needs(ckpt)]
    bases = {get_preset(p).base for p in args.preset} | {_recorded_base(c) for c in args.checkpoint}
    bases = {args.base} if args.base else bases
    base = next(iter(bases)) if len(bases) == 1 else None  # several or unknown bases: stylize explains
    if base:
        needs += preflight.generator_needs(base)
        kind = loss_kind_for_base(base)
        needs += preflight.loss_needs(config, kind, optional=args.allow_missing_losses)
    preflight.ensure(needs)


# ---------------------------------------------------------------- web


# WebLimits field -> help of its flag.
WEB_LIMITS_HELP = {
    "max_iterations": "most iterations of one Adapt job",
    "max_batch": "most latents per Adapt iteration",
    "max_views": "most CLIP views per image pair in Adapt",
    "max_seeds": "most images per Generate click",
    "max_steps": "most inversion steps per Stylize click",
    "max_upload_pixels": "most pixels (width x height) of an uploaded photo",
    "max_upload_mb": "most megabytes of one uploaded file",
}


def _web_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; 0.0.0.0 opens the demo to the network (default: %(default)s)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    p.add_argument(
        "--generator",
        default=None,
        help="base generator: checkpoint path or registered name (default: the first packaged one)",
    )
    p.add_argument(
        "--clip",
        default=AdaptConfig.clip,
        help="CLIP model or ensemble for adaptation; auto: the base profile's (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH",
        help="adapted checkpoint to offer as a style; repeatable",
    )
    p.add_argument(
        "--checkpoints",
        default=None,
        metavar="DIR",
        help="folder whose checkpoint files visitors may name in the page "
        "(default: none, only presets and registered names)",
    )
    p.add_argument("--work-dir", default=None, help="folder for runs and downloads (default: a new temporary folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_dataclass_arguments(p, WebLimits, WEB_LIMITS_HELP)
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="weights' precision of the Generate tab (default: %(default)s)",
    )


def _run_web(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401  (checked here: nada.frontends.web imports it only when the page is built)
    except ImportError:
        raise NadaError("the web demo needs gradio: pip install 'nada[web]'") from None

    limits = dataclass_from_args(WebLimits, args, list(WEB_LIMITS_HELP))
    backend = WebBackend(
        generator=args.generator or first_local_generator(),
        clip=args.clip,
        checkpoints=args.checkpoint,
        device=args.device,
        work_dir=args.work_dir,
        checkpoints_dir=args.checkpoints,
        limits=limits,
        precision=args.precision,
    )
    print(f"nada web: runs and downloads go to {backend.work_dir}", file=sys.stderr)
    web.serve(web.build_app(backend), host=args.host, port=args.port, block=True)  # looked up at call time
    return 0


# ---------------------------------------------------------------- entry point

# Subcommand name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "generate": ("render images from a generator checkpoint for a list of seeds", _generate_arguments, _run_generate),
    "adapt": ("adapt a generator to a new domain described by text (StyleGAN-NADA)", _adapt_arguments, _run_adapt),
    "video": (
        "videos of latent walks and domain walks as side-by-side panels (base | domains), MP4 or GIF",
        _video_arguments,
        _run_video,
    ),
    "presets": (
        "list, inspect and pack presets (named adapted generators) and the registered base generators",
        _presets_arguments,
        _run_presets,
    ),
    "stylize": (
        "stylize photos: align, invert into the base generator, render with adapted generators",
        _stylize_arguments,
        _run_stylize,
    ),
    "web": (
        "start the web demo (Generate, Adapt, Stylize tabs) in the browser; needs nada[web]",
        _web_arguments,
        _run_web,
    ),
}
# `nada eval` and `nada sweep` live in nada.frontends.cli_eval.
COMMANDS.update(_cli_eval.COMMANDS)


def register_command(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add a subcommand `nada NAME` (a plugin's tools); NadaError if a command of that name exists."""
    if name in COMMANDS and COMMANDS[name] != (help, add_arguments, run):
        raise NadaError(f"a nada command named {name!r} already exists: register the plugin's tools under another name")
    COMMANDS[name] = (help, add_arguments, run)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand (the plugins' included)."""
    load_plugins()
    parser = argparse.ArgumentParser(prog="nada", description="Text-driven domain adaptation of StyleGAN2 generators.")
    parser.add_argument("--version", action="version", version=f"nada {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help, description=help))
    return parser


def _one_line_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints nada's own warnings as one line (others as Python does)."""
    default = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: object, **kw: object) -> None:
        if issubclass(category, NadaWarning):
            print(f"nada {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *rest, **kw)

    return show


def _write_failure(e: OSError | RuntimeError) -> NadaError | None:
    """The one-line error for a write that failed outside nada's atomic writes (a full disk mid-run), or None."""
    if isinstance(e, OSError) and e.errno not in WRITE_ERRNOS:
        return None
    return write_error(getattr(e, "filename", None) or "a file", e)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and return exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _, _, run = COMMANDS[args.command]
    retain_freed_memory()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return run(args)
    except NadaError as e:
        print(f"nada {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`nada presets list | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, RuntimeError) as e:
        error = _write_failure(e)
        if error is None:
            raise
        print(f"nada {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nada {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # The importable module, not this __main__ copy: plugins register their commands there.
    from nada.frontends.cli import main as _main

    sys.exit(_main())
