"""Probe: which parts of a toy sketch the strict judge and the stroke distance need (docs/toy_quality.md).

Renders the judged latents (seed 0, 128 faces of the packaged toy generator's latents) as sketches with parts
taken away (`nada.toy.render`'s sketch style with ``hatch`` "lines" / "tone" / "none" and ``outlines`` on or
off), in another texture draw (seed 7) than the true renders the stroke distance compares with (seed 3), and
prints per variant the judge's sketch and "none" rates, the attributes read as on the true renders (content),
the stroke distance and dark IoU. Writes the first six faces of each variant as rows of a PNG. With
``--oracle-out`` it also fine-tunes the supervised oracle (bench_toy_guidance.oracle_finetune, 300 steps, lr 0.005)
on the true renders and on the renders with hatching as its mean tone, and judges each like an adaptation.

    python benchmarks/probe_toy_sketch_parts.py --out sketch_parts.png [--oracle-out oracles.png]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nada.toy import render as R

VARIANTS = {  # name: (hatch, outlines)
    "true sketch": ("lines", True),
    "hatching as its mean tone": ("tone", True),
    "no hatching": ("none", True),
    "no outlines": ("lines", False),
    "no hatching, no outlines": ("none", False),
}


@contextmanager
def sketch_variant(hatch: str, outlines: bool) -> Iterator[None]:
    """Render "sketch" with parts taken away inside the block."""
    plain = R._STYLE_FUNCS["sketch"]
    R._STYLE_FUNCS["sketch"] = functools.partial(plain, hatch=hatch, outlines=outlines)
    try:
        yield
    finally:
        R._STYLE_FUNCS["sketch"] = plain


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and write the image rows."""
    from nada.generator.checkpoints import load_generator
    from nada.toy.evaluator import load_evaluator, predict_all
    from nada.toy.generator_train import face_params
    from nada.toy.judge import dark_iou, stroke_distance
    from nada.toy.quality import content_kept, latents, reject_rate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG of six faces per variant")
    parser.add_argument("-n", type=int, default=128, help="judged latents")
    parser.add_argument("--oracle-out", type=Path, help="also train and judge oracles; PNG of their faces")
    args = parser.parse_args(argv)
    from probe_toy_denoiser import save_rows

    judge = load_evaluator()
    params = face_params(latents(load_generator("toy"), args.n, 0))
    truth = R.render_tensor(params, "sketch", seed=3)
    read_truth = predict_all(judge, truth)
    keys = [k for k in judge.classes if k != "style"]
    sketch = judge.classes["style"].index("sketch")
    rows = []
    print(f"{'variant':28s} sketch  none  content  stroke  dark IoU  worst attribute")
    for name, (hatch, outlines) in VARIANTS.items():
        with sketch_variant(hatch, outlines):
            img = R.render_tensor(params, "sketch", seed=7)
        read = predict_all(judge, img)
        rate = float((read["style"] == sketch).float().mean())
        kept = content_kept(read_truth, read, keys)
        worst = min(keys, key=kept.get)
        print(
            f"{name:28s} {rate:6.2f} {reject_rate(read, judge.classes):5.2f} {kept['overall']:8.2f} "
            f"{float(stroke_distance(img, truth).mean()):7.4f} {float(dark_iou(img, truth).mean()):9.3f}  "
            f"{worst} {kept[worst]:.2f}"
        )
        rows.append(img[:6])
    save_rows(args.out, rows)
    if args.oracle_out is not None:
        oracles(args.oracle_out, args.n)
    return 0


def oracles(out: Path, n: int) -> None:
    """Fine-tune the oracle on true sketch renders and on their mean-tone variant; print the adaptation's judged
    numbers (sketch / none / content / diversity / stroke) and write rows: frozen, each oracle, true renders."""
    import torch

    from bench_toy_guidance import oracle_finetune
    from nada.generator.checkpoints import load_generator
    from nada.toy.evaluator import load_evaluator
    from nada.toy.judge import true_renders
    from nada.toy.quality import latents, measure_quality
    from probe_toy_denoiser import save_rows

    toy, judge = load_generator("toy").eval(), load_evaluator()
    z = latents(toy, n, 0)[:6]
    with torch.no_grad():
        rows = [toy(z, noise_mode="const")]
    for name in ("true sketch", "hatching as its mean tone"):
        with sketch_variant(*VARIANTS[name]):
            oracle = oracle_finetune(toy, z, "sketch", 300, 0.005, seed=1)
        r = measure_quality(toy, oracle, judge, "sketch", n=n, seed=0, fidelity=True)
        print(
            f"oracle on {name}: {r.target_rate:.2f} / {r.reject_rate:.2f} / {r.content_kept:.2f} / "
            f"{r.diversity_ratio:.2f} / {r.fidelity['adapted']['stroke']:.4f}"
        )
        with torch.no_grad():
            rows.append(oracle(z, noise_mode="const"))
    rows.append(true_renders(z, "sketch"))
    save_rows(out, rows)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
