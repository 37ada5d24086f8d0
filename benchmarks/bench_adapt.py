"""Seconds per adaptation iteration and peak memory, for generator sizes, CLIP ensembles and layer strategies.

Random weights everywhere (no download): ``Generator(size, 512, 8, 2)`` and open_clip architectures
built with ``pretrained=None``. Each configuration runs in its own subprocess so that its peak memory
is its own (CPU: peak resident set size of that process; CUDA: torch.cuda.max_memory_allocated).
The time per iteration is the median of the loop's own per-iteration times (log.jsonl "seconds"),
without the first iteration (warm-up); sample grids and checkpoints are not part of it.

    python benchmarks/bench_adapt.py --sizes 256 --clips ViT-B/32 --layers all,auto:3 --iterations 3
    python benchmarks/bench_adapt.py --device cuda --iterations 10
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# OpenAI name -> open_clip architecture (the same mapping nada.clip uses).
ARCHS = {"ViT-B/32": "ViT-B-32-quickgelu", "ViT-B/16": "ViT-B-16-quickgelu"}


def random_clip(name: str, device: str):
    """A ClipModel around an open_clip architecture with random weights."""
    import open_clip

    from nada.clip import ClipModel, ClipPreprocess

    model = open_clip.create_model(ARCHS[name], pretrained=None, device=device)
    pp = ClipPreprocess(size=(224, 224))
    return ClipModel(model, open_clip.get_tokenizer(ARCHS[name]), pp, name).to(device)


def run_one(size: int, clips: str, layers: str, iterations: int, device: str, threads: int) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch

    from nada.adapt import adapt
    from nada.config import AdaptConfig
    from nada.networks import Generator

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    G = Generator(size, 512, 8, channel_multiplier=2).to(device)
    G.compute_mean_latent(n=1024, seed=0)
    ensemble = [(random_clip(n, device), 1.0) for n in clips.split("+")]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        cfg = AdaptConfig(source="photo", target="sketch", generator=f"random-{size}", clip=clips, layers=layers,
                          iterations=iterations, batch_size=2, out_dir=out, n_sample_images=1, sample_every=0,
                          save_every=0, device=device)
        t0 = time.perf_counter()
        adapt(cfg, progress=False, G_base=G, clip=ensemble)
        total = time.perf_counter() - t0
        seconds = [json.loads(line)["seconds"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    steady = seconds[1:] or seconds
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"size": size, "clip": clips, "layers": layers, "device": device, "iterations": iterations,
            "s_per_it": statistics.median(steady), "first_it_s": seconds[0], "total_s": total, "peak_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,1024", help="generator sizes (default: %(default)s)")
    p.add_argument("--clips", default="ViT-B/32,ViT-B/32+ViT-B/16", help="CLIP sets, '+' joins an ensemble (default: %(default)s)")
    p.add_argument("--layers", default="auto:3,all", help="layer specs (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=3, help="iterations per configuration (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = p.parse_args()

    if args.one:
        size, clips, layers, device = args.one.split("|")
        print(json.dumps(run_one(int(size), clips, layers, args.iterations, device, args.threads)))
        return

    if args.device:
        devices = [args.device]
    else:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{'device':6} {'size':>5} {'clip':20} {'layers':8} {'s/it':>8} {'first':>8} {'peak MB':>9}")
    for device in devices:
        for size in (int(s) for s in args.sizes.split(",")):
            for clips in args.clips.split(","):
                for layers in args.layers.split(","):
                    one = "|".join([str(size), clips, layers, device])
                    cmd = [sys.executable, __file__, "--one", one, "--iterations", str(args.iterations), "--threads", str(args.threads)]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode != 0:
                        print(f"{device:6} {size:>5} {clips:20} {layers:8} failed: {res.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(res.stdout.strip().splitlines()[-1])
                    print(f"{device:6} {size:>5} {clips:20} {layers:8} {r['s_per_it']:8.3f} {r['first_it_s']:8.3f} {r['peak_mb']:9.0f}", flush=True)


if __name__ == "__main__":
    main()
