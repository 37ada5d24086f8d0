"""Where the toy adaptation's time goes: one iteration's parts and the run's fixed costs, on the CPU.

Times, with the real toy models, the pieces of one iteration of the toy recipe (``nada.toy.plugin.TOY_RECIPE``)
and the costs outside the loop, as medians of ``--repeats``:

- per guide: encoding the frozen views (no gradient) and encoding the trained views with the backward pass;
- the generators: the frozen forward (no gradient), the trained forward and its backward (batch 2);
- the structure term, views and noise;
- fixed costs: building the guides (text features), the end-of-run judge split into rendering, the evaluator,
  the paired fidelity (true renders and the filter suite's best-filter search).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_toy_adapt_cost.py --views 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def iteration_parts(views: int, batch: int, repeats: int) -> dict[str, float]:
    """Seconds of each part of one toy-recipe iteration at ``views`` views per image and ``batch`` latents."""
    from nada.adaptation.loop import apply_views, paired_views
    from nada.generator.checkpoints import load_generator
    from nada.guidance import losses
    from nada.guidance.clip import parse_clip_spec
    from nada.toy.plugin import TOY_RECIPE

    G = load_generator("toy")
    G.requires_grad_(True)
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(batch, G.style_dim, generator=rng)
    with torch.no_grad():
        ws = G.broadcast_w(G.mapping(z))
    parts: dict[str, float] = {}
    with torch.no_grad():
        img_frozen = G.synthesis(ws)
    parts["generator forward (no grad)"] = median_seconds(lambda: _nograd(lambda: G.synthesis(ws)), repeats)
    parts["generator forward + backward"] = median_seconds(lambda: G.synthesis(ws).square().mean().backward(), repeats)
    img = img_frozen.clone().requires_grad_(True)
    parts["structure term fwd + bwd"] = median_seconds(
        lambda: losses.structure_loss(img_frozen, img).backward(), repeats
    )
    theta = paired_views(batch, max(views, 1), rng, img.device)
    parts["views (both images)"] = median_seconds(
        lambda: (apply_views(img_frozen, theta), apply_views(img, theta)), repeats
    )
    seen = apply_views(img_frozen, theta) if views else img_frozen
    for name, _ in parse_clip_spec(dict(TOY_RECIPE)["clip"]):
        parts.update(guide_parts(name, seen, repeats))
    return parts


def guide_parts(name: str, seen: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds of one guide on views [M,3,H,W] in [-1, 1]: frozen side without gradient, trained side fwd + bwd."""
    from nada.guidance.clip import load_clip

    clip = load_clip(name)
    x = seen.detach().clone().requires_grad_(True)
    return {
        f"{name}: frozen views (no grad)": median_seconds(lambda: _nograd(lambda: clip.encode_image(seen)), repeats),
        f"{name}: trained views fwd + bwd": median_seconds(
            lambda: clip.encode_image(x).square().mean().backward(), repeats
        ),
    }


def _nograd(fn: Callable[[], object]) -> object:
    with torch.no_grad():
        return fn()


def fixed_costs(repeats: int) -> dict[str, float]:
    """Seconds of the run's costs outside the loop: building the guides and each part of the end-of-run judge."""
    from nada.adaptation.loop import build_guides
    from nada.config import AdaptConfig
    from nada.generator.checkpoints import load_generator
    from nada.guidance.clip import load_clip, parse_clip_spec
    from nada.toy.evaluator import load_evaluator
    from nada.toy.judge import best_filter, true_renders
    from nada.toy.plugin import TOY_RECIPE
    from nada.toy.quality import latents, parse_target, quality_from_images, render_pairs

    recipe = dict(TOY_RECIPE)
    config = AdaptConfig(generator="toy", source="photo", target="sketch", **recipe)
    G = load_generator("toy")
    costs: dict[str, float] = {}
    t0 = time.perf_counter()
    ensemble = [(load_clip(name), w) for name, w in parse_clip_spec(recipe["clip"])]
    costs["load the three guides"] = time.perf_counter() - t0
    costs["build_guides (text features)"] = median_seconds(lambda: build_guides(ensemble, config, G, None), repeats)
    t0 = time.perf_counter()
    evaluator = load_evaluator()
    costs["load the evaluator"] = time.perf_counter() - t0
    costs["judge: render 128 pairs"] = median_seconds(lambda: render_pairs(G, G, 128), repeats)
    img_f, img_t = render_pairs(G, G, 128)
    target = parse_target("sketch")
    costs["judge: evaluator on both sets"] = median_seconds(
        lambda: quality_from_images(evaluator, img_f, img_t, target), repeats
    )
    z = latents(G, 128, 0)
    costs["judge: true sketch renders"] = median_seconds(lambda: true_renders(z, "sketch"), repeats)
    truth = true_renders(z, "sketch")
    costs["judge: best-filter search"] = median_seconds(lambda: best_filter(img_f, truth), repeats)
    return costs


def main() -> None:
    """Print the iteration's parts and the fixed costs as two tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", default="8", help="CLIP views per image, comma-separated (the recipe's 8)")
    parser.add_argument("--batch", default="2", help="latents per iteration, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per part (median)")
    parser.add_argument("--skip-fixed", action="store_true", help="time only the iteration's parts")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import nada.toy.plugin  # noqa: F401

    print(f"| import nada.toy.plugin | {time.perf_counter() - t0:.3f} |")
    for batch in (int(b) for b in args.batch.split(",")):
        for views in (int(v) for v in args.views.split(",")):
            parts = iteration_parts(views, batch, args.repeats)
            print(f"| part (views {views}, batch {batch}) | seconds |\n| --- | --- |")
            for name, seconds in parts.items():
                print(f"| {name} | {seconds:.4f} |")
            print(f"| sum | {sum(parts.values()):.4f} |", flush=True)
    if not args.skip_fixed:
        print("| fixed cost | seconds |\n| --- | --- |")
        for name, seconds in fixed_costs(args.repeats).items():
            print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
