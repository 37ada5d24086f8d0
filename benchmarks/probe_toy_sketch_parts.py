"""Probe: which parts of a toy sketch the strict judge and the stroke distance need (docs/toy_quality.md).

Renders the judged latents (seed 0, 128 faces of the packaged toy generator's latents) as sketches with parts
taken away (`nada.toy.render`'s sketch style with ``hatch`` "lines" / "tone" / "none" and ``outlines`` on or
off), in another texture draw (seed 7) than the true renders the stroke distance compares with (seed 3), and
prints per variant the judge's sketch and "none" rates, the attributes read as on the true renders (content),
the stroke distance and dark IoU. Writes the first six faces of each variant as rows of a PNG.

    python benchmarks/probe_toy_sketch_parts.py --out sketch_parts.png
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
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
