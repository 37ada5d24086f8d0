"""The strict toy judge at work: verdicts for any images, the filter table, and paired fidelity.

- ``verdicts``: per image the evaluator's style (possibly "none"), its reject score (the probability
  of "none") and the attributes; plus the share of images in each style. ``nada toy judge`` prints it.
- ``filter_table``: for every filter of ``nada.toy.filters.SUITE`` applied to the same images, the
  share judged to be in each style. A judge that a photo filter cannot fool keeps every entry of a
  non-photo style at <= 5 % on unadapted faces.
- ``stroke_distance``: per latent, how far an image is from the true render of the same face in the
  target style, measured on gradient-magnitude maps of the luma (Sobel after a Gaussian of
  ``STROKE_SIGMA`` = 2 pixels). Those maps are where outlines, strokes and hatched areas are; a
  uniform wash, tint or brightness shift barely moves them, so a filter cannot get close by matching
  mean colour, and a drawing is close only if its lines sit where the true render's do. The 2-pixel
  scale averages out what is random in a true render (paper grain, the placement of single hatching
  lines; docs/toy_quality.md compares the scales).
  ``dark_iou`` is the share of dark pixels (ink) that an image and the true render have in common.

Images are [N, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nada.toy import filters as toy_filters
from nada.toy import render as R
from nada.toy.evaluator import Evaluator, predict_all
from nada.toy.generator_train import face_params

STROKE_SIGMA = 2.0  # pixels; the scale of face parts, above the texture of a single hatching line
INK = 0.45  # luma in [0, 1] below which a pixel counts as a dark stroke


@torch.no_grad()
def verdicts(
    evaluator: "Evaluator",
    images: torch.Tensor,
    names: Sequence[str] | None = None,
    target: str | None = None,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Per image {style, reject_score, attributes} and the share per style (and of ``target``, when given)."""
    styles = evaluator.classes["style"]
    chunks = range(0, len(images), batch_size)
    probs = torch.cat([evaluator.style_probabilities(images[i : i + batch_size]) for i in chunks])

    preds = predict_all(evaluator, images, batch_size)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    attrs = [k for k in evaluator.classes if k != "style"]
    per_image = [
        {
            "image": name,
            "style": styles[int(preds["style"][i])],
            "reject_score": round(float(probs[i, -1]), 4),
            "attributes": {k: evaluator.classes[k][int(preds[k][i])] for k in attrs},
        }
        for i, name in enumerate(names)
    ]
    rates = {s: float((preds["style"] == j).float().mean()) for j, s in enumerate(styles)}
    out: dict[str, Any] = {"n": len(images), "rates": rates, "images": per_image}
    if target is not None:
        out["target"] = target
        out["target_rate"] = rates[target]
    return out


@torch.no_grad()
def style_rates(evaluator: "Evaluator", images: torch.Tensor) -> dict[str, float]:
    """Share of images [N,3,H,W] the evaluator puts in each of its style classes."""

    pred = predict_all(evaluator, images)["style"]
    return {s: float((pred == j).float().mean()) for j, s in enumerate(evaluator.classes["style"])}


def filter_table(
    evaluator: "Evaluator", faces: torch.Tensor, suite: dict[str, toy_filters.Chain] | None = None
) -> dict[str, dict[str, Any]]:
    """Per filter name: {"held_out": bool, "rates": share per style} for the filter applied to ``faces``."""
    suite = toy_filters.SUITE if suite is None else suite
    held = {toy_filters.chain_name(c) for c in toy_filters.HELD_OUT}
    return {
        name: {"held_out": name in held, "rates": style_rates(evaluator, toy_filters.apply_chain(faces, chain))}
        for name, chain in suite.items()
    }


def worst_filter(table: dict[str, dict[str, Any]], style: str) -> tuple[str, float]:
    """The filter of ``filter_table``'s result judged ``style`` most often, and that share."""
    name = max(table, key=lambda k: table[k]["rates"][style])
    return name, table[name]["rates"][style]


def as_shown(img: torch.Tensor) -> torch.Tensor:
    """Images [N,3,H,W] clipped to [-1, 1], as every saved image shows them (generators overshoot the range)."""
    return img.clamp(-1, 1)


