"""StyleGAN-NADA's CLIP losses as pure functions (no module state, nothing cached between calls).

Each loss returns an unweighted scalar; the caller multiplies it by its weight. The formulas follow
the reference implementation (rinongal/StyleGAN-nada, ``criteria/clip_loss.py``) so that its numbers
are reproduced exactly; where it cached a text direction inside the loss object, here the caller
computes it once (``text_direction``) and passes it in.

Feature layouts: image features [N,D], text features [T,D], directions [1,D] (or [P,D] for parts).
Functions that take a ``ClipModel`` encode images themselves (patch losses, image directions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from nada.errors import NadaError
from nada.guidance.templates import IMAGENET_TEMPLATES, PART_TEMPLATES, compose

if TYPE_CHECKING:
    from nada.guidance.clip import ClipModel


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (the eps only guards an all-zero row)."""
    return F.normalize(x, dim=-1)


# ---------------------------------------------------------------- text side


def text_features(model: "ClipModel", text: str, templates: Sequence[str] | None = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Unit text features [T,D] of ``text`` in every template (T=1, the plain prompt, for ``templates=None``)."""
    with torch.no_grad():  # text features are constants of the objective
        return _unit(model.encode_text(compose(text, templates)))


def mean_text_feature(
    model: "ClipModel", text: str, templates: Sequence[str] | None = IMAGENET_TEMPLATES
) -> torch.Tensor:
    """Unit mean over templates of the unit text features: [1,D] (the manifold loss's class anchor)."""
    return mean_feature(text_features(model, text, templates))


def mean_feature(features: torch.Tensor) -> torch.Tensor:
    """Unit mean [1,D] of unit features [T,D] (what `mean_text_feature` computes from `text_features`)."""
    return _unit(features.mean(dim=0, keepdim=True))


def text_direction(
    model: "ClipModel", source: str, target: str, templates: Sequence[str] | None = IMAGENET_TEMPLATES
) -> torch.Tensor:
    """CLIP-space direction source -> target: normalise(mean_t(target_t - source_t)), shape [1,D]."""
    return direction_between(text_features(model, source, templates), text_features(model, target, templates))


def direction_between(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """normalise(mean_t(target_t - source_t)) [1,D] of per-template unit text features [T,D] (`text_direction`)."""
    return _unit((target - source).mean(dim=0, keepdim=True))


def part_text_directions(
    model: "ClipModel",
    source: str,
    target: str,
    parts: Sequence[str] = PART_TEMPLATES,
    templates: Sequence[str] | None = IMAGENET_TEMPLATES,
) -> torch.Tensor:
    """One text direction per part phrase ("the paw of a {}."), each averaged over ``templates``: [P,D]."""
    # As in the reference code, the part phrase itself is placed into every ImageNet template.
    return torch.cat([text_direction(model, p.format(source), p.format(target), templates) for p in parts], dim=0)


def image_direction(
    model: "ClipModel",
    target_images: torch.Tensor | Sequence[torch.Tensor],
    source_images: torch.Tensor | Sequence[torch.Tensor],
) -> torch.Tensor:
    """Direction [1,D] from the mean unit embedding of ``source_images`` to that of ``target_images``.

    Images are in [-1,1], as one batch [N,3,H,W] or as a list of [3,H,W] / [1,3,H,W] tensors of any size
    (style references rarely share a resolution).
    """
    with torch.no_grad():
        target = _mean_image_feature(model, target_images)
        source = _mean_image_feature(model, source_images)
    return _unit(target - source)


def _mean_image_feature(model: "ClipModel", images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of the unit image features of a batch or list of images: [1,D]."""
    if isinstance(images, torch.Tensor):
        batches = [images]
    else:
        batches = [img if img.ndim == 4 else img.unsqueeze(0) for img in images]
    if not batches or sum(b.shape[0] for b in batches) == 0:
        raise NadaError("an image direction needs at least one image on each side: give target style images")
    feats = torch.cat([_unit(model.encode_image(b.to(model.device))) for b in batches], dim=0)
    return feats.mean(dim=0, keepdim=True)


# ---------------------------------------------------------------- losses on features


def directional_loss(f_src: torch.Tensor, f_tgt: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(normalise(unit(f_tgt) - unit(f_src)), direction); features [N,D], direction [1,D] or [N,D]."""
    assert f_src.shape == f_tgt.shape and f_src.ndim == 2, f"feature shapes differ: {f_src.shape} vs {f_tgt.shape}"
    edit = _unit(_unit(f_tgt) - _unit(f_src))
    return (1.0 - F.cosine_similarity(edit, direction, dim=-1, eps=1e-8)).mean()


def edge_map(img: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude [N,1,H,W] of the luminance of images [N,3,H,W] in [-1,1]."""
    luma = (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    k = img.new_tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8
    g = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), torch.stack([k, k.T])[:, None])
    return (g.square().sum(1, keepdim=True) + 1e-6).sqrt()


def structure_loss(img_src: torch.Tensor, img_tgt: torch.Tensor) -> torch.Tensor:
    """Mean over N of 1 - correlation between the edge maps of each source and target image [N,3,H,W].

    Not part of StyleGAN-NADA: a content anchor in pixel space for a CLIP too weak to keep content by
    itself. Styles redraw outlines (pencil lines, ink, pixel steps) where the source had them, so the
    correlation stays high for a restyled image and falls for one whose layout dissolved or went blank.
    Correlation ignores the edges' strength and sign, which styles may change freely.
    """
    assert img_src.shape == img_tgt.shape and img_src.ndim == 4, (
        f"image shapes differ: {img_src.shape} vs {img_tgt.shape}"
    )
    a, b = edge_map(img_src).flatten(1), edge_map(img_tgt).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def translation_loss(img_tgt: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of generated images [N,3,H,W] in [-1, 1] and a translator's drawings of the frozen
    images (`nada.guidance.translators`), which carry no gradient.

    Not part of StyleGAN-NADA: the pixel targets come from an image-to-image model, not from CLIP. Each drawing
    is one sample of the translator's noise; over many iterations the generator learns their mean for a latent.
    """
    assert img_tgt.shape == translated.shape, f"image shapes differ: {img_tgt.shape} vs {translated.shape}"
    return (img_tgt - translated.detach()).pow(2).mean()


def global_loss(
    img_feat: torch.Tensor, text_feat: torch.Tensor, logit_scale: float | torch.Tensor = 100.0
) -> torch.Tensor:
    """Mean over [N,T] of 1 - logit_scale * cos(image, text) / 100; img_feat [N,D], text_feat [T,D].

    This is the reference code's ``1 - logits_per_image / 100``: for OpenAI's models (logit scale 100)
    it is 1 - cosine. Pass ``model.logit_scale`` to reproduce it for any CLIP. The reference training
    objective encodes the plain prompt ``f"a {target}"`` (no templates) for this term.
    """
    logits = logit_scale * _unit(img_feat) @ _unit(text_feat).T
    return (1.0 - logits / 100.0).mean()


def manifold_angle_loss(
    f_src: torch.Tensor, f_tgt: torch.Tensor, src_text: torch.Tensor, tgt_text: torch.Tensor
) -> torch.Tensor:
    """L1 between cos(src image, target image) per pair and cos(src text, target text); texts [1,D].

    Despite its name the reference compares cosines, not angles; ``src_text``/``tgt_text`` are
    ``mean_text_feature`` of the two classes.
    """
    assert f_src.shape == f_tgt.shape and f_src.ndim == 2, f"feature shapes differ: {f_src.shape} vs {f_tgt.shape}"
    cos_img = (_unit(f_tgt) * _unit(f_src)).sum(dim=-1).clamp(-1.0, 1.0)
    cos_text = (_unit(tgt_text) * _unit(src_text)).sum(dim=-1)
    return F.l1_loss(cos_img, cos_text.expand_as(cos_img))


# Softmax temperature of the consistency term: CLIP cosines between images of one domain sit in a narrow
# band (about 0.6-0.95), so at temperature 1 every row would be nearly uniform and carry no signal.
CONSISTENCY_TEMPERATURE = 0.05


def consistency_loss(
    f_src: torch.Tensor, f_tgt: torch.Tensor, temperature: float = CONSISTENCY_TEMPERATURE
) -> torch.Tensor:
    """KL(p_src || p_tgt) averaged over images, where p_i is image i's softmax over its cosines to the other images
    [N,D].

    Not part of StyleGAN-NADA: the cross-domain correspondence of Ojha et al. (CVPR 2021), in CLIP space.
    The frozen images fix how similar each image is to each other one (who shares glasses, a smile, a
    hair colour); the adapted batch must keep those relations, so the faces stay distinct in the ways
    they were, whatever the style does to all of them. Needs N >= 3 (each row spans N - 1 others).
    """
    assert f_src.shape == f_tgt.shape and f_src.ndim == 2 and f_src.shape[0] >= 3, (
        f"need paired features [N>=3, D], got {f_src.shape} and {f_tgt.shape}"
    )
    n = f_src.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=f_src.device)

    def rows(f: torch.Tensor) -> torch.Tensor:
        u = _unit(f)
        return ((u @ u.T)[off].view(n, n - 1)) / temperature

    p_src = F.softmax(rows(f_src).detach(), dim=1)
    return F.kl_div(F.log_softmax(rows(f_tgt), dim=1), p_src, reduction="batchmean")


def keep_loss(
    f_src: torch.Tensor, f_tgt: torch.Tensor, groups: Sequence[torch.Tensor], logit_scale: float | torch.Tensor = 100.0
) -> torch.Tensor:
    """Mean over prompt groups of KL(p_src || p_tgt), p an image's zero-shot softmax over one group's prompts.

    Image features [N,D] (frozen, trained); each group is unit text features [K,D] (K >= 2) of the
    values of one attribute ("a smiling face", "a neutral face", ...). Not part of StyleGAN-NADA: the
    directional loss fixes where the edit goes, not what it must leave alone; this term asks the
    adapted image to be read like the frozen one on each attribute the user names, and only on those.
    """
    assert f_src.shape == f_tgt.shape and f_src.ndim == 2, (
        f"need paired features [N, D], got {f_src.shape} and {f_tgt.shape}"
    )
    total = f_tgt.new_zeros(())
    for text in groups:
        assert text.ndim == 2 and text.shape[0] >= 2 and text.shape[1] == f_src.shape[1], (
            f"a group needs [K>=2, D] features, got {tuple(text.shape)}"
        )
        p_src = F.softmax(logit_scale * _unit(f_src).detach() @ text.T, dim=1)
        log_p_tgt = F.log_softmax(logit_scale * _unit(f_tgt) @ text.T, dim=1)
        total = total + F.kl_div(log_p_tgt, p_src, reduction="batchmean")
    return total / max(1, len(groups))


def keep_groups(spec: str) -> list[list[str]]:
    """Prompt groups of a keep spec: groups split by ';', the values of a group by '|' ("smiling|frowning; glasses|no
    glasses")."""
    groups = [values for values in ([v.strip() for v in g.split("|") if v.strip()] for g in spec.split(";")) if values]
    if not groups:
        raise NadaError(
            f"keep {spec!r} names no attribute: give groups such as 'a smiling face|a frowning face; glasses|no "
            "glasses'"
        )
    for g in groups:
        if len(g) < 2:
            raise NadaError(
                f"the keep group {g!r} names fewer than 2 values: an attribute to keep needs its alternatives, "
                "e.g. 'a smiling face|a neutral face|a frowning face' (groups separated by ';')"
            )
    return groups


def texture_loss(f_texture: torch.Tensor, f_target: torch.Tensor) -> torch.Tensor:
    """MSE between the unnormalised CLIP features [N,D] of texture reference images and generated images."""
    assert f_texture.shape == f_target.shape, f"feature shapes differ: {f_texture.shape} vs {f_target.shape}"
    return F.mse_loss(f_texture, f_target)


# ---------------------------------------------------------------- patch losses


def random_patch_centers(
    shape: Sequence[int], num_patches: int, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random (x, y) centres [B*num_patches, 2] (int64, CPU) of size x size patches inside [B,C,H,W] images."""
    b, _, h, w = shape
    half = size // 2
    if 2 * half > min(h, w) or half == 0:
        raise NadaError(f"patch size {size} does not fit {h}x{w} images: use a patch size between 2 and {min(h, w)}")
    # A patch spans [c - half, c + half), so every centre in [half, side - half] keeps it inside the image.
    xs = torch.randint(half, w - half + 1, (b * num_patches,), generator=generator)
    ys = torch.randint(half, h - half + 1, (b * num_patches,), generator=generator)
    return torch.stack([xs, ys], dim=1)


def extract_patches(img: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Crop [B,C,H,W] at (x, y) centres [B*K,2] (K per image, image-major) -> [B*K,C,2*(size//2),2*(size//2)]."""
    b, _, h, w = img.shape
    assert centers.ndim == 2 and centers.shape[1] == 2, f"centres must be [M,2] (x, y), got {tuple(centers.shape)}"
    assert centers.shape[0] % b == 0, f"{centers.shape[0]} centres cannot be split evenly over {b} images"
    per_image, half = centers.shape[0] // b, size // 2
    patches = []
    for i, (x, y) in enumerate(centers.tolist()):
        assert half <= x <= w - half and half <= y <= h - half, f"patch at ({x}, {y}) leaves the {h}x{w} image"
        n = i // per_image
        patches.append(img[n : n + 1, :, y - half : y + half, x - half : x + half])
    return torch.cat(patches, dim=0)


def patch_directional_loss(
    model: "ClipModel",
    src_img: torch.Tensor,
    tgt_img: torch.Tensor,
    part_directions: torch.Tensor,
    centers: torch.Tensor,
    size: int = 510,
) -> torch.Tensor:
    """Directional loss on matching patches, against part directions [P,D], softmax-weighted by alignment.

    Images [B,3,H,W] in [-1,1]; ``centers`` from ``random_patch_centers(src_img.shape, 1, size)``;
    ``part_directions`` from ``part_text_directions``. The reference uses size 510 on 1024 images.
    """
    f_src = model.encode_image(extract_patches(src_img, centers, size))
    f_tgt = model.encode_image(extract_patches(tgt_img, centers, size))
    edit = _unit(_unit(f_tgt) - _unit(f_src))  # [M,D]
    cos_dist = 1.0 - F.cosine_similarity(edit.unsqueeze(1), part_directions.unsqueeze(0), dim=2)  # [M,P]
    weights = (edit @ part_directions.T).softmax(dim=-1)  # how much each part phrase describes the edit
    return (cos_dist * weights).mean()


def patch_similarity_loss(
    model: "ClipModel",
    src_img: torch.Tensor,
    tgt_img: torch.Tensor,
    src_part_text: torch.Tensor,
    tgt_part_text: torch.Tensor,
    centers: torch.Tensor,
    size: int = 196,
) -> torch.Tensor:
    """L1 between patch-to-part similarity scores of source patches (source parts) and target patches (target parts).

    Part text features [P,D] are the *unnormalised* ``model.encode_text(compose(cls, PART_TEMPLATES))``,
    as in the reference; ``centers`` from ``random_patch_centers(src_img.shape, 4, size)``.
    """
    src_scores = _unit(model.encode_image(extract_patches(src_img, centers, size))) @ src_part_text.T
    tgt_scores = _unit(model.encode_image(extract_patches(tgt_img, centers, size))) @ tgt_part_text.T
    return F.l1_loss(src_scores, tgt_scores)


# ---------------------------------------------------------------- ensembles


def clip_directional_loss(
    ensemble: Sequence[tuple["ClipModel", float]],
    directions: Sequence[torch.Tensor],
    frozen_img: torch.Tensor,
    train_img: torch.Tensor,
) -> torch.Tensor:
    """Weighted sum over CLIP models of ``directional_loss`` between frozen and trained images [N,3,H,W] in [-1,1].

    ``directions[i]`` [1,D] belongs to ``ensemble[i]`` (e.g. ``text_direction`` or ``image_direction``).
    Gradients reach ``train_img`` only.
    """
    if len(ensemble) != len(directions):
        raise ValueError(f"{len(ensemble)} CLIP models but {len(directions)} directions: give one direction per model")
    total = torch.zeros((), device=train_img.device)
    for (model, weight), direction in zip(ensemble, directions):
        f_src = model.encode_image(frozen_img.detach())
        f_tgt = model.encode_image(train_img)
        if (_unit(f_tgt) == _unit(f_src)).all(dim=-1).any():
            # Identical images (the first step, when both generators are equal) have no edit direction;
            # like the reference, measure it for a minimally shifted image instead of dividing 0 by 0.
            f_tgt = model.encode_image(train_img + 1e-6)
        total = total + weight * directional_loss(f_src, f_tgt, direction.to(f_tgt.device))
    return total
