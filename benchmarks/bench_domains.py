"""Throughput of many domains in one generator: K domain vectors in one mixed batch against K separate generators.

For K = 1, 4, 16 domains and B images per domain, both arms render the same K x B images (the same latents,
stored noise): "mixed" is the base generator with one domain vector per sample (`nada.generator.domains.render_domains`,
one batch of up to --batch images), "separate" is K generators (each a copy of the base with its domain folded
into its weights) rendering their B images in batches of at most --batch. Reported per K: images/s of each arm
(median of --repeats timed runs after one warm-up), their ratio, and memory: the bytes of weights held (K full
copies against one base plus K vectors) and, on CUDA, the peak allocated memory of each arm.

    OMP_NUM_THREADS=2 python benchmarks/bench_domains.py                     # toy generator, CPU
    python benchmarks/bench_domains.py --generator shape:1024 --device cuda --per-domain 8 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of a module."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def timed(fns: list[Callable[[], Any]], device: torch.device, repeats: int) -> list[float]:
    """Median seconds of each fn() over `repeats` runs after one warm-up, the fns taking turns (CUDA synchronised).

    Taking turns spreads changes of the machine's load over both arms alike (a shared CPU).
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak CUDA memory allocated while fn() runs (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def bench_k(G: Any, k: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One row: K domains, mixed batch against K separate generators."""
    from nada.generator.domains import fold_domain, render_domains

    gen = torch.Generator().manual_seed(k)
    vectors = (0.2 * torch.randn(k, G.domain_size, generator=gen)).to(device)
    z = torch.randn(args.per_domain, G.style_dim, generator=gen).to(device)
    separate = [fold_domain(G, v) for v in vectors]

    @torch.no_grad()
    def mixed() -> None:
        render_domains(G, vectors, z, 1.0, args.batch)

    @torch.no_grad()
    def apart() -> None:
        for Gk in separate:
            for chunk in z.split(args.batch):
                Gk(chunk, noise_mode="const")

    n = k * args.per_domain
    t_mixed, t_apart = timed([mixed, apart], device, args.repeats)
    row = {
        "K": k,
        "images": n,
        "mixed_img_s": round(n / t_mixed, 2),
        "separate_img_s": round(n / t_apart, 2),
        "speedup": round(t_apart / t_mixed, 2),
        "weights_mixed_MB": round((weight_bytes(G) + vectors.numel() * 4) / 2**20, 2),
        "weights_separate_MB": round(sum(weight_bytes(g) for g in separate) / 2**20, 2),
    }
    peaks = peak_memory(mixed, device), peak_memory(apart, device)
    if peaks[0] is not None:
        row.update(peak_mixed_MB=round(peaks[0] / 2**20, 1), peak_separate_MB=round(peaks[1] / 2**20, 1))
    return row


def base_generator(spec: str, device: torch.device) -> Any:
    """``shape:SIZE``: a config-f generator of that size (FFHQ's shapes), seeded random weights; else load_generator."""
    from nada.generator.checkpoints import load_generator
    from nada.generator.networks import Generator

    if not spec.startswith("shape:"):
        return load_generator(spec, device=device)
    torch.manual_seed(0)
    G = Generator(int(spec.split(":")[1])).to(device).eval()
    G.compute_mean_latent(n=1024)
    return G


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--generator",
        default="toy",
        help="base generator: registered name, file, random:SIZE[:SEED] or shape:SIZE "
        "(config-f shapes, random weights)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--ks", default="1,4,16", help="domain counts")
    p.add_argument("--per-domain", type=int, default=8, help="images per domain")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass in both arms")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layout", default="auto", help="generator layout (auto, cpu, grouped, activations)")
    args = p.parse_args()

    device = torch.device(args.device)
    G = base_generator(args.generator, device)
    G.layout = args.layout
    print(
        json.dumps(
            {
                "generator": args.generator,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "layout": args.layout,
                "per_domain": args.per_domain,
                "batch": args.batch,
                "domain_size": G.domain_size,
                "torch": torch.__version__,
            }
        )
    )
    for k in (int(x) for x in args.ks.split(",")):
        print(json.dumps(bench_k(G, k, args, device)), flush=True)


if __name__ == "__main__":
    main()
