"""Throughput of the toy-world renderer: images per second of CPU time, per style, on one thread."""

from __future__ import annotations

import argparse
import time

from nada.toy import render as R


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512, help="faces per render call (default: %(default)s)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed calls per style; the best is kept (default: %(default)s)"
    )
    args = ap.parse_args()
    params = R.sample_params(args.n, seed=0)
    R.render(params.subset(slice(0, 8)), "photo")  # warm-up
    total = 0.0
    for style in R.STYLES:
        best = float("inf")
        for r in range(args.repeats):
            t0 = time.process_time()
            R.render(params, style, seed=r)
            best = min(best, time.process_time() - t0)
        total += best
        print(f"{style:>11s}: {args.n / best:7.0f} images/s  ({1e3 * best / args.n:.2f} ms per image)")
    print(f"{'all styles':>11s}: {args.n * len(R.STYLES) / total:7.0f} images/s")
    t0 = time.process_time()
    R.captions(params, "photo", seed=0)
    print(f"{'captions':>11s}: {args.n / (time.process_time() - t0):7.0f} captions/s")


if __name__ == "__main__":
    main()
