"""Domain vector against full fine-tuning on the toy world, judged by the strict toy judge.

Each run adapts the toy generator with the recipe of a packaged toy preset (``nada.toy.plugin.TOY_RECIPE`` and
the preset's own changes), with ``--params weights`` (the paper: the layers' weights) or ``--params domain``
(only a domain vector), and an optional learning rate. Every saved checkpoint (steps 100, 200, 300) is judged
with ``nada.toy.quality.run_metrics`` (128 seeded latents, as ``nada adapt`` prints for toy runs): target rate,
content kept, diversity ratio, stroke distance. Each run appends one JSON line to ``--results``: the numbers
per checkpoint, the run's seconds (sum of the log's per-iteration times) and the size of its generator.pt.

    OMP_NUM_THREADS=1 python benchmarks/bench_toy_domains.py --preset toy-sketch --params domain --lr 0.02
    OMP_NUM_THREADS=1 python benchmarks/bench_toy_domains.py --preset toy-sketch --params weights
    python benchmarks/bench_toy_domains.py --blend toy-sketch=RUN_A/generator.pt,toy-watercolor=RUN_B/generator.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def judge(G_frozen: Any, G: Any, source: str, target: str) -> dict[str, float]:
    """The strict judge's numbers for one adapted generator (128 latents of seed 0)."""
    from nada.toy.quality import run_metrics

    r = run_metrics(G_frozen, G, source, target)
    assert r is not None, f"the toy judge knows no style in {target!r}"
    out = {
        "target_rate": r.target_rate,
        "frozen_target_rate": r.frozen_target_rate,
        "content_kept": r.content_kept,
        "diversity_ratio": r.diversity_ratio,
    }
    if r.fidelity:
        out["stroke"] = r.fidelity["adapted"]["stroke"]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Adapt one preset's recipe with the asked params and lr; judge every checkpoint."""
    from nada.adaptation.loop import RunPaths, adapt
    from nada.config import preset_config
    from nada.generator.checkpoints import load_generator

    config = preset_config(args.preset, args.out).replace(params=args.params, iterations=args.iterations)
    if args.lr is not None:
        config = config.replace(lr=args.lr)
    t0 = time.perf_counter()
    adapt(config, progress=False, force=True)
    wall = time.perf_counter() - t0
    paths = RunPaths(Path(config.out_dir))
    log = [json.loads(line) for line in paths.log.read_text().splitlines()]
    G_frozen = load_generator(config.generator)
    steps = {}
    for step in range(100, config.iterations, 100):
        steps[step] = judge(G_frozen, load_generator(paths.checkpoint(step)), config.source, config.target)
    steps[config.iterations] = judge(G_frozen, load_generator(paths.final), config.source, config.target)
    return {
        "preset": args.preset,
        "params": args.params,
        "lr": config.lr,
        "iterations": config.iterations,
        "train_seconds": round(sum(r["seconds"] for r in log), 1),
        "wall_seconds": round(wall, 1),
        "file_bytes": paths.final.stat().st_size,
        "steps": steps,
    }


def blend(args: argparse.Namespace) -> dict[str, Any]:
    """Judge the equal-weight blend of two or more adapted generators under each of their targets.

    Domain files of one base blend as vectors; full generators (or a mix) by interpolating weights.
    """
    from nada.generator.checkpoints import load_generator
    from nada.generator.domains import DomainRows, fold_domain
    from nada.weights.presets import get_preset

    named = dict(item.split("=", 1) for item in args.blend.split(","))
    spec = "+".join(f"{1 / len(named):g}*{path}" for path in named.values())
    rows = DomainRows(spec)
    G = fold_domain(rows.base_generator(), rows.vectors()[0]) if rows.shared else rows.generator(rows.entries[0])
    G_frozen = load_generator("toy")
    scores = {name: judge(G_frozen, G, "photo", get_preset(name).target) for name in named}
    return {"blend": named, "as": "vectors" if rows.shared else "weights", "scores": scores}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy-sketch", help="packaged toy preset whose recipe is used")
    p.add_argument("--params", choices=("weights", "domain"), default="domain")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--out", default=None, help="run folder (default: runs/bench_domains/PRESET-PARAMS-LR)")
    p.add_argument("--blend", default=None, help="NAME=DOMAIN_FILE,NAME=DOMAIN_FILE: judge their 50/50 blend instead")
    p.add_argument("--results", default="runs/bench_domains/results.jsonl", help="JSON lines file to append to")
    args = p.parse_args()
    if args.blend:
        record = blend(args)
    else:
        args.out = args.out or f"runs/bench_domains/{args.preset}-{args.params}-{args.lr}"
        record = run(args)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
