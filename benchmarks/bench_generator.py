"""Generator speed and memory: images/s and peak memory of nada's Generator against a naive upfirdn-style path.

Run: python benchmarks/bench_generator.py [--sizes 256,1024] [--repeats 3] [--device cpu|cuda|auto]
       [--cases fwd1,fwd4,bwd2] [--precisions fp32,tf32,bf16] [--layouts grouped,activations,cpu] [--cudnn-benchmark]

Both paths use the same random weights. The naive path is a compact, straightforward port of the
reference's pure-PyTorch ("native") ops: zero-insertion up-sampling followed by a one-channel
convolution for every FIR filter, and the batch folded into a grouped convolution. Its images are
compared with nada's (max|diff|), so the speed-up is for the same numbers up to float32 rounding
(bf16 rows: up to bf16 rounding). Every row is timed against the naive port in the same process.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import resource
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from nada.adaptation.loop import fp32_precision
from nada.generator.networks import Generator, ModulatedConv2d, StyledConv, ToRGB
from nada.io import resolve_device
from nada.runtime import retain_freed_memory

# ---------------------------------------------------------------- naive reference path


def upfirdn2d_naive(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """upfirdn2d as the reference's native fallback does it: [N, C, H, W] -> zero-insert, pad, 1-channel conv."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(-1, h, w, 1).view(-1, h, 1, w, 1, 1)
    out = F.pad(out, [0, 0, 0, up - 1, 0, 0, 0, up - 1]).view(-1, h * up, w * up, 1)
    out = F.pad(out, [0, 0, pad[0], pad[1], pad[0], pad[1]])
    out = out.permute(0, 3, 1, 2).reshape(-1, 1, h * up + sum(pad), w * up + sum(pad))
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, kh, kw))
    out = out.reshape(-1, 1, out.shape[2], out.shape[3]).permute(0, 2, 3, 1)
    return out.reshape(n, c, out.shape[1], out.shape[2])


def modulated_conv_naive(m: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """rosinality's fused modulated conv: batch folded into groups, transposed conv then upfirdn blur."""
    n, c, h, w = x.shape
    k, o = m.kernel_size, m.out_channel
    s = F.linear(style, m.modulation.weight * m.modulation.scale, m.modulation.bias * m.modulation.lr_mul)
    weight = m.scale * m.weight * s.view(n, 1, c, 1, 1)
    if m.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(n, o, 1, 1, 1)
    x = x.reshape(1, n * c, h, w)
    if m.upsample:
        weight = weight.transpose(1, 2).reshape(n * c, o, k, k)
        out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=n)
        out = out.view(n, o, out.shape[2], out.shape[3])
        return upfirdn2d_naive(out, m.blur.kernel, 1, m.blur.pad)
    out = F.conv2d(x, weight.view(n * o, c, k, k), padding=m.padding, groups=n)
    return out.view(n, o, out.shape[2], out.shape[3])


