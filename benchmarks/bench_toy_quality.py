"""Quality of toy-world adaptations, judged by the strict toy judge: target rate, content kept, diversity, fidelity.

Each row adapts the toy generator (photo style only) with `nada.adaptation.loop.adapt` and measures the result
with `nada.toy.quality` on the same seeded latents for the frozen and the adapted generator. Rows:

- styles: photo -> sketch, watercolor, pixel art (the packaged preset's recipe for its style: for sketch the
  toy translator's drawings as targets, ``nada.toy.plugin.TRANSLATOR_RECIPE``; for the others the directional
  loss of ``nada.toy.plugin.TOY_RECIPE`` with the preset's changes; ``--recipe defaults`` asks for the plain
  AdaptConfig defaults). Every other row changes ``TOY_RECIPE`` (the CLIP recipe; "all" is that recipe itself);
- the keep term: sketch without it (``keep`` empty);
- a content edit: "face" -> "smiling face", judged as mouth=smiling (keeping the other five attributes);
- the loss: sketch with the global CLIP loss alone (lambda_direction 0, lambda_global 1, no keep term);
- the layer-freezing strategies on sketch: auto:K, grad:K, last:K, all.

Goals (directional loss): target rate >= 0.9, content kept >= 0.9, diversity ratio >= 0.8; the
global-only baseline should collapse (low diversity). Style rows also get the fidelity to the
true renders (``nada.toy.judge``: stroke distance, pixel L1) and a "best filter" line: the global
filter of the unadapted faces closest to the true renders, with the judge's target rate for it.
Prints a table, writes ``results.json`` and ``quality.png`` (per row: frozen images above adapted
ones, then a bar chart of the three numbers).

    python benchmarks/bench_toy_quality.py                                  # every row, the toy recipe
    python benchmarks/bench_toy_quality.py --recipe defaults --rows sketch  # AdaptConfig's defaults, toy CLIP
    python benchmarks/bench_toy_quality.py --rows sketch,global-only --iterations 150
    python benchmarks/bench_toy_quality.py --set lr=0.01 --set layers=last:2 --rows sketch
    python benchmarks/bench_toy_quality.py --generator /tmp/gen.pt --clip toy,/tmp/clip_folder:2   # other assets
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

GOALS = {"target_rate": 0.9, "content_kept": 0.9, "diversity_ratio": 0.8}

# name -> (source text, target text, evaluator target, AdaptConfig changes)
ROWS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "sketch": ("photo", "sketch", "sketch", {}),
    "watercolor": ("photo", "watercolor", "watercolor", {}),
    "pixel-art": ("photo", "pixel art", "pixel art", {}),
    "no-keep": ("photo", "sketch", "sketch", {"keep": ""}),
    # An edit of one attribute keeps the other five, not the one it edits.
    "smiling": ("face", "smiling face", "mouth=smiling", {"keep": "toy:face_shape,hair_color,hair_style,eyes,glasses"}),
    # The paper's baseline: the global loss and nothing else (no keep term either).
    "global-only": ("photo", "sketch", "sketch", {"lambda_direction": 0.0, "lambda_global": 1.0, "keep": ""}),
    "auto:3": ("photo", "sketch", "sketch", {"layers": "auto:3"}),
    "grad:3": ("photo", "sketch", "sketch", {"layers": "grad:3"}),
    "last:2": ("photo", "sketch", "sketch", {"layers": "last:2"}),
    "all": ("photo", "sketch", "sketch", {"layers": "all"}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, in order (known: {', '.join(ROWS)})")
    p.add_argument("--iterations", type=int, default=None, help="adaptation iterations (default: AdaptConfig's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change an AdaptConfig field for every row (a row's own setting wins), e.g. lr=0.01",
    )
    p.add_argument(
        "--recipe",
        choices=("toy", "defaults"),
        default="toy",
        help="base settings of every row: the toy presets' recipe, or AdaptConfig's defaults (default: %(default)s)",
    )
    p.add_argument("--generator", default="toy", help="base generator: 'toy' or a checkpoint path")
    p.add_argument(
        "--clip",
        default=None,
        help="CLIP guides, 'NAME[:WEIGHT],...' (default: the recipe's; 'toy' for --recipe defaults)",
    )
    p.add_argument("--n", type=int, default=256, help="latents judged per row")
    p.add_argument("--seed", type=int, default=0, help="adaptation seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench_toy_quality", help="folder for runs/, results.json, quality.png")
    return p.parse_args(argv)


def parse_changes(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE strings -> AdaptConfig changes, each value converted to the type of the field's default."""
    from dataclasses import fields

    from nada.config import AdaptConfig

    defaults = {f.name: f.default for f in fields(AdaptConfig)}
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in defaults:
            sys.exit(f"unknown AdaptConfig field {name!r}: known are {', '.join(defaults)}")
        kind = type(defaults[name])
        out[name] = (
            value.lower() in ("1", "true", "yes")
            if kind is bool
            else kind(value)
            if defaults[name] is not None
            else value
        )
    return out


