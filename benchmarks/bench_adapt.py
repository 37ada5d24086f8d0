"""Seconds per adaptation iteration, 300 iterations end to end, and peak memory, per size, CLIP set, layers, precision.

Random weights everywhere (no download): ``Generator(size, 512, 8, 2)`` and open_clip architectures
built with ``pretrained=None``, written to files before the clock starts and loaded as a run loads them.
Each configuration runs in its own subprocess so that its peak memory is its own. Columns:

- ``s/it``: median of the loop's per-iteration times (log.jsonl "seconds") without the first iteration.
- ``first``: the first iteration (kernel selection, allocator warm-up, the first layer selection).
- ``300 it e2e``: what ``nada adapt --iterations 300`` with the default ``sample_every`` 50 and
  ``save_every`` 100 takes, setup included: the measured run (CUDA context, loading the weights, guides, the first
  iteration, its two sample grids and final save) plus (300 - N) median iterations plus the five
  sample grids and two checkpoint-and-state saves that the longer run writes in addition, each
  costed at what the run's own grids and save took (``adapt(timings=...)``).
- ``cuda / load / setup / iters / grids / saves``: where the measured run's seconds went: ``cuda`` the
  CUDA context, ``load`` reading the generator and CLIP files (random weights written beforehand, untimed,
  in the formats of real downloads: a nada checkpoint and OpenAI-layout CLIP weights), then
  `nada.adaptation.loop.adapt`'s
  phases: ``setup`` (copies, guides, optimizer), ``iters`` (the N iterations with their logging),
  ``grids`` (rendering the two sample grids, and waiting for their PNG encoding at the end), ``saves``
  (the final checkpoint and resume state).
- ``peak MB``: one way per device, over the whole process: CUDA ``torch.cuda.max_memory_allocated``;
  CPU the peak resident set size.
- ``prec``: fp32 is IEEE float32 on CUDA (matmuls and cuDNN convolutions); tf32 switches both to TF32.
- ``--set NAME=VALUE``: any AdaptConfig field for every row (the selection levers: ``select_chunk=2``,
  ``select_every=4``, ``deterministic=1``); shown in the row's ``set`` column.

    python benchmarks/bench_adapt.py --sizes 256 --clips ViT-B/32 --layers all,auto:3 --iterations 3
    python benchmarks/bench_adapt.py --device cuda --sizes 1024 --iterations 30 --precisions fp32,tf32
    python benchmarks/bench_adapt.py --device cuda --sizes 1024 --layers auto:3 --precisions tf32 --set select_chunk=2
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


def write_random_weights(folder: Path, size: int, clips: str) -> tuple[Path, list[Path]]:
    """A seeded random 512-style-dim generator as a nada checkpoint and each CLIP's random weights in OpenAI's
    layout, so that the timed part loads them as a real run loads downloaded weights."""
    import torch

    from nada.generator.checkpoints import save_checkpoint
    from nada.generator.networks import Generator

    torch.manual_seed(0)
    G = Generator(size, 512, 8, channel_multiplier=2)
    G.compute_mean_latent(n=1024, seed=0)
    g_file = save_checkpoint(folder / "generator.pt", G, {"base_model": f"random-{size}"})
    clip_files = []
    for i, name in enumerate(clips.split("+")):
        clip_files.append(folder / f"clip{i}.pt")
        torch.save(random_clip(name, "cpu").model.state_dict(), clip_files[-1])
    return g_file, clip_files


def extra_outputs(iterations: int) -> tuple[int, int]:
    """(grids, saves) that 300 iterations with the default intervals write beyond N iterations without them."""
    grids = len(range(SAMPLE_EVERY, E2E_ITERATIONS, SAMPLE_EVERY))  # in-loop grids; start and end grids both runs write
    saves = len(range(SAVE_EVERY, E2E_ITERATIONS, SAVE_EVERY))
    return grids, saves


def run_one(
    size: int,
    clips: str,
    layers: str,
    iterations: int,
    device: str,
    threads: int,
    precision: str,
    log_every: int,
    changes: dict,
) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch

    from nada.adaptation.loop import adapt
    from nada.config import AdaptConfig
    from nada.generator.checkpoints import load_generator
    from nada.guidance.clip_weights import load_clip_openai_file

    if threads:
        torch.set_num_threads(threads)
    files = tempfile.TemporaryDirectory()
    g_file, clip_files = write_random_weights(Path(files.name), size, clips)
    t_start = time.perf_counter()
    phases = {}
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the CUDA context, which every run on the GPU pays first
        torch.cuda.synchronize()
        phases["cuda"] = time.perf_counter() - t_start
    G = load_generator(g_file, device=device)
    ensemble = [(load_clip_openai_file(f, device, name=n), 1.0) for n, f in zip(clips.split("+"), clip_files)]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    phases["load"] = time.perf_counter() - t_start - phases.get("cuda", 0.0)
    with tempfile.TemporaryDirectory() as out:
        cfg = AdaptConfig(
            source="photo",
            target="sketch",
            generator=f"random-{size}",
            clip=clips,
            layers=layers,
            iterations=iterations,
            batch_size=2,
            out_dir=out,
            sample_every=0,
            save_every=0,
            device=device,
            log_every=log_every,
            **{"tf32": precision == "tf32", "bf16": precision == "bf16", **changes},
        )
        adapt(cfg, progress=False, G_base=G, clip=ensemble, timings=phases)
        total = time.perf_counter() - t_start
        records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    files.cleanup()
    seconds = [r["seconds"] for r in records]
    steady = steady_seconds(records, changes.get("select_every", 1))
    grids, saves = extra_outputs(iterations)
    # The run wrote two grids (start, end) and one save; the end grid also waited for PNG encoding.
    t_grid, t_save = phases["grids"] / 2, phases["saves"]
    e2e = total + (E2E_ITERATIONS - iterations) * steady + grids * t_grid + saves * t_save
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {
        "size": size,
        "clip": clips,
        "layers": layers,
        "device": device,
        "precision": precision,
        "iterations": iterations,
        "s_per_it": steady,
        "first_it_s": seconds[0],
        "total_s": total,
        "grid_s": t_grid,
        "save_s": t_save,
        "phases_s": phases,
        "set": changes,
        "selections": [r["layers"] for r in records],
        "e2e_300_s": e2e,
        "peak_mb": peak_mb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,1024", help="generator sizes (default: %(default)s)")
    p.add_argument(
        "--clips", default="ViT-B/32,ViT-B/32+ViT-B/16", help="CLIP sets, '+' joins an ensemble (default: %(default)s)"
    )
    p.add_argument("--layers", default="auto:3,all", help="layer specs (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=3, help="iterations per configuration (default: %(default)s)")
    p.add_argument("--precisions", default="fp32", help="fp32, tf32 (CUDA), bf16 (CUDA autocast) (default: fp32)")
    p.add_argument("--log-every", type=int, default=10, help="the loop's log_every (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an AdaptConfig field for every row, e.g. select_chunk=2 (repeatable)",
    )
    p.add_argument("--json", default=None, help="also append every result as one JSON line to this file")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = p.parse_args()

    if args.one:
        size, clips, layers, device, precision = args.one.split("|")
        result = run_one(
            int(size),
            clips,
            layers,
            args.iterations,
            device,
            args.threads,
            precision,
            args.log_every,
            parse_changes(args.set),
        )
        print(json.dumps(result))
        return

    if args.device:
        devices = [args.device]
    else:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.iterations} iterations per row; peak MB: CUDA max allocated / CPU max RSS, whole process")
    print(
        f"{'device':6} {'size':>5} {'clip':20} {'layers':8} {'prec':5} {'set':18} {'s/it':>8} {'first':>8} "
        f"{'300 it e2e':>11} {'peak MB':>9}  cuda / load / setup / iters / grids / saves (s)"
    )
    for device in devices:
        for size in (int(s) for s in args.sizes.split(",")):
            for clips in args.clips.split(","):
                for layers in args.layers.split(","):
                    for precision in args.precisions.split(","):
                        run_row(args, device, size, clips, layers, precision)


def run_row(args: argparse.Namespace, device: str, size: int, clips: str, layers: str, precision: str) -> None:
    """One configuration in a fresh subprocess; prints its row (or why it failed)."""
    one = "|".join([str(size), clips, layers, device, precision])
    cmd = [
        sys.executable,
        __file__,
        "--one",
        one,
        "--iterations",
        str(args.iterations),
        "--threads",
        str(args.threads),
        "--log-every",
        str(args.log_every),
    ] + [f"--set={item}" for item in args.set]
    res = subprocess.run(cmd, capture_output=True, text=True)
    head = f"{device:6} {size:>5} {clips:20} {layers:8} {precision:5} {','.join(args.set) or '-':18}"
    if res.returncode != 0:
        print(f"{head} failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
        return
    r = json.loads(res.stdout.strip().splitlines()[-1])
    ph = r["phases_s"]
    split = " / ".join(f"{ph.get(k, 0.0):.2f}" for k in ("cuda", "load", "setup", "iterations", "grids", "saves"))
    print(
        f"{head} {r['s_per_it']:8.3f} {r['first_it_s']:8.3f} {r['e2e_300_s']:10.1f}s {r['peak_mb']:9.0f}  {split}",
        flush=True,
    )
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(r) + "\n")


def steady_seconds(records: list[dict], every: int) -> float:
    """Seconds per iteration after the first: the median, or with a selection every N steps, the median of
    the steps without one plus 1/N of what a selection step costs more (the median would miss it)."""
    later = records[1:] or records
    picks = [r["seconds"] for r in later if (r["step"] - 1) % every == 0]
    rest = [r["seconds"] for r in later if (r["step"] - 1) % every != 0]
    if not (picks and rest):
        return statistics.median(picks or rest)
    return statistics.median(rest) + (statistics.median(picks) - statistics.median(rest)) / every


def parse_changes(items: list[str]) -> dict:
    """NAME=VALUE strings -> AdaptConfig changes, each value converted to the type of the field's default."""
    from dataclasses import fields

    from nada.config import AdaptConfig

    defaults = {f.name: f.default for f in fields(AdaptConfig)}
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in defaults:
            sys.exit(f"unknown AdaptConfig field {name!r}: known are {', '.join(defaults)}")
        kind = type(defaults[name])
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


if __name__ == "__main__":
    main()
