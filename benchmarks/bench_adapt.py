"""Seconds per adaptation iteration, 300 iterations end to end, and peak memory, per size, CLIP set, layers, precision.

Random weights everywhere (no download): ``Generator(size, 512, 8, 2)`` and open_clip architectures
built with ``pretrained=None``. Each configuration runs in its own subprocess so that its peak memory
is its own. Columns:

- ``s/it``: median of the loop's per-iteration times (log.jsonl "seconds") without the first iteration.
- ``first``: the first iteration (kernel selection, allocator warm-up, the first layer selection).
- ``300 it e2e``: what ``nada adapt --iterations 300`` with the default ``sample_every`` 50 and
  ``save_every`` 100 takes, setup included: the measured run (model building, guides, the first
  iteration, its two sample grids and final save) plus (300 - N) median iterations plus the five
  sample grids and two checkpoint-and-state saves that the longer run writes in addition, each timed
  in the same process right after the run.
- ``peak MB``: one way per device, over the whole process: CUDA ``torch.cuda.max_memory_allocated``;
  CPU the peak resident set size.
- ``prec``: fp32 is IEEE float32 on CUDA (matmuls and cuDNN convolutions); tf32 switches both to TF32.

    python benchmarks/bench_adapt.py --sizes 256 --clips ViT-B/32 --layers all,auto:3 --iterations 3
    python benchmarks/bench_adapt.py --device cuda --sizes 1024 --iterations 30 --precisions fp32,tf32
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

# OpenAI name -> open_clip architecture (the same mapping nada.guidance.clip uses).
ARCHS = {"ViT-B/32": "ViT-B-32-quickgelu", "ViT-B/16": "ViT-B-16-quickgelu"}
E2E_ITERATIONS, SAMPLE_EVERY, SAVE_EVERY = 300, 50, 100


def random_clip(name: str, device: str):
    """A ClipModel around an open_clip architecture with random weights."""
    import open_clip

    from nada.guidance.clip import ClipModel, ClipPreprocess

    model = open_clip.create_model(ARCHS[name], pretrained=None, device=device)
    pp = ClipPreprocess(size=(224, 224))
    return ClipModel(model, open_clip.get_tokenizer(ARCHS[name]), pp, name).to(device)


def extra_outputs(iterations: int) -> tuple[int, int]:
    """(grids, saves) that 300 iterations with the default intervals write beyond N iterations without them."""
    grids = len(range(SAMPLE_EVERY, E2E_ITERATIONS, SAMPLE_EVERY))  # in-loop grids; start and end grids both runs write
    saves = len(range(SAVE_EVERY, E2E_ITERATIONS, SAVE_EVERY))
    return grids, saves


def time_outputs(G, device: str, out: Path) -> tuple[float, float]:
    """Seconds for one sample grid (both generators, 8 seeds) and one checkpoint-plus-Adam-state save of G."""
    import torch

    from nada.adaptation.loop import render_samples
    from nada.generator.checkpoints import save_checkpoint
    from nada.config import AdaptConfig
    from nada.io import atomic_save_image, atomic_torch_save, image_grid

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    d = AdaptConfig()
    sync()
    t0 = time.perf_counter()
    rows = [render_samples(G, d.n_sample_images, d.sample_truncation, d.batch_size) for _ in range(2)]
    atomic_save_image(image_grid(rows), out / "grid.png")
    t_grid = time.perf_counter() - t0
    params = [p for n, p in G.named_parameters() if not n.startswith("style.")]
    t0 = time.perf_counter()
    save_checkpoint(out / "ckpt.pt", G, {"base_model": "bench"}, overwrite=True)
    adam_like = {"exp_avg": [p.detach().clone() for p in params], "exp_avg_sq": [p.detach().clone() for p in params]}
    atomic_torch_save(adam_like, out / "state.pt")
    return t_grid, time.perf_counter() - t0


def run_one(size: int, clips: str, layers: str, iterations: int, device: str, threads: int, precision: str,
            log_every: int) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch

    from nada.adaptation.loop import adapt
    from nada.config import AdaptConfig
    from nada.generator.networks import Generator

    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    G = Generator(size, 512, 8, channel_multiplier=2).to(device)
    G.compute_mean_latent(n=1024, seed=0)
    ensemble = [(random_clip(n, device), 1.0) for n in clips.split("+")]
    with tempfile.TemporaryDirectory() as out:
        cfg = AdaptConfig(source="photo", target="sketch", generator=f"random-{size}", clip=clips, layers=layers,
                          iterations=iterations, batch_size=2, out_dir=out, sample_every=0, save_every=0, device=device,
                          tf32=precision == "tf32", bf16=precision == "bf16", log_every=log_every)
        G_train = adapt(cfg, progress=False, G_base=G, clip=ensemble)
        total = time.perf_counter() - t_start
        seconds = [json.loads(line)["seconds"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]
        t_grid, t_save = time_outputs(G_train, device, Path(out))
    steady = statistics.median(seconds[1:] or seconds)
    grids, saves = extra_outputs(iterations)
    e2e = total + (E2E_ITERATIONS - iterations) * steady + grids * t_grid + saves * t_save
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"size": size, "clip": clips, "layers": layers, "device": device, "precision": precision,
            "iterations": iterations, "s_per_it": steady, "first_it_s": seconds[0], "total_s": total,
            "grid_s": t_grid, "save_s": t_save,
            "e2e_300_s": e2e, "peak_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,1024", help="generator sizes (default: %(default)s)")
    p.add_argument("--clips", default="ViT-B/32,ViT-B/32+ViT-B/16", help="CLIP sets, '+' joins an ensemble (default: %(default)s)")
    p.add_argument("--layers", default="auto:3,all", help="layer specs (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=3, help="iterations per configuration (default: %(default)s)")
    p.add_argument("--precisions", default="fp32", help="fp32, tf32 (CUDA), bf16 (CUDA autocast) (default: fp32)")
    p.add_argument("--log-every", type=int, default=10, help="the loop's log_every (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also append every result as one JSON line to this file")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = p.parse_args()

    if args.one:
        size, clips, layers, device, precision = args.one.split("|")
        result = run_one(int(size), clips, layers, args.iterations, device, args.threads, precision, args.log_every)
        print(json.dumps(result))
        return

    if args.device:
        devices = [args.device]
    else:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.iterations} iterations per row; peak MB: CUDA max allocated / CPU max RSS, whole process")
    print(f"{'device':6} {'size':>5} {'clip':20} {'layers':8} {'prec':5} {'s/it':>8} {'first':>8} "
          f"{'300 it e2e':>11} {'peak MB':>9}")
    for device in devices:
        for size in (int(s) for s in args.sizes.split(",")):
            for clips in args.clips.split(","):
                for layers in args.layers.split(","):
                    for precision in args.precisions.split(","):
                        run_row(args, device, size, clips, layers, precision)


def run_row(args: argparse.Namespace, device: str, size: int, clips: str, layers: str, precision: str) -> None:
    """One configuration in a fresh subprocess; prints its row (or why it failed)."""
    one = "|".join([str(size), clips, layers, device, precision])
    cmd = [sys.executable, __file__, "--one", one, "--iterations", str(args.iterations), "--threads", str(args.threads),
           "--log-every", str(args.log_every)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    head = f"{device:6} {size:>5} {clips:20} {layers:8} {precision:5}"
    if res.returncode != 0:
        print(f"{head} failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
        return
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"{head} {r['s_per_it']:8.3f} {r['first_it_s']:8.3f} {r['e2e_300_s']:10.1f}s {r['peak_mb']:9.0f}", flush=True)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