def base_settings(recipe: str, target: str = "") -> dict[str, Any]:
    """AdaptConfig changes a row starts from: the toy presets' recipe (a packaged preset's own for its target), or
    none (AdaptConfig's defaults, toy CLIP)."""
    from nada.toy.plugin import TOY_RECIPE
    from nada.weights.presets import get_preset, known_presets

    if recipe != "toy":
        return {"clip": "toy"}
    name = "toy-" + target.replace(" ", "-")
    preset = get_preset(name) if name in known_presets() else None
    return dict(preset.options if preset is not None and preset.source == "photo" else TOY_RECIPE)


def run_row(
    name: str, args: argparse.Namespace, changes: dict[str, Any], G, clip, evaluator
) -> tuple[dict[str, Any], Any, Any]:
    """Adapt for one row, judge it; returns the record and the (frozen, adapted) sample images."""
    from nada.adaptation.loop import adapt
    from nada.config import AdaptConfig
    from nada.toy.quality import measure_quality, render_pairs

    source, target, judged, own = ROWS[name]
    # Rows that change the recipe study the CLIP recipe; the plain style rows run their preset's (sketch: translator).
    settings = {**base_settings(args.recipe, "" if own else target), "seed": args.seed, **changes, **own}
    if args.clip is not None:
        settings["clip"] = args.clip
    if args.iterations is not None:
        settings["iterations"] = args.iterations
    cfg = AdaptConfig(
        source=source,
        target=target,
        generator="toy",
        device=args.device,
        out_dir=str(Path(args.out) / "runs" / name.replace(":", "-")),
        sample_every=0,
        save_every=0,
        **settings,
    )
    t0 = time.perf_counter()
    G_train = adapt(cfg, progress=False, G_base=G, clip=clip, force=True)
    seconds = time.perf_counter() - t0
    report = measure_quality(G, G_train, evaluator, judged, n=args.n, fidelity=True)
    record = {
        "row": name,
        "source": source,
        "target": target,
        "judged": judged,
        "clip": cfg.clip,
        "layers": cfg.layers,
        "lr": cfg.lr,
        "iterations": cfg.iterations,
        "lambda_direction": cfg.lambda_direction,
        "lambda_global": cfg.lambda_global,
        "keep": cfg.keep,
        "seconds": round(seconds, 1),
        **report.to_dict(),
    }
    return record, *render_pairs(G, G_train, 8, seed=1_000)


