"""Can a photo filter fool the toy judge, and how close are adapted faces to the true renders? Two tables.

1. **Filter table.** The unadapted faces G_frozen(z) of n seeded latents, each filter of
   ``nada.toy.filters.SUITE`` applied to all of them (seen part and held-out part), the true renders of
   the same faces in every style, and any ``--adapted`` generators: the share the judge puts in each
   style and in "none". The goal: every filter <= 5 % in every non-photo style.
2. **Fidelity table** (``--target``): per latent the stroke distance (``nada.toy.judge``) and pixel L1
   to the true render of its face in the target style, for the unadapted faces, the best filter of the
   suite, the supervised oracle (``--oracle``: ``bench_toy_guidance.oracle_finetune``) and every
   ``--adapted`` generator, with the judge's target rate. "progress" places a row between the best
   filter (0) and the oracle (1).

    python benchmarks/bench_toy_judge.py                                     # filter table, packaged judge
    python benchmarks/bench_toy_judge.py --evaluator /tmp/old_evaluator.pt   # the same for other weights
    python benchmarks/bench_toy_judge.py --target sketch --oracle --adapted runs/sketch/generator.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evaluator", default=None, help="judge weights (default: the packaged ones)")
    p.add_argument("--generator", default="toy", help="base generator: 'toy' or a checkpoint path")
    p.add_argument("--adapted", default="", help="comma-separated adapted generators: checkpoints or preset names")
    p.add_argument(
        "--target", default="", help="comma-separated target styles for the fidelity table, e.g. sketch,watercolor"
    )
    p.add_argument(
        "--oracle", action="store_true", help="fine-tune the supervised oracle per target (about a minute each)"
    )
    p.add_argument("--oracle-steps", type=int, default=300)
    p.add_argument("--oracle-seed", type=int, default=1, help="seed of its training latents (1: the check)")
    p.add_argument(
        "--oracle-dir", default=None, help="keep the oracles here (oracle-TARGET.pt) and reuse the ones already there"
    )
    p.add_argument("--no-filters", action="store_true", help="skip the filter table")
    p.add_argument("--n", type=int, default=128, help="latents")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    return p.parse_args(argv)


def rates_row(label: str, rates: dict[str, float], styles: tuple[str, ...]) -> str:
    return f"{label:<52s} " + " ".join(f"{100 * rates[s]:>9.1f}" for s in styles)


def filter_section(judge, G, z: torch.Tensor, adapted: dict[str, torch.Tensor]) -> dict:
    """Print and return the filter table for unadapted faces, true renders and adapted generators."""
    from nada.toy import render as R
    from nada.toy.judge import filter_table, style_rates, true_renders

    styles = judge.classes["style"]
    with torch.no_grad():
        faces = G(z, noise_mode="const")
    table = filter_table(judge, faces)
    rows = {"unadapted faces": style_rates(judge, faces)}
    rows.update({f"true {s} renders": style_rates(judge, true_renders(z, s)) for s in R.STYLES})
    rows.update({f"adapted {k}": style_rates(judge, v) for k, v in adapted.items()})
    print(f"{'images (judge: % per style)':<52s} " + " ".join(f"{s[:9]:>9s}" for s in styles))
    for label, rates in rows.items():
        print(rates_row(label, rates, styles))
    for name, entry in table.items():
        print(rates_row(("[held out] " if entry["held_out"] else "") + name, entry["rates"], styles))
    worst = {s: max((e["rates"][s], n) for n, e in table.items()) for s in styles if s not in ("photo", "none")}
    print("worst filter per style: " + "; ".join(f"{s} {100 * r:.1f} % ({n})" for s, (r, n) in worst.items()))
    return {"rows": rows, "filters": table, "worst": {s: {"rate": r, "filter": n} for s, (r, n) in worst.items()}}


def oracle_for(
    G, z: torch.Tensor, target: str, steps: int, folder: str | None, seed: int = 1
) -> tuple[torch.nn.Module, str]:
    """The supervised oracle for ``target`` (bench_toy_guidance.oracle_finetune), from ``folder`` when kept there."""
    from nada.generator.checkpoints import load_generator, save_checkpoint

    name = f"oracle-{target.replace(' ', '-')}-{steps}" + (f"-s{seed}" if seed != 1 else "") + ".pt"
    path = Path(folder) / name if folder else None
    if path is not None and path.is_file():
        return load_generator(path).eval(), f"oracle ({steps} supervised steps, {path.name})"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_toy_guidance import oracle_finetune

    t0 = time.time()
    oracle = oracle_finetune(G, z, target, steps, 0.005, seed=seed)
    label = f"oracle ({steps} supervised steps, {time.time() - t0:.0f} s)"
    if path is not None:
        save_checkpoint(path, oracle, {"base": "toy", "oracle": target, "steps": steps, "seed": seed})
    return oracle, label


def fidelity_section(
    judge,
    G,
    z: torch.Tensor,
    target: str,
    adapted: dict,
    oracle_steps: int | None,
    oracle_dir: str | None = None,
    oracle_seed: int = 1,
) -> dict:
    """Print and return the fidelity table for one target style."""
    from nada.toy import filters as toy_filters
    from nada.toy.judge import best_filter, fidelity, style_rates, true_renders

    truth = true_renders(z, target)
    with torch.no_grad():
        faces = G(z, noise_mode="const")
    name, _ = best_filter(faces, truth)
    filtered = faces if name == "no filter" else toy_filters.apply_chain(faces, toy_filters.SUITE[name])
    rows = {"unadapted faces": faces, f"best filter ({name})": filtered}
    if oracle_steps:
        oracle, label = oracle_for(G, z, target, oracle_steps, oracle_dir, oracle_seed)
        with torch.no_grad():
            rows[label] = oracle(z, noise_mode="const")
    with torch.no_grad():
        rows.update({f"adapted {k}": g(z, noise_mode="const") for k, g in adapted.items()})
    rows["true renders (another texture seed)"] = true_renders(z, target, seed=11)
    out = {k: {**fidelity(v, truth), "target_rate": style_rates(judge, v)[target]} for k, v in rows.items()}
    base = out[f"best filter ({name})"]["stroke"]
    top = next((v["stroke"] for k, v in out.items() if k.startswith("oracle")), None)
    print(f"\nfidelity to the true {target} renders ({len(z)} latents): stroke distance, pixel L1, judge {target} rate")
    for k, v in out.items():
        progress = f"  progress {(base - v['stroke']) / (base - top):+.2f}" if top is not None and base != top else ""
        print(
            f"   {k:<58s} stroke {v['stroke']:.4f}  dark IoU {v['dark_iou']:.3f}  L1 {v['l1']:.3f}  "
            f"{target} {100 * v['target_rate']:5.1f} %{progress}"
        )
    return out


def load_adapted(spec: str) -> torch.nn.Module:
    """A generator from a checkpoint path or a packaged preset name such as toy-sketch."""
    from nada.generator.checkpoints import load_generator
    from nada.weights.presets import known_presets, load_preset

    if not Path(spec).exists() and spec in known_presets():
        return load_preset(spec, progress=False).eval()
    return load_generator(spec).eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from nada.generator.checkpoints import load_generator
    from nada.toy.evaluator import load_evaluator
    from nada.toy.quality import latents

    judge = load_evaluator(args.evaluator)
    G = load_generator(args.generator).eval()
    z = latents(G, args.n, seed=0)
    gens = {p: load_adapted(p) for p in filter(None, args.adapted.split(","))}
    with torch.no_grad():
        adapted_faces = {p: g(z, noise_mode="const") for p, g in gens.items()}
    results: dict = {"settings": vars(args)}
    if not args.no_filters:
        results["filter_table"] = filter_section(judge, G, z, adapted_faces)
    for target in filter(None, args.target.split(",")):
        steps = args.oracle_steps if args.oracle else None
        results.setdefault("fidelity", {})[target] = fidelity_section(
            judge, G, z, target, gens, steps, args.oracle_dir, args.oracle_seed
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
