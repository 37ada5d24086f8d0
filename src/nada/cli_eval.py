"""Arguments and entry points of `nada eval` and `nada sweep` (registered in nada.cli.COMMANDS)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `nada eval`."""
    from nada.evaluate import EvalSettings

    d = EvalSettings()
    p.add_argument("models", nargs="+", metavar="MODEL", help="run folder, checkpoint or preset name (several with --compare)")
    p.add_argument("--compare", action="store_true", help="evaluate several models side by side on the same latents")
    p.add_argument("--out", default=None, help="folder for eval.json, eval.png, eval.txt (default: MODEL/eval for a run folder, else eval)")
    p.add_argument("--n", type=int, default=d.n, help="latents (seeds FIRST .. FIRST+N-1) (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=d.first_seed, help="first seed (default: %(default)s)")
    p.add_argument("--truncation", type=float, default=d.truncation, help="truncation psi (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images rendered at once (default: %(default)s)")
    p.add_argument("--judge", default=None, help="judge CLIP (default: one that guided none of the runs, if any)")
    p.add_argument("--reference", default=None, metavar="DIR", help="folder of real target-domain images: adds FID and KID")
    p.add_argument("--no-identity", dest="identity", action="store_false", help="skip the ArcFace identity similarity")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default=d.lpips_net, help="LPIPS backbone for diversity (default: %(default)s)")
    p.add_argument("--max-pairs", type=int, default=d.max_pairs, help="latent pairs for diversity (default: %(default)s)")
    p.add_argument("--base", default=None, help="base generator (default: what the models record)")
    p.add_argument("--source", default=None, help="source text (default: what the models record)")
    p.add_argument("--target", default=None, help="target text (default: what the models record)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing eval files in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_eval_command(args: argparse.Namespace) -> int:
    """`nada eval`: score, print the table, write the files."""
    from nada.errors import NadaError
    from nada.evaluate import EvalSettings, format_table, run_eval, write_outputs
    from nada.io import resolve_device

    if len(args.models) > 1 and not args.compare:
        raise NadaError(f"{len(args.models)} models given: pass --compare to evaluate them side by side")
    out = Path(args.out) if args.out else (Path(args.models[0]) / "eval" if Path(args.models[0]).is_dir() else Path("eval"))
    for name in ("eval.json", "eval.png", "eval.txt"):
        if (out / name).exists() and not args.force:  # refuse before any work
            raise NadaError(f"{out / name} already exists: choose another --out or pass --force to overwrite")
    settings = EvalSettings(n=args.n, first_seed=args.first_seed, truncation=args.truncation, batch_size=args.batch_size,
                            judge=args.judge, reference=args.reference, identity=args.identity, lpips_net=args.lpips_net,
                            max_pairs=args.max_pairs)
    result = run_eval(args.models, settings, base=args.base, source=args.source, target=args.target,
                      device=resolve_device(args.device), progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    print(format_table(result.report))
    for w in result.report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for path in write_outputs(result, out, force=args.force):
        print(f"wrote {path}")
    return 0


COMMANDS = {
    "eval": ("score adapted generators against their base: CLIP, identity, diversity, FID/KID, toy judge",
             eval_arguments, run_eval_command),
}