def print_table(records: list[dict[str, Any]]) -> None:
    """One line per row, a "best filter" line under each style row; goals met are marked with *."""
    head = (
        f"{'row':<12} {'target':<14} {'layers':<8} {'lr':>6} {'iters':>5} {'frozen':>6} {'target%':>7} "
        f"{'reject%':>7} {'content%':>8} {'cont.mean':>9} {'divers.':>7} {'stroke':>7} {'L1':>6} {'sec':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in records:
        mark = lambda key, v: f"{v:.2f}{'*' if v >= GOALS[key] else ' '}"  # noqa: E731
        fid = r.get("fidelity") or {}
        stroke = f"{fid['adapted']['stroke']:>7.4f} {fid['adapted']['l1']:>6.3f}" if fid else f"{'-':>7} {'-':>6}"
        print(
            f"{r['row']:<12} {r['judged']:<14} {r['layers']:<8} {r['lr']:>6g} {r['iterations']:>5} "
            f"{r['frozen_target_rate']:>6.2f} {mark('target_rate', r['target_rate']):>7} "
            f"{r.get('reject_rate', 0.0):>7.2f} "
            f"{mark('content_kept', r['content_kept']):>8} {r['content_kept_mean']:>9.2f} "
            f"{mark('diversity_ratio', r['diversity_ratio']):>7} {stroke} {r['seconds']:>6.1f}"
        )
        if fid:
            best = fid["best_filter"]
            rate = best.get("target_rate", float("nan"))
            print(
                f"{'  best filter':<12} {best['filter'][:40]:<40} {rate:>7.2f} {'':>36} "
                f"{best['stroke']:>7.4f} {best['l1']:>6.3f}   (unadapted: stroke {fid['unadapted']['stroke']:.4f})"
            )
    print(
        f"* = goal met ({', '.join(f'{k} >= {v}' for k, v in GOALS.items())}); stroke, L1: distance to the true "
        "render of each face in the target style (nada.toy.judge); best filter: the filter of nada.toy.filters.SUITE "
        "closest to them"
    )


def figure(records: list[dict[str, Any]], pairs: list[tuple[Any, Any]]):
    """A PIL image: per row a label, the frozen images above the adapted ones, and bars for the three numbers."""
    from PIL import Image, ImageDraw

    from nada.io import image_grid

    grids = [image_grid([f, a]) for f, a in pairs]
    label_w, bar_w, pad = 150, 240, 8
    row_h = max(g.height for g in grids) + pad
    width = label_w + max(g.width for g in grids) + bar_w + 2 * pad
    canvas = Image.new("RGB", (width, row_h * len(grids) + 30), "white")
    draw = ImageDraw.Draw(canvas)
    colors = {"target_rate": (52, 120, 200), "content_kept": (60, 160, 90), "diversity_ratio": (220, 130, 40)}
    x_bar = label_w + max(g.width for g in grids) + 2 * pad
    for i, (r, g) in enumerate(zip(records, grids)):
        y = i * row_h
        draw.text(
            (4, y + 4),
            (
                f"{r['row']}\n{r['source']} -> {r['target']}\n{r['layers']} lr {r['lr']:g}\n"
                f"{r['iterations']} it, {r['seconds']:.0f} s"
            ),
            fill="black",
        )
        canvas.paste(g, (label_w, y))
        for j, (key, color) in enumerate(colors.items()):
            value = max(0.0, min(float(r[key]), 1.2))
            yb = y + 8 + j * 22
            draw.rectangle([x_bar, yb, x_bar + int(150 * value), yb + 14], fill=color)
            draw.line([x_bar + int(150 * GOALS[key]), yb - 2, x_bar + int(150 * GOALS[key]), yb + 16], fill="black")
            draw.text((x_bar + 156, yb + 2), f"{r[key]:.2f}", fill="black")
    legend_y = row_h * len(grids) + 8
    draw.text((4, legend_y), "per row: frozen (top) / adapted (bottom); bars: ", fill="black")
    x = 300
    for key, color in colors.items():
        draw.rectangle([x, legend_y, x + 12, legend_y + 12], fill=color)
        draw.text((x + 16, legend_y), key.replace("_", " "), fill="black")
        x += 120
    draw.text((x, legend_y), "| = goal", fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from nada.generator.checkpoints import load_generator
    from nada.guidance.clip import load_clip_ensemble
    from nada.io import atomic_save_image, atomic_write
    from nada.toy.evaluator import load_evaluator

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}: known are {', '.join(ROWS)}")
    changes = parse_changes(args.set)
    G = load_generator(args.generator, device=args.device)
    clip = load_clip_ensemble(args.clip or base_settings(args.recipe)["clip"], device=args.device)
    evaluator = load_evaluator(device=args.device)
    out = Path(args.out)
    records, pairs = [], []
    for name in rows:
        record, frozen, adapted = run_row(name, args, changes, G, clip, evaluator)
        records.append(record)
        pairs.append((frozen, adapted))
        print(json.dumps(record), flush=True)
        # rewrite after every row, so an interrupted benchmark keeps what it measured
        atomic_write(
            out / "results.json",
            lambda tmp: tmp.write_text(json.dumps({"settings": vars(args), "rows": records}, indent=2)),
        )
        atomic_save_image(figure(records, pairs), out / "quality.png")
    print()
    print_table(records)
    print(f"wrote {out / 'results.json'} and {out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
