"""How far two adaptation runs with the same seed differ, per precision, with and without ``deterministic``.

Builds one random generator and one random open_clip CLIP (no download), then runs `nada.adaptation.loop.adapt`
twice per (precision, deterministic) pair from the same weights and seed, and prints per pair: the
largest weight difference between the two runs, the share of weights that differ at all, the seconds
per iteration (median of both runs after the first iteration) and which ops warned that they have
no deterministic kernel. On the CPU every pair should show 0.

    python benchmarks/probe_determinism.py --device cuda --size 1024 --precisions fp32,tf32,bf16
    python benchmarks/probe_determinism.py --device cpu --size 32 --iterations 2 --templates plain  # the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapt import random_clip  # noqa: E402


def run_twice(G, clip, args: argparse.Namespace, precision: str, deterministic: bool) -> dict:
    """Two seeded runs of one setting: max |weight difference|, share of weights that differ, s/iteration, warnings."""
    from nada.adaptation.loop import adapt
    from nada.config import AdaptConfig

    results, seconds, notes = [], [], set()
    for _ in range(2):
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = AdaptConfig(
                source="photo",
                target="sketch",
                generator="random",
                clip=args.clip,
                layers=args.layers,
                iterations=args.iterations,
                batch_size=2,
                out_dir=out,
                n_sample_images=1,
                templates=args.templates,
                sample_every=0,
                save_every=0,
                device=args.device,
                tf32=precision == "tf32",
                bf16=precision == "bf16",
                deterministic=deterministic,
            )
            trained = adapt(cfg, progress=False, G_base=G, clip=[(clip, 1.0)])
            log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
        seconds += [r["seconds"] for r in (log[1:] or log)]
        messages = [str(w.message) for w in caught]
        notes |= {m.split(" does not")[0][:90] for m in messages if "deterministic implementation" in m}
        results.append({k: v.detach().float().cpu() for k, v in trained.state_dict().items()})
    diffs = [(results[0][k] - results[1][k]).abs() for k in results[0]]
    changed = sum(int((d > 0).sum()) for d in diffs) / sum(d.numel() for d in diffs)
    return {
        "precision": precision,
        "deterministic": deterministic,
        "max_weight_diff": max(float(d.max()) for d in diffs),
        "changed_share": changed,
        "s_per_it": statistics.median(seconds),
        "warnings": sorted(notes),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--size", type=int, default=1024, help="generator size (default: %(default)s)")
    p.add_argument("--clip", default="ViT-B/32", help="open_clip architecture by OpenAI name (default: %(default)s)")
    p.add_argument("--layers", default="auto:3", help="layer spec (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=4, help="iterations per run (default: %(default)s)")
    p.add_argument("--templates", default="imagenet", help="prompt templates: imagenet or plain (default: %(default)s)")
    p.add_argument("--precisions", default="fp32,bf16", help="among fp32, tf32, bf16 (default: %(default)s)")
    p.add_argument("--json", default=None, help="also append every result as one JSON line to this file")
    args = p.parse_args()

    from nada.generator.networks import Generator

    t0 = time.perf_counter()
    torch.manual_seed(0)
    G = Generator(args.size, 512, 8, channel_multiplier=2).to(args.device)
    G.compute_mean_latent(n=1024, seed=0)
    clip = random_clip(args.clip, args.device)
    print(
        f"{args.size} px, {args.clip}, {args.layers}, {args.iterations} iterations per run, two runs per row "
        f"(models built in {time.perf_counter() - t0:.1f} s)"
    )
    print(f"{'prec':5} {'determ.':8} {'max|dW|':>10} {'changed':>9} {'s/it':>7}  ops without a deterministic kernel")
    for precision in args.precisions.split(","):
        for deterministic in (False, True):
            r = run_twice(G, clip, args, precision, deterministic)
            print(
                f"{precision:5} {str(deterministic):8} {r['max_weight_diff']:10.2e} {r['changed_share']:9.2%} "
                f"{r['s_per_it']:7.3f}  {'; '.join(r['warnings']) or '-'}",
                flush=True,
            )
            if args.json:
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"size": args.size, "clip": args.clip, "layers": args.layers, **r}) + "\n")


if __name__ == "__main__":
    main()
