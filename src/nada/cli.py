"""The `nada` command line: one subcommand per job, each a small function that calls the library."""

from __future__ import annotations

import argparse
import sys
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


# ---------------------------------------------------------------- entry point

# Subcommand name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "generate": ("render images from a generator checkpoint for a list of seeds", _generate_arguments, _run_generate),
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
