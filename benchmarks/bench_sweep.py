"""Wall time of `nada sweep` on this machine: the same toy-world trials with 1 and with 2 workers.

Each configuration runs the whole sweep from scratch in a fresh folder (Ray started locally and shut down
again, included in the time): N trials of the toy recipe (``nada.toy.plugin.TOY_RECIPE``) on the toy styles,
each `--iterations` long and evaluated by `nada eval` on `--eval-n` latents. Prints one line per
configuration and the sweep's summary table of the last one.

    python benchmarks/bench_sweep.py                              # 4 trials x 60 iterations, 1 and 2 workers
    python benchmarks/bench_sweep.py --trials 2 --iterations 20 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

STYLES = ("sketch", "watercolor", "pixel art", "pop art")


def sweep_data(trials: int, iterations: int, eval_n: int) -> dict:
    """A sweep of `trials` toy trials: the styles in turn, then further seeds."""
    from nada.toy.plugin import TOY_RECIPE

    settings = {**dict(TOY_RECIPE), "generator": "toy", "iterations": iterations, "sample_every": 0, "device": "cpu"}
    seeds = list(range((trials + len(STYLES) - 1) // len(STYLES)))
    targets = list(STYLES[: min(trials, len(STYLES))])
    return {"name": "bench", "settings": settings, "targets": targets, "seeds": seeds, "eval": {"n": eval_n}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--eval-n", type=int, default=32)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--out", default=None, help="folder for the sweeps (default: a temporary one)")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from nada.evaluation.sweep import SweepOptions, parse_sweep, run_sweep

    root = Path(args.out or tempfile.mkdtemp(prefix="nada-bench-sweep-"))
    data = sweep_data(args.trials, args.iterations, args.eval_n)
    n_trials = len(data["targets"]) * len(data["seeds"])
    for workers in (int(w) for w in args.workers.split(",")):
        out = root / f"workers{workers}"
        t0 = time.perf_counter()
        records = run_sweep(parse_sweep(data), out, SweepOptions(workers=workers, progress=False), log=lambda m: None)
        wall = time.perf_counter() - t0
        per_trial = sum(r.get("seconds", 0) for r in records)
        print(
            f"workers {workers}: {n_trials} trials x {args.iterations} iterations in {wall:.1f} s wall "
            f"(trials' own time {per_trial:.1f} s, {sum(r['status'] == 'done' for r in records)} done); load "
            f"average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print((out / "summary.md").read_text(), end="")


if __name__ == "__main__":
    main()
