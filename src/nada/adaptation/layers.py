"""Which synthesis layers to train: layer-freezing strategies behind one small interface.

A strategy is parsed from a short spec and returns layer names of ``G.layer_table()``:

- ``all``: every synthesis layer (``conv1``, ``to_rgb1``, every ``convs.k`` and ``to_rgbs.j``). Under the
  official layer sets (``layer_sets="official"``) it is the official code's set instead: the learned
  constant ``input``, ``conv1`` and every ``convs.k``, no to_rgb layer.
- ``last:K``: the last K synthesis *blocks*. A block is everything that works at one resolution:
  at 4x4 the pair ``conv1`` + ``to_rgb1``; at resolution ``2**(j+3)`` the up-sampling conv
  ``convs.{2j}``, the conv ``convs.{2j+1}`` and ``to_rgbs.{j}``. ``last:1`` is the block of the
  output resolution; K may be at most the number of resolutions (log2(size) - 1).
- ``auto:K`` or ``auto:K:ITERS``: StyleGAN-NADA's adaptive layer freezing. A batch of z goes through
  the frozen mapping to w, is lifted to W+ (the same w in all ``n_latent`` rows), and ITERS plain
  SGD steps (default 1, learning rate 0.01 as in the reference code) are taken on the W+ codes alone
  to lower the CLIP global loss (at the model's logit scale) towards the target, through the
  generator being trained, with fresh noise per step as the official code renders it. The K W+ rows
  that moved most (mean absolute change over the style dimensions and the batch, as the official
  code scores them; ``score="l2"`` ranks by the L2 norm instead) are chosen; the computation is
  `auto_layer_scores`. The result is every layer that each chosen row *actually drives* according
  to ``layer_table()``:
  row 0 -> ``conv1``; row 1 -> ``to_rgb1`` and ``convs.0``; row k+1 -> ``convs.k``; row 2j+3 ->
  ``to_rgbs.j`` as well. The reference implementation maps row i to ``convs[i-2]`` (and rows 0/1
  to ``conv1``/``to_rgb1``), which is off by one: the layer it trains is driven by row i-1, and
  the to_rgb layers of rows 3, 5, ... are never trained. This module uses the true mapping by
  default, so an odd row selects two layers (a conv and a to_rgb) and ``auto:K`` may return more
  than K names; ``layer_sets="official"`` gives the official mapping (`official_layers_for_wplus`).
  SGD (not Adam) is deliberate: Adam's first step moves every coordinate by about the learning
  rate whatever its gradient, which would erase the ranking that the selection relies on.
- ``grad:K``: the K layers (each conv and each to_rgb is one unit) whose parameters receive the
  largest gradient (L2 norm over all of the layer's parameters) of the CLIP global loss, from one
  backward pass through the generator being trained (rendered with the selection's noise).
- ``NAME,NAME,...``: an explicit list of layer names, e.g. ``convs.4,convs.5,to_rgbs.2``; ``input``
  names the learned 4x4 constant.

The mapping network (``style.*``) is never trained; the learned constant only when named or under
the official layer sets.
Selection is a pure decision: it reads the generator's weights but never changes them, and it
leaves no gradients and no changed ``requires_grad`` flags behind (gradients are taken with
``torch.autograd.grad``, which does not touch ``.grad``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nada.config import LAYER_SET_CHOICES, SCORE_CHOICES
from nada.errors import NadaError
from nada.guidance import losses

# ---------------------------------------------------------------- layer bookkeeping


# Name of the learned 4x4 constant among trainable layer names (it drives no W+ row).
CONST = "input"


def layer_names(G: nn.Module) -> list[str]:
    """Every synthesis layer name of ``G.layer_table()``, in execution order."""
    return [info.name for info in G.layer_table()]


def trainable_names(G: nn.Module) -> list[str]:
    """The learned constant followed by every synthesis layer: all names a strategy may return."""
    return [CONST] + layer_names(G)


def official_all_layers(G: nn.Module) -> list[str]:
    """The official code's trained set without selection: the constant, ``conv1`` and every ``convs.k``."""
    return [CONST] + [info.name for info in G.layer_table() if info.kind == "conv"]