def styled_conv_naive(layer: StyledConv, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    out = modulated_conv_naive(layer.conv, x, style) + layer.noise.weight * noise
    return F.leaky_relu(out + layer.activate.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


def to_rgb_naive(layer: ToRGB, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    out = modulated_conv_naive(layer.conv, x, style) + layer.bias
    if skip is not None:
        k = layer.upsample.kernel
        p = k.shape[0] - 2
        out = out + upfirdn2d_naive(skip, k, 2, ((p + 1) // 2 + 1, p // 2))
    return out


def generator_naive(G: Generator, z: torch.Tensor) -> torch.Tensor:
    """The same image as G(z) (stored noise buffers), computed with the naive ops above."""
    w = G.style(z)
    ws = w.unsqueeze(1).repeat(1, G.n_latent, 1)
    noise = G.noise_buffers()
    out = G.input.input.repeat(z.shape[0], 1, 1, 1)
    out = styled_conv_naive(G.conv1, out, ws[:, 0], noise[0])
    skip = to_rgb_naive(G.to_rgb1, out, ws[:, 1], None)
    for j, to_rgb in enumerate(G.to_rgbs):
        i = 2 * j + 1
        out = styled_conv_naive(G.convs[2 * j], out, ws[:, i], noise[i])
        out = styled_conv_naive(G.convs[2 * j + 1], out, ws[:, i + 1], noise[i + 1])
        skip = to_rgb_naive(to_rgb, out, ws[:, i + 2], skip)
    return skip


# ---------------------------------------------------------------- measurement


class PeakRSS:
    """Peak resident-set growth of this process while the block runs, sampled from /proc every millisecond."""

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        except OSError:  # not Linux: fall back to the lifetime maximum
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float, float]:
    """(median wall seconds, median process CPU seconds, peak memory MiB) over `repeats` calls after one warm-up.

    CPU seconds are reported too because on a shared machine they are less disturbed by other
    processes than wall time is. Memory, one way per device: CUDA max allocated above what was
    allocated before the timed calls; CPU peak resident-set growth.
    """
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    walls, cpus = [], []
    with PeakRSS() as rss:
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else rss.growth_mib
    return statistics.median(walls), statistics.median(cpus), peak


CASES = {"fwd1": (1, False), "fwd4": (4, False), "bwd2": (2, True)}


def precision_context(device: torch.device, precision: str) -> AbstractContextManager[None]:
    """fp32: IEEE float32 everywhere; tf32: TF32 CUDA matmuls and convolutions; bf16: weights cast, no switch."""
    return fp32_precision(device, tf32=precision == "tf32")


def runner(
    forward: Callable[[torch.Tensor], torch.Tensor], params: torch.nn.Module, z: torch.Tensor, backward: bool
) -> Callable[[], torch.Tensor]:
    """A timed call: forward(z) without gradients, or forward(z) and the backward of a mean-square loss."""

    def call() -> torch.Tensor:
        if backward:
            params.zero_grad(set_to_none=True)
            img = forward(z)
            img.float().square().mean().backward()
            return img.detach()
        with torch.no_grad():
            return forward(z)

    return call


def variant(G: Generator, layout: str, precision: str) -> Generator:
    """G itself with the layout set, or a bf16 copy of it."""
    H = copy.deepcopy(G).set_precision("bf16") if precision == "bf16" else G
    H.layout = layout
    return H


def bench_size(size: int, device: torch.device, args: argparse.Namespace) -> None:
    """One table: every case x precision x layout, each with its ratio to the naive port measured in the same run."""
    torch.manual_seed(0)
    G = Generator(size, 512, 8, channel_multiplier=2).to(device).eval()
    default_layouts = ["grouped", "activations", "cpu"] if device.type == "cuda" else ["cpu"]
    layouts = args.layouts.split(",") if args.layouts else default_layouts
    mem = "peak CUDA alloc growth" if device.type == "cuda" else "peak RSS growth"
    print(
        f"\n== Generator({size}, 512, 8, 2) on {device} ({sum(p.numel() for p in G.parameters()):,} parameters); "
        f"median of {args.repeats}; memory: {mem}; ratio = naive time / nada time, same run, same precision switch "
        f"(the naive port always runs in float32 weights)"
    )
    print(
        f"{'case':<8}{'prec':<6}{'layout':<13}{'img/s':>10}{'naive img/s':>13}{'ratio':>8}{'(cpu t)':>9}{'MiB':>8}"
        f"{'naive MiB':>11}{'max|diff|':>11}"
    )
    for case in args.cases.split(","):
        batch, backward = CASES[case]
        z = torch.randn(batch, 512, device=device)
        for precision in args.precisions.split(","):
            with precision_context(device, precision):
                naive = None
                if not (backward and size > args.naive_backward_max_size):
                    naive = measure(runner(lambda zz: generator_naive(G, zz), G, z, backward), device, args.repeats)
                with torch.no_grad():
                    ref = generator_naive(G, z)
                for layout in layouts:
                    H = variant(G, layout, precision)
                    with torch.no_grad():
                        diff = (H(z).float() - ref).abs().max().item()
                    t, c, m = measure(runner(H, H, z, backward), device, args.repeats)
                    ratio = f"{naive[0] / t:>7.2f}x{naive[1] / c:>8.2f}x" if naive else f"{'-':>8}{'-':>9}"
                    naive_cols = f"{batch / naive[0]:>13.3f}" if naive else f"{'-':>13}"
                    naive_mem = f"{naive[2]:>11.0f}" if naive else f"{'-':>11}"
                    head = f"{case:<8}{precision:<6}{layout:<13}{batch / t:>10.3f}"
                    print(f"{head}{naive_cols}{ratio}{m:>8.0f}{naive_mem}{diff:>11.1e}", flush=True)
    G.layout = "auto"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="256,1024", help="comma-separated generator sizes (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row, the median is reported (default: 3)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--cases", default="fwd1,fwd4,bwd2", help=f"cases among {', '.join(CASES)} (default: %(default)s)")
    p.add_argument("--precisions", default="fp32", help="fp32, tf32 (CUDA), bf16 (native bf16 weights) (default: fp32)")
    p.add_argument("--layouts", default=None, help="nada layouts (default: all three on CUDA, cpu on CPU)")
    p.add_argument(
        "--naive-backward-max-size",
        type=int,
        default=512,
        help="run the naive fwd+bwd only up to this size; at 1024 it needs tens of GB of memory (default: %(default)s)",
    )
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its algorithms per shape (torch.backends.cudnn.benchmark) for every row",
    )
    p.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's heap as it is (nada's CLI keeps freed memory: nada.runtime.retain_freed_memory)",
    )
    args = p.parse_args()
    retained = False if args.system_malloc else retain_freed_memory()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"cudnn.benchmark {torch.backends.cudnn.benchmark}, freed memory kept by the heap {retained}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        bench_size(size, device, args)


if __name__ == "__main__":
    main()
