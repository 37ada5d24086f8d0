"""The `nada` command line: one subcommand per job, each a small function that calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from nada.errors import NadaError

# ---------------------------------------------------------------- generate


def _run_generate(args: argparse.Namespace) -> int:
    from nada.checkpoints import load_generator
    from nada.generate import generate_images, save_outputs
    from nada.io import parse_seeds, resolve_device

    seeds = parse_seeds(args.seeds)
    device = resolve_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    images = generate_images(G, seeds, truncation_psi=args.truncation, batch_size=args.batch_size, device=device)
    written = save_outputs(images, seeds, out=args.out, out_dir=args.out_dir, force=args.force)
    for path in written:
        print(f"wrote {path}")
    return 0


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file (rosinality .pt, NVlabs .pkl, nada .pt) or a registered name")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. '0-15' or '1,5,9' (default: %(default)s)")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi towards the mean latent (default: %(default)s)")
    p.add_argument("--out", default=None, help="write one grid image here (default: grid.png unless --out-dir is given)")
    p.add_argument("--out-dir", default=None, help="write one image per seed into this folder instead of a grid")
    p.add_argument("--batch-size", type=int, default=4, help="images rendered at once (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


# ---------------------------------------------------------------- adapt

# AdaptConfig field -> (flag, help). Defaults and types come from AdaptConfig itself.
_ADAPT_FLAGS: dict[str, tuple[str, str]] = {
    "source": ("--source", "text describing what the generator makes now"),
    "target": ("--target", "text describing the new domain, e.g. 'sketch' (required unless --target-images)"),
    "target_images": ("--target-images", "folder of example images of the target style (image-guided adaptation)"),
    "generator": ("--generator", "base generator: checkpoint path or registered name"),
    "clip": ("--clip", "CLIP model or weighted ensemble, e.g. 'ViT-B/32,ViT-B/16:0.5'"),
    "templates": ("--templates", "prompt templates for text directions: imagenet, plain or toy"),
    "layers": ("--layers", "layers to train: all, last:K, auto:K[:ITERS], grad:K or NAME,NAME,..."),
    "select_every": ("--select-every", "re-select auto/grad layers every N iterations"),
    "auto_batch": ("--auto-batch", "latents used by the auto/grad layer selection"),
    "iterations": ("--iterations", "training iterations"),
    "batch_size": ("--batch-size", "latents per iteration"),
    "lr": ("--lr", "learning rate as in the official code (Adam uses lr * 4/5)"),
    "mixing_prob": ("--mixing", "style-mixing probability"),
    "noise_mode": ("--noise-mode", "random (fresh, shared by both generators), const or none"),
    "seed": ("--seed", "seed of every random number of the run"),
    "lambda_direction": ("--lambda-direction", "weight of the directional CLIP loss"),
    "lambda_global": ("--lambda-global", "weight of the global CLIP loss"),
    "lambda_manifold": ("--lambda-manifold", "weight of the manifold angle loss"),
    "lambda_texture": ("--lambda-texture", "weight of the texture (feature MSE) loss"),
    "lambda_patch": ("--lambda-patch", "weight of the patch directional loss"),
    "out_dir": ("--out", "run folder for samples, log, checkpoints"),
    "n_sample_images": ("--n-samples", "images per row of the sample grids (seeds 0..n-1)"),
    "sample_truncation": ("--sample-truncation", "truncation of the sample grids"),
    "sample_every": ("--sample-every", "iterations between sample grids (0: start and end only)"),
    "save_every": ("--save-every", "iterations between checkpoints and resume state (0: end only)"),
    "device": ("--device", "auto, cpu, cuda or cuda:N"),
}


def _adapt_arguments(p: argparse.ArgumentParser) -> None:
    from nada.config import AdaptConfig

    defaults = AdaptConfig()
    for field, (flag, help) in _ADAPT_FLAGS.items():
        default = getattr(defaults, field)
        kind = str if default is None else type(default)
        metavar = flag[2:].upper().replace("-", "_")
        p.add_argument(flag, dest=field, type=kind, default=default, metavar=metavar, help=f"{help} (default: %(default)s)")
    p.add_argument("--no-antialias", dest="antialias", action="store_false", default=defaults.antialias,
                   help="non-antialiased resize to CLIP's input, as the official code computed it")
    p.add_argument("--bf16", action="store_true", default=defaults.bf16, help="bfloat16 autocast on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_adapt(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from nada.adapt import RunPaths, adapt
    from nada.config import AdaptConfig

    config = AdaptConfig(**{f.name: getattr(args, f.name) for f in fields(AdaptConfig) if hasattr(args, f.name)})
    paths = RunPaths(Path(config.out_dir))
    try:
        adapt(config, progress=not args.quiet, resume=args.resume, force=args.force)
    except KeyboardInterrupt:
        if paths.state.exists():
            print(f"progress saved in {paths.root}: run the same command with --resume to continue", file=sys.stderr)
        raise
    samples = sorted((paths.root / "samples").glob("step_*.png"))
    print(f"sample grid: {samples[-1] if samples else '(none)'}")
    print(f"log:         {paths.log}")
    print(f"checkpoint:  {paths.final}")
    return 0


# ---------------------------------------------------------------- entry point

# Subcommand name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "generate": ("render images from a generator checkpoint for a list of seeds", _generate_arguments, _run_generate),
    "adapt": ("adapt a generator to a new domain described by text (StyleGAN-NADA)", _adapt_arguments, _run_adapt),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    from nada import __version__

    parser = argparse.ArgumentParser(prog="nada", description="Text-driven domain adaptation of StyleGAN2 generators.")
    parser.add_argument("--version", action="version", version=f"nada {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and return exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except NadaError as e:
        print(f"nada {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nada {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