def synthesis_blocks(G: nn.Module) -> list[list[str]]:
    """Layer names grouped by resolution (the blocks of ``last:K``), from 4x4 up to the output size."""
    by_res: dict[int, list[str]] = {}
    for info in G.layer_table():
        by_res.setdefault(info.resolution, []).append(info.name)
    return [by_res[r] for r in sorted(by_res)]


def layers_for_wplus(G: nn.Module, indices: list[int]) -> list[str]:
    """Names of the layers driven by the given W+ rows, in ``layer_table()`` order."""
    wanted = set(int(i) for i in indices)
    return [info.name for info in G.layer_table() if info.wplus_index in wanted]


def official_layers_for_wplus(G: nn.Module, indices: list[int]) -> list[str]:
    """The official code's layers for W+ rows (row 0 -> conv1, 1 -> to_rgb1, i -> convs.{i-2}), table order."""
    wanted = {"conv1" if i == 0 else "to_rgb1" if i == 1 else f"convs.{i - 2}" for i in (int(i) for i in indices)}
    return [name for name in layer_names(G) if name in wanted]


def layer_parameters(G: nn.Module, names: list[str]) -> list[nn.Parameter]:
    """All parameters of the named synthesis layers, in the order given."""
    return [p for name in names for p in G.get_submodule(name).parameters()]


def synthesis_parameters(G: nn.Module) -> list[nn.Parameter]:
    """All parameters of the constant and every synthesis layer (what an optimizer may ever touch)."""
    return layer_parameters(G, trainable_names(G))


def set_trainable(G: nn.Module, names: list[str]) -> None:
    """Freeze every parameter of G, then let only the named synthesis layers require gradients."""
    known = set(trainable_names(G))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NadaError(f"unknown layer names {unknown}: the generator's synthesis layers are {sorted(known)}")
    G.requires_grad_(False)
    for p in layer_parameters(G, names):
        p.requires_grad_(True)


# ---------------------------------------------------------------- selection interface


@dataclass(frozen=True)
class SelectionContext:
    """What a data-driven strategy may use: latents from the frozen mapping, noise and the image loss.

    ``sample_w(n)`` returns w [n, style_dim] (no gradient) drawn from the run's own random generator;
    ``image_loss(img)`` maps images [N, 3, H, W] in [-1, 1] to a scalar, the (ensemble-weighted) CLIP
    global loss towards the target at each model's logit scale; ``sample_noise(n)`` returns fresh
    per-layer noise [n, 1, r, r] for one rendering (None: the selection renders with the stored noise).
    ``chunk`` (0: the whole batch) is how many latents ``auto`` renders and back-propagates at a time.
    """

    sample_w: Callable[[int], torch.Tensor]
    image_loss: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 8
    sample_noise: Callable[[int], list[torch.Tensor]] | None = None
    chunk: int = 0

    def noise(self, n: int) -> list[torch.Tensor] | None:
        """Noise for one rendering of n images: fresh from ``sample_noise``, or None for the stored buffers."""
        return None if self.sample_noise is None else self.sample_noise(n)


class LayerSelector(ABC):
    """A layer-freezing strategy: ``select(G, ctx)`` names the synthesis layers to train next."""

    spec: str
    # Static strategies give the same answer every time, so the loop selects them only once.
    dynamic: bool = False

    @abstractmethod
    def validate(self, G: nn.Module) -> None:
        """Raise NadaError if this strategy cannot be applied to G (e.g. K too large)."""

    @abstractmethod
    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        """Layer names of ``G.layer_table()`` to train, in table order; never changes G."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class AllLayers(LayerSelector):
    """Every synthesis layer; under the official layer sets the constant, conv1 and the convs."""

    def __init__(self, layer_sets: str = "nada") -> None:
        self.spec, self.layer_sets = "all", layer_sets

    def validate(self, G: nn.Module) -> None:
        pass

    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        return official_all_layers(G) if self.layer_sets == "official" else layer_names(G)


class NamedLayers(LayerSelector):
    """An explicit, fixed list of layer names."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(dict.fromkeys(names))  # drop repeats, keep order
        self.spec = ",".join(self.names)

    def validate(self, G: nn.Module) -> None:
        known = trainable_names(G)
        unknown = [n for n in self.names if n not in known]
        if unknown:
            raise NadaError(f"layers {unknown} do not exist in this generator: choose among {known}")

    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        order = trainable_names(G)
        return sorted(self.names, key=order.index)


