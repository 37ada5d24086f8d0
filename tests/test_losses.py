"""nada.guidance.losses and nada.guidance.templates against the official StyleGAN-NADA numbers on the golden tiny
CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nada.guidance.losses as L
from nada.errors import NadaError
from nada.guidance.templates import IMAGENET_TEMPLATES, PART_TEMPLATES, compose

ATOL = 1e-5


@pytest.fixture
def feats(tiny, ref) -> dict:
    """Unnormalised image features of the golden inputs, both antialias settings."""
    inp = ref["inputs"]
    out = {k: tiny.encode_image(inp[f"{k}_img"]) for k in ("src", "target", "texture")}
    out.update({f"{k}_legacy": tiny.encode_image(inp[f"{k}_img"], antialias=False) for k in ("src", "target")})
    return out


def _close(value: torch.Tensor, expected: torch.Tensor) -> None:
    assert value.shape == expected.shape
    assert torch.allclose(value, expected, atol=ATOL), f"{value} != {expected}"


def test_templates_equal_reference(ref) -> None:
    assert isinstance(IMAGENET_TEMPLATES, tuple) and isinstance(PART_TEMPLATES, tuple)
    assert list(IMAGENET_TEMPLATES) == ref["constants"]["imagenet_templates"] and len(IMAGENET_TEMPLATES) == 79
    assert list(PART_TEMPLATES) == ref["constants"]["part_templates"] and len(PART_TEMPLATES) == 15
    assert compose("cat", None) == ["cat"]
    assert compose("cat", ("a {}.", "the {}s fangs.")) == ["a cat.", "the cats fangs."]


def test_text_features_and_direction(tiny, ref) -> None:
    exp = ref["expected"]
    _close(L.text_features(tiny, "photo"), exp["text_features_source"])
    _close(L.text_features(tiny, "sketch", IMAGENET_TEMPLATES), exp["text_features_target"])
    _close(L.text_direction(tiny, "photo", "sketch"), exp["text_direction"])
    _close(L.mean_text_feature(tiny, "photo"), exp["src_text_features_mean"])
    _close(L.mean_text_feature(tiny, "sketch"), exp["target_text_features_mean"])
    plain = L.text_direction(tiny, "photo", "sketch", templates=None)
    assert plain.shape == (1, 64) and torch.allclose(plain.norm(dim=-1), torch.ones(1))
    assert not torch.allclose(plain, exp["text_direction"], atol=1e-3)


def test_directional_loss(tiny, ref, feats) -> None:
    direction = ref["expected"]["text_direction"]
    _close(L.directional_loss(feats["src"], feats["target"], direction), ref["expected"]["directional_loss"])
    assert L.directional_loss(feats["src"], feats["target"], direction).item() == pytest.approx(0.908360, abs=1e-5)


def test_global_loss_uses_a_target_prompt(tiny, ref, feats) -> None:
    exp = ref["expected"]
    scale = tiny.logit_scale
    _close(L.global_loss(feats["target"], tiny.encode_text(["sketch"]), scale), exp["global_loss_target_class"])
    _close(L.global_loss(feats["target"], tiny.encode_text(["a sketch"]), scale), exp["global_loss_a_target"])
    # With OpenAI's logit scale of 100 the loss is plain 1 - cosine.
    cos = torch.nn.functional.cosine_similarity(feats["target"], tiny.encode_text(["a sketch"]), dim=-1)
    assert L.global_loss(feats["target"], tiny.encode_text(["a sketch"])).item() == pytest.approx(
        (1 - cos).mean().item(), abs=1e-6
    )


def test_manifold_and_texture_losses(tiny, ref, feats) -> None:
    exp = ref["expected"]
    src_t, tgt_t = L.mean_text_feature(tiny, "photo"), L.mean_text_feature(tiny, "sketch")
    _close(L.manifold_angle_loss(feats["src"], feats["target"], src_t, tgt_t), exp["manifold_angle_loss"])
    _close(L.texture_loss(feats["texture"], feats["target"]), exp["texture_loss"])


def test_reference_forward_total(tiny, ref, feats) -> None:
    """The reference CLIPLoss.forward with every weight 1 except the patch term: the four terms summed."""
    total = (
        L.global_loss(feats["target"], tiny.encode_text(["a sketch"]), tiny.logit_scale)
        + L.directional_loss(feats["src"], feats["target"], L.text_direction(tiny, "photo", "sketch"))
        + L.manifold_angle_loss(
            feats["src"], feats["target"], L.mean_text_feature(tiny, "photo"), L.mean_text_feature(tiny, "sketch")
        )
        + L.texture_loss(feats["texture"], feats["target"])
    )
    _close(total, ref["expected"]["forward_all_but_patch"])


def test_legacy_no_antialias_numbers(tiny, ref, feats) -> None:
    legacy = ref["legacy_no_antialias"]
    direction = L.text_direction(tiny, "photo", "sketch")
    loss = L.directional_loss(feats["src_legacy"], feats["target_legacy"], direction)
    _close(loss, legacy["directional_loss"])
    assert loss.item() == pytest.approx(0.910307, abs=1e-5)
    src_t, tgt_t = L.mean_text_feature(tiny, "photo"), L.mean_text_feature(tiny, "sketch")
    _close(
        L.manifold_angle_loss(feats["src_legacy"], feats["target_legacy"], src_t, tgt_t), legacy["manifold_angle_loss"]
    )
    _close(
        L.global_loss(feats["target_legacy"], tiny.encode_text(["sketch"]), tiny.logit_scale),
        legacy["global_loss_target_class"],
    )
    _close(
        L.global_loss(feats["target_legacy"], tiny.encode_text(["a sketch"]), tiny.logit_scale),
        legacy["global_loss_a_target"],
    )


def _up512(x: torch.Tensor) -> torch.Tensor:
    """The golden recipe: first two images, upsampled x8 by repetition."""
    return x[:2].repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)


def test_patch_directional_loss(tiny, ref) -> None:
    exp = ref["expected"]
    directions = L.part_text_directions(tiny, "photo", "sketch")
    _close(directions, exp["patch_text_directions"])
    loss = L.patch_directional_loss(
        tiny,
        _up512(ref["inputs"]["src_img"]),
        _up512(ref["inputs"]["target_img"]),
        directions,
        exp["patch_directional_centers_512"],
        size=510,
    )
    _close(loss, exp["patch_directional_loss_512"])


def test_patch_similarity_loss(tiny, ref) -> None:
    exp = ref["expected"]
    src_parts = tiny.encode_text(compose("photo", PART_TEMPLATES))
    tgt_parts = tiny.encode_text(compose("sketch", PART_TEMPLATES))
    loss = L.patch_similarity_loss(
        tiny,
        _up512(ref["inputs"]["src_img"]),
        _up512(ref["inputs"]["target_img"]),
        src_parts,
        tgt_parts,
        exp["patch_similarity_centers_512"],
        size=196,
    )
    _close(loss, exp["patch_similarity_loss_512"])


def test_patch_centers_and_extraction() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = L.random_patch_centers((3, 3, 40, 50), 4, 20, generator=gen)
    assert centers.shape == (12, 2) and centers.dtype == torch.int64
    assert centers[:, 0].min() >= 10 and centers[:, 0].max() <= 40  # x within the width 50
    assert centers[:, 1].min() >= 10 and centers[:, 1].max() <= 30  # y within the height 40
    img = torch.arange(3 * 3 * 40 * 50, dtype=torch.float32).view(3, 3, 40, 50)
    patches = L.extract_patches(img, centers, 20)
    assert patches.shape == (12, 3, 20, 20)
    x, y = centers[5].tolist()  # image 1 (four patches per image)
    assert torch.equal(patches[5], img[1, :, y - 10 : y + 10, x - 10 : x + 10])
    with pytest.raises(NadaError, match="does not fit 64x64"):
        L.random_patch_centers((1, 3, 64, 64), 1, 510)


def test_image_direction(tiny, ref) -> None:
    inp = ref["inputs"]
    direction = L.image_direction(tiny, inp["target_img"], inp["src_img"])
    expected = torch.nn.functional.normalize(
        torch.nn.functional.normalize(tiny.encode_image(inp["target_img"]), dim=-1).mean(0, keepdim=True)
        - torch.nn.functional.normalize(tiny.encode_image(inp["src_img"]), dim=-1).mean(0, keepdim=True),
        dim=-1,
    )
    _close(direction, expected)
    # A list of differently sized references works too; each image counts once.
    refs = [inp["target_img"][0], inp["target_img"][1:2, :, :48, :]]
    listed = L.image_direction(tiny, refs, inp["src_img"])
    assert listed.shape == (1, 64) and torch.isfinite(listed).all()
    with pytest.raises(NadaError):
        L.image_direction(tiny, [], inp["src_img"])


def test_clip_directional_loss_ensemble_and_gradients(tiny, ref) -> None:
    inp = ref["inputs"]
    direction = L.text_direction(tiny, "photo", "sketch")
    train = inp["target_img"].clone().requires_grad_(True)
    loss = L.clip_directional_loss([(tiny, 1.0), (tiny, 0.5)], [direction, direction], inp["src_img"], train)
    assert loss.item() == pytest.approx(1.5 * ref["expected"]["directional_loss"].item(), abs=1e-5)
    loss.backward()
    assert train.grad is not None and torch.isfinite(train.grad).all() and train.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        L.clip_directional_loss([(tiny, 1.0)], [direction, direction], inp["src_img"], train)


def test_identical_images_give_finite_loss_and_gradient(tiny, ref) -> None:
    """At the first step both generators agree; the loss must not be NaN and must still push the image."""
    src = ref["inputs"]["src_img"]
    train = src.clone().requires_grad_(True)
    loss = L.clip_directional_loss([(tiny, 1.0)], [L.text_direction(tiny, "photo", "sketch")], src, train)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(train.grad).all() and train.grad.abs().sum() > 0


def test_losses_have_no_state() -> None:
    """Pure functions: no module-level tensors are created or cached by calling them."""
    before = {k for k, v in vars(L).items() if isinstance(v, torch.Tensor)}
    f = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    d = torch.nn.functional.normalize(torch.randn(1, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    a = L.directional_loss(f, f.flip(0), d)
    b = L.directional_loss(f, f.flip(0), d)
    assert torch.equal(a, b)
    assert {k for k, v in vars(L).items() if isinstance(v, torch.Tensor)} == before == set()


def test_structure_loss_keeps_layout_not_style():
    from nada.toy import render as R

    params = R.sample_params(8, seed=2)
    photo, sketch = R.render_tensor(params, "photo"), R.render_tensor(params, "sketch")
    same = L.structure_loss(photo, photo).item()
    restyled = L.structure_loss(photo, sketch).item()
    other_faces = L.structure_loss(photo, sketch.roll(1, dims=0)).item()
    blank = L.structure_loss(photo, torch.full_like(photo, 0.9)).item()
    assert abs(same) < 1e-5 and restyled < other_faces - 0.1 and other_faces < blank
    assert blank == pytest.approx(1.0, abs=0.05)  # no edges: no correlation
    # Edge strength is free to change: a low-contrast copy keeps the layout exactly.
    assert L.structure_loss(photo, 0.3 * photo).item() < 1e-3
    x = photo.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(L.structure_loss(photo, x + 0.1 * sketch), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_consistency_loss_keeps_who_resembles_whom_not_the_style():
    g = torch.Generator().manual_seed(3)
    f_src = torch.randn(6, 16, generator=g)
    # A shared shift of every feature (a style applied to all images alike) keeps each image's relations.
    styled = f_src + 0.05 * torch.randn(1, 16, generator=g)
    same = L.consistency_loss(f_src, f_src).item()
    shifted = L.consistency_loss(f_src, styled).item()
    swapped = L.consistency_loss(f_src, f_src[[1, 0, 3, 2, 5, 4]]).item()
    collapsed = L.consistency_loss(
        f_src, torch.randn(1, 16, generator=g).expand(6, 16) + 1e-3 * torch.randn(6, 16, generator=g)
    ).item()
    assert abs(same) < 1e-6 and shifted < 0.1 * swapped and swapped > 0.1 and collapsed > 0.1
    # Scale does not matter (cosines), and only the adapted features get a gradient.
    assert L.consistency_loss(f_src, 3.0 * f_src).item() < 1e-6
    a, b = f_src.clone().requires_grad_(True), f_src[[1, 0, 3, 2, 5, 4]].clone().requires_grad_(True)
    L.consistency_loss(a, b).backward()
    assert a.grad is None or a.grad.abs().sum() == 0
    assert b.grad.abs().sum() > 0
    with pytest.raises(AssertionError, match="N>=3"):
        L.consistency_loss(f_src[:2], f_src[:2])


def test_keep_loss_sees_only_the_named_attributes():
    g = torch.Generator().manual_seed(5)
    smile, glasses, style = F.normalize(torch.randn(3, 32, generator=g), dim=-1)
    groups = [torch.stack([smile, -smile]), torch.stack([glasses, -glasses])]  # two attributes, two values each
    # Image features that smile and wear glasses, then the same in another style (a move orthogonal to both).
    f_src = (1.5 * smile + 1.5 * glasses + style).repeat(4, 1) + 0.05 * torch.randn(4, 32, generator=g)
    styled = f_src + 2.0 * (style - (style @ smile) * smile - (style @ glasses) * glasses)
    frowning = f_src - 3.0 * smile
    same = L.keep_loss(f_src, f_src, groups, 20.0).item()
    restyled = L.keep_loss(f_src, styled, groups, 20.0).item()
    changed = L.keep_loss(f_src, frowning, groups, 20.0).item()
    assert abs(same) < 1e-6 and changed > 1.0 and restyled < 0.05 * changed
    # Only the adapted features get a gradient, and an attribute outside the groups costs nothing.
    a, b = f_src.clone().requires_grad_(True), frowning.clone().requires_grad_(True)
    L.keep_loss(a, b, groups, 20.0).backward()
    assert a.grad is None and b.grad.abs().sum() > 0
    assert L.keep_loss(f_src, frowning, groups[1:], 20.0).item() < 0.05 * changed
    with pytest.raises(AssertionError, match="K>=2"):
        L.keep_loss(f_src, f_src, [smile[None]], 20.0)


def test_keep_groups_parse_and_name_what_is_missing():
    assert L.keep_groups(" a smiling face | a frowning face ; glasses|no glasses;") == [
        ["a smiling face", "a frowning face"],
        ["glasses", "no glasses"],
    ]
    with pytest.raises(NadaError, match="fewer than 2 values"):
        L.keep_groups("a smiling face; glasses|no glasses")
    with pytest.raises(NadaError, match="names no attribute"):
        L.keep_groups(" ; | ;")