def stroke_map(img: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude [N, 1, H, W] (luma in [0, 1] per pixel) at STROKE_SIGMA, of images as shown."""
    luma = toy_filters.luminance(as_shown(img))
    gx, gy = toy_filters.luma_gradients(toy_filters.gaussian_blur(luma, STROKE_SIGMA))
    gx, gy = 2 * gx, 2 * gy  # the Sobel sum over its 4 weights, the scale the judge's numbers were measured in
    return (gx.pow(2) + gy.pow(2) + 1e-12).sqrt()


def stroke_distance(img: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image [N]: mean absolute difference of the stroke maps of ``img`` and ``truth`` (both [N,3,H,W])."""
    assert img.shape == truth.shape, f"paired images must match: {tuple(img.shape)} vs {tuple(truth.shape)}"
    return (stroke_map(img) - stroke_map(truth)).abs().mean((1, 2, 3))


def dark_mask(img: torch.Tensor) -> torch.Tensor:
    """Dark pixels [N, 1, H, W] (1.0 where the luma after a 1-pixel blur is below INK) of images [N,3,H,W] as shown."""
    return (toy_filters.luminance(toy_filters.gaussian_blur(as_shown(img), 1.0)) < INK).float()


def dark_iou(img: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image [N]: intersection over union of the dark pixels (luma < INK after a 1-pixel blur) of both."""
    return _mask_iou(dark_mask(img), dark_mask(truth))


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((1, 2, 3)) / ((a + b).clamp(max=1).sum((1, 2, 3)) + 1e-6)


class TruthMaps:
    """The true renders [N,3,H,W] with their stroke map and dark mask, computed once for many comparisons."""

    def __init__(self, truth: torch.Tensor) -> None:
        self.truth, self.strokes, self.dark = truth, stroke_map(truth), dark_mask(truth)

    def stroke(self, img: torch.Tensor) -> float:
        """Mean stroke distance of images [N,3,H,W] in [-1, 1] to these renders."""
        assert img.shape == self.truth.shape, (
            f"paired images must match: {tuple(img.shape)} vs {tuple(self.truth.shape)}"
        )
        return float((stroke_map(img) - self.strokes).abs().mean((1, 2, 3)).mean())

    def fidelity(self, img: torch.Tensor) -> dict[str, float]:
        """`fidelity` of images [N,3,H,W] in [-1, 1] to these renders (the same numbers, bit for bit)."""
        return {
            "stroke": self.stroke(img),
            "dark_iou": float(_mask_iou(dark_mask(img), self.dark).mean()),
            "l1": float((as_shown(img) - self.truth).abs().mean()),
        }


def fidelity(img: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean stroke distance, dark-stroke IoU and pixel L1 ([-1, 1] units) of images to their true renders."""
    return TruthMaps(truth).fidelity(img)


def best_filter(
    faces: torch.Tensor, truth: "torch.Tensor | TruthMaps", suite: dict[str, toy_filters.Chain] | None = None
) -> tuple[str, dict[str, float]]:
    """The suite's filter whose output from ``faces`` is closest to ``truth`` by stroke distance, and its fidelity."""
    suite = toy_filters.SUITE if suite is None else suite
    # The renders' side of every comparison is the same: computed once, not once per filter.
    maps = truth if isinstance(truth, TruthMaps) else TruthMaps(truth)
    # Only the stroke distance ranks the filters; the other numbers are computed for the chosen one.
    strokes = {name: maps.stroke(toy_filters.apply_chain(faces, chain)) for name, chain in suite.items()}
    strokes["no filter"] = maps.stroke(faces)
    name = min(strokes, key=lambda k: strokes[k])
    return name, maps.fidelity(toy_filters.apply_chain(faces, suite.get(name, ())))


def paired_fidelity(
    img_frozen: torch.Tensor, img_train: torch.Tensor, z: torch.Tensor, style: str, evaluator: "Evaluator | None" = None
) -> dict[str, Any]:
    """Fidelity to the true ``style`` renders of the faces of toy latents z: adapted, unadapted and best filter
    (with ``evaluator``: also the share of the best filter's images it puts in ``style``)."""
    truth = TruthMaps(true_renders(z, style).to(img_frozen))
    name, best = best_filter(img_frozen, truth)
    record: dict[str, Any] = {"filter": name, **best}
    if evaluator is not None:
        chain = toy_filters.SUITE.get(name, ())
        record["target_rate"] = style_rates(evaluator, toy_filters.apply_chain(img_frozen, chain))[style]
    return {
        "distance": "stroke: mean |difference| of Sobel magnitudes of the luma at sigma 2 px (lower is closer); "
        "dark_iou: shared dark pixels; l1: pixels in [-1, 1]",
        "adapted": truth.fidelity(img_train),
        "unadapted": truth.fidelity(img_frozen),
        "best_filter": record,
    }


def true_renders(z: torch.Tensor, style: str, seed: int = 3) -> torch.Tensor:
    """Renders [N,3,64,64] in [-1,1] of the faces that toy latents z [N, style_dim] stand for, in ``style``."""

    return R.render_tensor(face_params(z), style, seed=seed)