class LastBlocks(LayerSelector):
    """The last K synthesis blocks (all layers of the K highest resolutions)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.spec = f"last:{k}"

    def validate(self, G: nn.Module) -> None:
        n = len(synthesis_blocks(G))
        if self.k > n:
            raise NadaError(
                f"layers {self.spec!r} asks for {self.k} blocks but this {G.size}x{G.size} generator has {n}: "
                f"use K <= {n}"
            )

    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        self.validate(G)
        return [name for block in synthesis_blocks(G)[-self.k :] for name in block]


def wplus_row_scores(
    G: nn.Module,
    w: torch.Tensor,
    image_loss: Callable[[torch.Tensor], torch.Tensor],
    noise: Callable[[int], list[torch.Tensor] | None],
    iters: int = 1,
    lr: float = 0.01,
    score: str = "mean_abs",
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each W+ row moves in ``iters`` SGD steps on the loss: scores [n_latent] and the first loss.

    w [N, style_dim] is lifted to W+ (every row the same w); ``noise(N)`` gives the per-layer noise of
    each rendering (None: stored buffers). ``score`` "mean_abs" averages |change| over the style
    dimensions, "l2" takes each row's L2 norm; both then average over the batch. ``chunk`` (0: all N)
    renders that many latents at a time; ``image_loss`` must then be a mean over its batch (as CLIP's
    global loss is), so that each latent's gradient stays the same.
    """
    if score not in SCORE_CHOICES:
        raise NadaError(f"unknown selection score {score!r}: use one of {', '.join(SCORE_CHOICES)}")
    ws0 = G.broadcast_w(w.detach())  # [N, n_latent, style_dim]
    ws, first = ws0.clone(), None
    # Only the codes need gradients; freezing G meanwhile saves the weight-gradient work.
    with _requires_grad(list(G.parameters()), False):
        for _ in range(iters):
            if 0 < chunk < ws.shape[0]:
                loss, grad = _chunked_code_gradient(G, ws, image_loss, noise(ws.shape[0]), chunk)
            else:
                ws.requires_grad_(True)
                loss = image_loss(G.synthesis(ws, noise=noise(ws.shape[0]), noise_mode="const"))
                (grad,) = torch.autograd.grad(loss, [ws])
            ws = (ws - lr * grad).detach()
            first = loss.detach() if first is None else first
    change = ws - ws0
    per_row = change.abs().mean(dim=-1) if score == "mean_abs" else change.norm(dim=-1)
    return per_row.mean(dim=0), first


