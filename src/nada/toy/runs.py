"""Resumable training runs of the toy world: the state file, the settings check and the log."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nada.errors import NadaError
from nada.generator.checkpoints import load_generator
from nada.io import atomic_torch_save
from nada.toy import render as R
from nada.weights.safe_load import torch_load


def save_state(
    path: Path,
    version: int,
    config: dict[str, Any],
    step: int,
    elapsed_s: float,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None,
) -> None:
    """Atomically write everything needed to continue: weights, optimiser, torch RNG, step, seconds so far.

    ``extra`` adds entries of tensors and plain data (e.g. a second copy of the weights) under their own keys.
    """
    state = {
        **(extra or {}),
        "version": version,
        "config": config,
        "step": step,
        "elapsed_s": elapsed_s,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    atomic_torch_save(state, path)


def load_state(path: Path, version: int) -> dict[str, Any]:
    """Read a state file written by ``save_state`` (tensors and plain data only)."""
    state = torch_load(path, what="training state", fix="delete it to start over")
    if not isinstance(state, dict) or state.get("version") != version:
        got = state.get("version") if isinstance(state, dict) else None
        raise NadaError(f"training state {path} has version {got}, expected {version}: delete it to start over")
    return state


def check_resume(saved: dict[str, Any], current: dict[str, Any], free: tuple[str, ...], path: Path) -> None:
    """Refuse to continue a run whose settings differ, except those named in ``free``."""
    diff = {k: (saved.get(k), v) for k, v in current.items() if k not in free and saved.get(k) != v}
    if diff:
        names = ", ".join(f"{k} (saved {a}, now {b})" for k, (a, b) in diff.items())
        raise NadaError(f"{path} belongs to a run with other settings: {names}; use the same options or another --out")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_run_dir(path: Path) -> Path:
    """Create a run folder (and its parents); a link to a folder that does not exist is a clear error."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise NadaError(
            f"the run folder {path} is a link to {path.readlink()}, which does not exist: create that folder or choose "
            "another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup_logging(log: logging.Logger, path: Path, echo: bool = True) -> None:
    """Log INFO lines to ``path`` (appending, so a resumed run keeps one log) and, with ``echo``, to stdout.

    Each handler is added once; a file handler of an earlier run in the same process is closed.
    """
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) != path.resolve():
            log.removeHandler(h)
            h.close()
    if not any(isinstance(h, logging.FileHandler) for h in log.handlers):
        fh = logging.FileHandler(path)
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)
    if echo and not any(type(h) is logging.StreamHandler for h in log.handlers):
        log.addHandler(logging.StreamHandler(sys.stdout))


@functools.lru_cache(maxsize=4)
def frozen_generators(paths: str) -> tuple[torch.nn.Module, ...]:
    """The generators of a comma-separated list (names or checkpoints), loaded once per process, frozen, eval mode."""
    names = [p.strip() for p in paths.split(",") if p.strip()]
    return tuple(load_generator(name).eval().requires_grad_(False) for name in names)


@torch.no_grad()
def draw_outputs(paths: str, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped outputs [n,3,64,64] in [-1,1] of the generators ``paths`` for n latents drawn from ``rng`` (a generator
    per image, then the latents); the latents [n, style_dim]; which generator drew each image [n]."""
    gens = frozen_generators(paths)
    which = torch.from_numpy(rng.integers(len(gens), size=n))
    z = torch.from_numpy(rng.standard_normal((n, gens[0].style_dim)).astype(np.float32))
    out = torch.empty(n, 3, R.IMAGE_SIZE, R.IMAGE_SIZE)
    for g, gen in enumerate(gens):
        mine = which == g
        if mine.any():
            out[mine] = gen(z[mine], noise_mode="const").clamp(-1, 1)
    return out, z, which
