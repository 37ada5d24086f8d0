"""Is the toy CLIP a good guide, and can the toy generator draw the target? Three measurements.

In the toy world each latent z stands for known faces (``generator_train.face_latent``), so the true
target-style render of the face that G_frozen(z) draws exists. That allows measurements that real
StyleGAN-NADA cannot make (none of them is used by adaptation):

1. **Where the guide's optimum is.** The directional loss of frozen -> X for: the true target render of
   the same faces, the other styles, and (``--adapted``) the outputs of adapted generators. If a true
   render scores worse than an adapted output that the evaluator rejects, the CLIP prefers the exploit.
2. **Whether the way there is downhill.** The loss along the pixel blend (1 - t) G_frozen(z) + t target
   for t from 0.05 to 1. A loss that stays near 1 for small t means small steps towards the true style
   do not register, while colour changes do (the gradient then goes elsewhere).
3. **What the generator can reach (``--oracle``).** G_train fine-tuned by pixel regression on the true
   target renders (supervised, with the adaptation's optimiser, batch and learning rate), then judged
   by the evaluator like an adaptation. Its content-kept number is the ceiling that any adaptation of
   this generator can reach, since the evaluator reads the frozen images as they are drawn.

    python benchmarks/bench_toy_guidance.py                                      # shipped assets, sketch
    python benchmarks/bench_toy_guidance.py --target watercolor --adapted runs/wc/generator.pt --oracle
    python benchmarks/bench_toy_guidance.py --clip /tmp/other_clip_folder --adapted a.pt,b.pt
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable

import torch

BLEND_STEPS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="sketch", help="target toy style (source text: photo)")
    p.add_argument("--clip", default="toy", help="CLIP: 'toy', a model folder, or an ensemble 'a,b'")
    p.add_argument("--generator", default="toy", help="base generator: 'toy' or a checkpoint path")
    p.add_argument("--adapted", default="", help="comma-separated adapted generator checkpoints to score")
    p.add_argument("--oracle", action="store_true", help="also run the supervised fine-tune (measurement 3)")
    p.add_argument("--oracle-steps", type=int, default=300)
    p.add_argument("--oracle-lr", type=float, default=0.005)
    p.add_argument("--n", type=int, default=128, help="latents measured")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p.parse_args(argv)


def true_renders(z: torch.Tensor, style: str, seed: int = 3) -> torch.Tensor:
    """Renders [N,3,64,64] in [-1,1] of the faces that latents z stand for, in ``style``."""
    from nada.toy import render as R
    from nada.toy.generator_train import face_params

    return R.render_tensor(face_params(z), style, seed=seed)


def style_rate(evaluator, images: torch.Tensor, style: str) -> float:
    """Share of images the evaluator puts in ``style``."""
    from nada.toy.evaluator import predict_all

    preds = predict_all(evaluator, images)
    return float((preds["style"] == evaluator.classes["style"].index(style)).float().mean())


def oracle_finetune(
    G_frozen,
    z_eval: torch.Tensor,
    style: str,
    steps: int,
    lr: float,
    batch: int = 2,
    seed: int = 1,
    targets: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> torch.nn.Module:
    """G_frozen's copy trained to draw the true ``style`` renders of its latents (MSE, Adam as in adaptation);
    ``seed`` draws the training latents. ``targets(z, step)`` [N, 3, H, W], when given, replaces the true renders."""
    from nada.config import AdaptConfig

    d = AdaptConfig()
    G = copy.deepcopy(G_frozen).train().requires_grad_(True)
    opt = torch.optim.Adam(
        [p for n, p in G.named_parameters() if not n.startswith("style.")], lr=lr, betas=(d.beta1, d.beta2)
    )
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        z = torch.randn(batch, G.style_dim, generator=gen)
        target = true_renders(z, style, seed=step) if targets is None else targets(z, step)
        loss = (G(z, noise_mode="const") - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return G.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from nada.generator.checkpoints import load_generator
    from nada.guidance import losses
    from nada.guidance.clip import load_clip_ensemble
    from nada.toy import render as R
    from nada.toy.evaluator import load_evaluator
    from nada.toy.quality import measure_quality

    if args.target not in R.STYLES or args.target == "photo":
        print(
            f"bench_toy_guidance: error: --target must be a toy style other than photo: {', '.join(R.STYLES[1:])}",
            file=sys.stderr,
        )
        return 2
    G0 = load_generator(args.generator).eval()
    guides = load_clip_ensemble(args.clip)
    evaluator = load_evaluator()
    z = torch.randn(args.n, G0.style_dim, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        frozen = G0(z, noise_mode="const")
        # Per guide: weight, text direction and features of the frozen images, computed once.
        anchors = [
            (w, losses.text_direction(clip, "photo", args.target), clip.encode_image(frozen)) for clip, w in guides
        ]

    def loss_of(x: torch.Tensor) -> float:
        """Weighted mean over the guides of the directional loss frozen -> x."""
        total = sum(
            w * float(losses.directional_loss(f0, clip.encode_image(x), d))
            for (clip, _), (w, d, f0) in zip(guides, anchors)
        )
        return total / sum(w for w, _, _ in anchors)

    with torch.no_grad():
        print(
            f"1. directional loss photo -> {args.target} (frozen -> X; 0 = along the text direction) "
            f"and evaluator {args.target} rate, {args.n} latents"
        )
        target = true_renders(z, args.target)
        for style in R.STYLES:
            x = true_renders(z, style)
            print(f"   true {style:<12s} loss {loss_of(x):.3f}   evaluator {style_rate(evaluator, x, args.target):.2f}")
        for path in filter(None, args.adapted.split(",")):
            x = load_generator(path).eval()(z, noise_mode="const")
            print(f"   adapted {path}: loss {loss_of(x):.3f}   evaluator {style_rate(evaluator, x, args.target):.2f}")
        print(f"2. loss along the blend (1 - t) frozen + t true {args.target}")
        print("   " + "  ".join(f"t={t:g}: {loss_of((1 - t) * frozen + t * target):.3f}" for t in BLEND_STEPS))
    if args.oracle:
        t0 = time.time()
        G = oracle_finetune(G0, z, args.target, args.oracle_steps, args.oracle_lr)
        q = measure_quality(G0, G, evaluator, args.target, n=args.n)
        per_key = "  ".join(f"{k} {v:.2f}" for k, v in q.content_per_key.items())
        print(
            f"3. supervised fine-tune to true {args.target} renders "
            f"({args.oracle_steps} steps, lr {args.oracle_lr}, {time.time() - t0:.0f} s):"
        )
        print(
            f"   target {q.target_rate:.2f}  content kept {q.content_kept:.2f} "
            f"(mean {q.content_kept_mean:.2f}: {per_key})  diversity {q.diversity_ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
