"""Train the toy translator's networks (`nada.toy.translator`) on fresh renders of all six styles, and pack them.

    python -m nada.toy.translator_train reader --out runs/reader.pt --minutes 50 --until 1700
    python -m nada.toy.translator_train prior --out runs/prior.pt --minutes 60 --until 2550
    python -m nada.toy.translator_train pack --prior runs/prior.pt --reader runs/reader.pt \\
        --out src/nada/assets/toy/translator

Both resume from ``--out`` (a training state: weights, Adam state, step, and what kind of network it is, checked on
resume) and save every 50 steps; one step is 32 fresh renders in random styles, so the data never repeat. The
prior's network runs under bf16 autocast on the CPU (measured 1.6x faster here, the same loss); 10 % of its
examples lose the style, another 10 % the face map (classifier-free guidance needs both unconditioned).
`pack` writes the float16 weights the package ships (tensors only). The shipped files are the reader at 1700
steps and the prior at 2550 (chosen on validation latents, docs/toy_quality.md "The toy translator"), trained by
`benchmarks/probe_toy_structure_prior.py` (``train-annotator --map parts_hair``; ``train --map parts_hair
--predicts x0 --t-range 0.2 0.9 --bf16``), which runs these same steps from another draw of the initial weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nada.io import atomic_torch_save
from nada.toy import render as R
from nada.toy.translator import (
    NO_MAP,
    PRIOR_FILE,
    READER_FILE,
    UNCONDITIONED,
    PartPrior,
    PartReader,
    alpha_bar,
    face_maps,
    load_network,
)
from nada.weights.safe_load import torch_load

BATCH = 32
PRIOR_TIMES = (0.2, 0.9)  # the noise band translations start from (t0 0.7) and pass through
PRIOR_META = {"map": "parts_hair", "predicts": "x0"}
READER_META = {"map": "parts_hair"}


def styled_batch(
    step: int, salt: int, face_seed: int
) -> tuple[torch.Tensor, np.ndarray, R.FaceParams, np.random.Generator]:
    """Step ``step``'s renders [BATCH, 3, 64, 64] in [-1, 1], their style indices [BATCH], faces, and the random
    stream that drew the styles (for the step's other draws)."""
    rng = np.random.default_rng([step, salt])
    styles = rng.integers(0, len(R.STYLES), BATCH)
    faces = R.sample_params(BATCH, seed=step + face_seed)
    return R.to_tensor(R.render_mixed(faces, [R.STYLES[i] for i in styles], step)), styles, faces, rng


def prior_loss(model: PartPrior, step: int, bf16: bool = True) -> torch.Tensor:
    """Mean squared error of the prior's clean-image estimate on step ``step``'s renders, noised on PRIOR_TIMES."""
    x0, styles, faces, rng = styled_batch(step, 7, 20_000)
    s = face_maps(faces) * 2 - 1
    drop = rng.random(BATCH)
    y = torch.as_tensor(styles)
    y[torch.as_tensor(drop < 0.1)] = UNCONDITIONED
    s[torch.as_tensor((drop >= 0.1) & (drop < 0.2))] = NO_MAP
    g = torch.Generator().manual_seed(step)
    t = PRIOR_TIMES[0] + (PRIOR_TIMES[1] - PRIOR_TIMES[0]) * torch.rand(BATCH, generator=g)
    ab = alpha_bar(t)[:, None, None, None]
    noised = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        estimate = model(noised, t, y, s)
    return (estimate.float() - x0).pow(2).mean()


def reader_loss(model: PartReader, step: int) -> torch.Tensor:
    """Binary cross-entropy of the reader's maps against `face_maps` on step ``step``'s renders."""
    x, _, faces, _ = styled_batch(step, 11, 40_000)
    return F.binary_cross_entropy_with_logits(model.logits(x), face_maps(faces))


def optimise(
    out: Path,
    model: nn.Module,
    lr: float,
    minutes: float,
    loss_at: Callable[[int], torch.Tensor],
    meta: dict[str, str],
    earlier: dict[str, str] | None = None,
    until: int | None = None,
) -> int:
    """Adam on ``loss_at(step)``, resumed from ``out`` when it exists, until ``minutes`` have passed or step ``until``
    is reached; saves every 50 steps with ``meta`` (what kind of network it is), which a resumed file must match
    (``earlier``: what files written before a key existed hold). Returns the step reached."""
    opt = torch.optim.Adam(model.parameters(), lr)
    step = 0
    if out.exists():
        state = torch_load(out, what="training state", fix="delete it to start afresh")
        held = {key: state.get(key, (earlier or {}).get(key)) for key in meta}
        if held != meta:
            raise SystemExit(f"{out} holds a network of {held}, not {meta}: give another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
    deadline, losses = time.time() + minutes * 60, []
    while time.time() < deadline and (until is None or step < until):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f}", flush=True)
            save_state(out, model, opt, step, meta)
    save_state(out, model, opt, step, meta)
    return step


def save_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, meta: dict[str, str]) -> None:
    """Write the training state and ``meta`` atomically (tensors and plain values only)."""
    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, **meta}, out)


def pack(prior: Path, reader: Path, out: Path) -> list[Path]:
    """Write the float16 weights of two training states as the package's translator files in folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, model, name in ((prior, PartPrior(), PRIOR_FILE), (reader, PartReader(), READER_FILE)):
        net = load_network(path, model, "training state")
        target = out / name
        atomic_torch_save({k: v.half() for k, v in net.state_dict().items()}, target)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``prior``, ``reader`` (train or resume) and ``pack``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prior", "reader"):
        p = sub.add_parser(name, help=f"train or resume the {name}")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--minutes", type=float, default=30.0)
        p.add_argument("--until", type=int, default=None, help="stop at this step (the shipped prior: 2550)")
    pk = sub.add_parser("pack", help="write the shipped float16 files")
    pk.add_argument("--prior", type=Path, required=True)
    pk.add_argument("--reader", type=Path, required=True)
    pk.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.command == "prior":
        model = PartPrior()
        loss_at: Callable[[int], torch.Tensor] = lambda step: prior_loss(model, step)  # noqa: E731
        optimise(args.out, model, 3e-4, args.minutes, loss_at, PRIOR_META, until=args.until)
    elif args.command == "reader":
        reader = PartReader()
        loss_at = lambda step: reader_loss(reader, step)  # noqa: E731
        optimise(args.out, reader, 1e-3, args.minutes, loss_at, READER_META, until=args.until)
    else:
        for path in pack(args.prior, args.reader, args.out):
            print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