def _chunked_code_gradient(
    G: nn.Module,
    ws: torch.Tensor,
    image_loss: Callable[[torch.Tensor], torch.Tensor],
    noise: list[torch.Tensor] | None,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch-mean loss and its gradient wrt W+ codes [N, n_latent, D], rendering ``chunk`` codes at a time.

    Each chunk's mean loss is weighted by its share of the batch, so the sum and every per-code gradient equal
    those of one pass over all N; ``noise`` (per-layer [N or 1, 1, r, r], or None) is sliced along.
    """
    n, losses, grads = ws.shape[0], [], []
    for start in range(0, n, chunk):
        part = ws[start : start + chunk].detach().requires_grad_(True)
        part_noise = None if noise is None else [t[start : start + chunk] if t.shape[0] == n else t for t in noise]
        loss = image_loss(G.synthesis(part, noise=part_noise, noise_mode="const")) * (part.shape[0] / n)
        (grad,) = torch.autograd.grad(loss, [part])
        losses.append(loss.detach())
        grads.append(grad)
    return torch.stack(losses).sum(), torch.cat(grads)


def auto_layer_scores(
    G: nn.Module,
    clip: Any,
    target: str | torch.Tensor,
    z: torch.Tensor,
    noise: Sequence[torch.Tensor] | None = None,
    iters: int = 1,
    lr: float = 0.01,
    *,
    score: str = "mean_abs",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official adaptive layer selection's row scores [n_latent] and its loss, for explicit latents.

    z [N, style_dim] goes through G's mapping and is lifted to W+; ``iters`` plain SGD steps (lr) lower
    the global CLIP loss (1 - logit_scale * cos / 100, at each model's own logit scale) of the images
    towards ``target`` (a text, encoded bare as the official code does, or unit features [T, D]).
    ``clip`` is a ClipModel or a list of (ClipModel, weight). ``noise`` is a per-layer list of tensors
    [N or 1, 1, r, r] used in every step, or None for fresh standard normal noise per step, drawn from
    ``generator`` (on G's device) or the global RNG. Returns (scores, loss of the first step);
    ``auto:K`` picks the K rows with the highest scores.
    """

    ensemble = [(m, float(wt)) for m, wt in clip] if isinstance(clip, (list, tuple)) else [(clip, 1.0)]
    with torch.no_grad():
        feats = [m.encode_text([target]) if isinstance(target, str) else target for m, _ in ensemble]
        w = G.mapping(z.to(next(G.parameters()).device))

    def image_loss(img: torch.Tensor) -> torch.Tensor:
        parts = [wt * losses.global_loss(m.encode_image(img), f, m.logit_scale) for (m, wt), f in zip(ensemble, feats)]
        return torch.stack(parts).sum()

    def noise_for(n: int) -> list[torch.Tensor]:
        if noise is not None:
            return list(noise)
        return fresh_noise(G, n, generator, w.device)

    return wplus_row_scores(G, w, image_loss, noise_for, iters, lr, score)


def fresh_noise(G: nn.Module, n: int, generator: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
    """Per-layer standard normal noise [n, 1, r, r] drawn on ``device`` from ``generator`` (None: global RNG)."""
    return [torch.randn(n, 1, *b.shape[2:], generator=generator, device=device) for b in G.noise_buffers()]


class AdaptiveWPlus(LayerSelector):
    """StyleGAN-NADA's adaptive layer freezing: the layers driven by the K W+ rows that move most (see module doc)."""

    dynamic = True

    def __init__(
        self, k: int, iters: int = 1, lr: float = 0.01, score: str = "mean_abs", layer_sets: str = "nada"
    ) -> None:
        self.k, self.iters, self.lr, self.score, self.layer_sets = k, iters, lr, score, layer_sets
        self.spec = f"auto:{k}" if iters == 1 else f"auto:{k}:{iters}"

    def validate(self, G: nn.Module) -> None:
        if self.k > G.n_latent:
            raise NadaError(
                f"layers {self.spec!r} asks for {self.k} W+ rows but this {G.size}x{G.size} generator "
                f"has {G.n_latent}: use K <= {G.n_latent}"
            )

    def row_scores(self, G: nn.Module, ctx: SelectionContext) -> torch.Tensor:
        """How far each W+ row moves under the global loss: [n_latent] (see `wplus_row_scores`)."""
        w = ctx.sample_w(ctx.batch_size)
        return wplus_row_scores(G, w, ctx.image_loss, ctx.noise, self.iters, self.lr, self.score, ctx.chunk)[0]

    def rows(self, G: nn.Module, ctx: SelectionContext) -> list[int]:
        """The K chosen W+ rows, highest score first."""
        # A stable descending sort makes ties (e.g. rows with no effect) resolve by row order.
        return torch.argsort(self.row_scores(G, ctx).cpu(), descending=True, stable=True)[: self.k].tolist()

    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        self.validate(G)
        assert ctx is not None, "auto layer selection needs a SelectionContext (latents and a loss)"
        rows = self.rows(G, ctx)
        return official_layers_for_wplus(G, rows) if self.layer_sets == "official" else layers_for_wplus(G, rows)


class GradNorm(LayerSelector):
    """The K layers whose parameters get the largest global-loss gradient norm."""

    dynamic = True

    def __init__(self, k: int) -> None:
        self.k = k
        self.spec = f"grad:{k}"

    def validate(self, G: nn.Module) -> None:
        n = len(layer_names(G))
        if self.k > n:
            raise NadaError(
                f"layers {self.spec!r} asks for {self.k} layers but this generator has {n} synthesis layers: "
                f"use K <= {n}"
            )

    def layer_scores(self, G: nn.Module, ctx: SelectionContext) -> dict[str, float]:
        """Layer name -> L2 norm of the global-loss gradient over all of that layer's parameters."""
        names = layer_names(G)
        params = {name: list(G.get_submodule(name).parameters()) for name in names}
        flat = [p for name in names for p in params[name]]
        with _requires_grad(flat):
            w = ctx.sample_w(ctx.batch_size).detach()
            loss = ctx.image_loss(G.synthesis(G.broadcast_w(w), noise=ctx.noise(w.shape[0]), noise_mode="const"))
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
        norms: dict[str, float] = {}
        it = iter(grads)
        for name in names:
            sq = sum(float(g.double().pow(2).sum()) if g is not None else 0.0 for g in (next(it) for _ in params[name]))
            norms[name] = sq**0.5
        return norms

    def select(self, G: nn.Module, ctx: SelectionContext | None = None) -> list[str]:
        self.validate(G)
        assert ctx is not None, "grad layer selection needs a SelectionContext (latents and a loss)"
        scores = self.layer_scores(G, ctx)
        names = layer_names(G)
        ranked = sorted(names, key=lambda n: -scores[n])  # sorted() is stable: ties keep table order
        chosen = set(ranked[: self.k])
        return [n for n in names if n in chosen]


class _requires_grad:
    """Context manager: parameters get ``requires_grad=flag`` inside, their previous flags come back afterwards."""

    def __init__(self, params: list[nn.Parameter], flag: bool = True) -> None:
        self.params, self.flag = params, flag
        self.saved: list[bool] = []

    def __enter__(self) -> None:
        self.saved = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(self.flag)

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.params, self.saved):
            p.requires_grad_(flag)


# ---------------------------------------------------------------- parsing

LAYER_SPEC_HELP = "all | last:K | auto:K[:ITERS] | grad:K | NAME,NAME,... (e.g. convs.4,to_rgbs.2; input: the constant)"


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise NadaError(f"bad layers spec {spec!r}: {text!r} is not a positive integer (use {LAYER_SPEC_HELP})")
    return value


def parse_layers(spec: str, *, score: str = "mean_abs", layer_sets: str = "nada") -> LayerSelector:
    """Parse a layer spec such as ``"auto:3"``, ``"grad:4"``, ``"last:2"``, ``"all"`` into a strategy.

    ``score`` is how ``auto`` ranks W+ rows (see `wplus_row_scores`); ``layer_sets`` "official" gives
    ``all`` and ``auto`` the official code's layer sets and row -> layer mapping.
    """
    if score not in SCORE_CHOICES:
        raise NadaError(f"unknown selection score {score!r}: use one of {', '.join(SCORE_CHOICES)}")
    if layer_sets not in LAYER_SET_CHOICES:
        raise NadaError(f"unknown layer sets {layer_sets!r}: use one of {', '.join(LAYER_SET_CHOICES)}")
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "all" and not rest:
        return AllLayers(layer_sets)
    if kind in ("last", "grad", "auto") and rest:
        parts = rest.split(":")
        if kind == "auto" and len(parts) in (1, 2):
            iters = _positive_int(parts[1], text) if len(parts) == 2 else 1
            return AdaptiveWPlus(_positive_int(parts[0], text), iters=iters, score=score, layer_sets=layer_sets)
        if len(parts) != 1:
            raise NadaError(f"bad layers spec {text!r}: use {LAYER_SPEC_HELP}")
        k = _positive_int(parts[0], text)
        return {"last": LastBlocks, "grad": GradNorm}[kind](k)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names and all(_looks_like_layer(n) for n in names):
        return NamedLayers(names)
    raise NadaError(f"bad layers spec {text!r}: use {LAYER_SPEC_HELP}")


def _looks_like_layer(name: str) -> bool:
    """True for names shaped like synthesis layers (conv1, to_rgb1, convs.N, to_rgbs.N)."""
    if name in ("conv1", "to_rgb1", CONST):
        return True
    head, _, idx = name.partition(".")
    return head in ("convs", "to_rgbs") and idx.isdigit()
