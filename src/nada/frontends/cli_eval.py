"""Arguments and entry points of `nada eval` and `nada sweep` (registered in nada.frontends.cli.COMMANDS)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nada.errors import NadaError
from nada.evaluation.evaluate import EvalSettings, format_table, run_eval, write_outputs
from nada.evaluation.sweep import SweepOptions, read_sweep_file, run_sweep
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args
from nada.io import resolve_device

# EvalSettings field -> help (flag: --field-name; a True default becomes --no-field-name).
EVAL_HELP = {
    "n": "latents (seeds FIRST .. FIRST+N-1)",
    "first_seed": "first seed",
    "truncation": "truncation psi",
    "batch_size": "images rendered at once",
    "judge": "judge CLIP (none given: one that guided none of the runs, if any)",
    "reference": "folder of real target-domain images: adds FID and KID",
    "identity": "skip the ArcFace identity similarity",
    "lpips_net": "LPIPS backbone for diversity: vgg or alex",
    "max_pairs": "latent pairs for diversity",
}


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `nada eval`."""
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="run folder, checkpoint or preset name (several with --compare)"
    )
    p.add_argument("--compare", action="store_true", help="evaluate several models side by side on the same latents")
    p.add_argument(
        "--out",
        default=None,
        help="folder for eval.json, eval.png, eval.txt (default: MODEL/eval for a run folder, else eval)",
    )
    add_dataclass_arguments(p, EvalSettings, EVAL_HELP, choices={"lpips_net": ("vgg", "alex")})
    p.add_argument("--base", default=None, help="base generator (default: what the models record)")
    p.add_argument("--source", default=None, help="source text (default: what the models record)")
    p.add_argument("--target", default=None, help="target text (default: what the models record)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing eval files in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_eval_command(args: argparse.Namespace) -> int:
    """`nada eval`: score, print the table, write the files."""
    if len(args.models) > 1 and not args.compare:
        raise NadaError(f"{len(args.models)} models given: pass --compare to evaluate them side by side")
    out = (
        Path(args.out)
        if args.out
        else (Path(args.models[0]) / "eval" if Path(args.models[0]).is_dir() else Path("eval"))
    )
    for name in ("eval.json", "eval.png", "eval.txt"):
        if (out / name).exists() and not args.force:  # refuse before any work
            raise NadaError(f"{out / name} already exists: choose another --out or pass --force to overwrite")
    settings = dataclass_from_args(EvalSettings, args, list(EVAL_HELP))
    result = run_eval(
        args.models,
        settings,
        base=args.base,
        source=args.source,
        target=args.target,
        device=resolve_device(args.device),
        progress=not args.quiet,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(format_table(result.report))
    for w in result.report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for path in write_outputs(result, out, force=args.force):
        print(f"wrote {path}")
    return 0


COMMANDS = {
    "eval": (
        "score adapted generators against their base: CLIP, identity, diversity, FID/KID, the base profile's judges",
        eval_arguments,
        run_eval_command,
    ),
}


# SweepOptions field -> help; flags, types and defaults come from SweepOptions (nada.frontends.args).
SWEEP_HELP = {
    "address": "join this Ray cluster ('auto' or ray://HOST:10001) instead of starting one",
    "workers": "trials at once",
    "cpus_per_trial": "CPUs (and torch threads) per trial",
    "gpus_per_trial": "GPUs per trial",
    "retries": "times Ray reruns a trial whose worker died",
}
# What a None default of SweepOptions means, as the help says it.
SWEEP_SHOWN = {
    "address": "start Ray on this machine",
    "workers": "as many as the resources allow",
    "gpus_per_trial": "1 when there are GPUs, else 0",
}


def sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `nada sweep`."""
    p.add_argument("file", help="sweep file (.yaml or .json): targets or pairs, settings, vary, seeds, eval")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="sweep folder (trial run folders, summary); with --address, a path every node mounts",
    )
    add_dataclass_arguments(p, SweepOptions, SWEEP_HELP, keep_defaults=True, shown=SWEEP_SHOWN)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_sweep_command(args: argparse.Namespace) -> int:
    """`nada sweep`: run (or continue) the sweep, print the summary table."""
    if args.workers is not None and args.workers < 1 or args.cpus_per_trial < 1 or args.retries < 0:
        raise NadaError("--workers and --cpus-per-trial must be at least 1, --retries at least 0")
    options = dataclass_from_args(SweepOptions, args, list(SWEEP_HELP), progress=not args.quiet)
    records = run_sweep(read_sweep_file(args.file), args.out, options, log=lambda m: print(m, file=sys.stderr))
    print((Path(args.out) / "summary.md").read_text(encoding="utf-8"), end="")
    failed = [r["id"] for r in records if r["status"] != "done"]
    if failed:
        print(
            f"{len(failed)} trial(s) did not finish: {', '.join(failed)}; run the same command again to retry them",
            file=sys.stderr,
        )
    return 1 if failed else 0


COMMANDS["sweep"] = (
    "run many adaptations on Ray (a sweep file of targets, settings, seeds), each evaluated; needs nada[sweep]",
    sweep_arguments,
    run_sweep_command,
)
