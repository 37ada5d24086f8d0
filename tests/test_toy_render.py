"""The toy-world renderer: API contract, determinism, coverage of every attribute, captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nada.errors import NadaError
from nada.toy import render as R


def test_constants_follow_the_contract():
    assert len(R.STYLES) >= 5 and {"photo", "sketch", "watercolor", "pixel art"} <= set(R.STYLES)
    assert set(R.ATTRIBUTES) == {"face_shape", "hair_color", "hair_style", "eyes", "mouth", "glasses"}
    assert all(len(v) >= 2 and all(isinstance(w, str) and w for w in v) for v in R.ATTRIBUTES.values())
    assert R.LATENT_DIM == len(R.ATTRIBUTES) + len(R.CONTINUOUS)
    assert all("{}" in t for t in R.TEMPLATES) and len(set(R.TEMPLATES)) == len(R.TEMPLATES)
    assert all(len(R.ATTRIBUTE_PROMPTS[k]) == len(v) for k, v in R.ATTRIBUTES.items())


@pytest.mark.parametrize("style", R.STYLES)
def test_render_shape_dtype_and_determinism(style):
    params = R.sample_params(5, seed=1)
    a = R.render(params, style, seed=3)
    assert a.shape == (5, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, R.render(params, style, seed=3))
    assert a.std() > 10, "an image with almost no contrast"


@pytest.mark.parametrize("style", ["photo", "sketch", "watercolor", "neon"])
def test_texture_follows_the_seed_but_content_does_not(style):
    params = R.sample_params(4, seed=2)
    a, b = R.render(params, style, seed=0).astype(float), R.render(params, style, seed=1).astype(float)
    other = R.render(R.sample_params(4, seed=3), style, seed=0).astype(float)
    texture_change = np.abs(a - b).mean()
    content_change = np.abs(a - other).mean()
    assert 0.1 < texture_change < content_change


def test_params_are_deterministic_and_in_range():
    a, b = R.sample_params(300, seed=7), R.sample_params(300, seed=7)
    for name in R.ATTRIBUTES:
        assert np.array_equal(getattr(a, name), getattr(b, name))
    for name, (lo, hi) in R.CONTINUOUS.items():
        v = getattr(a, name)
        assert v.dtype == np.float32 and v.min() >= lo and v.max() <= hi
    assert not np.array_equal(a.size, R.sample_params(300, seed=8).size)


def test_params_from_latent_covers_every_value_by_quantiles():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((4000, R.LATENT_DIM))
    p = R.params_from_latent(u)
    for k, (name, values) in enumerate(R.ATTRIBUTES.items()):
        idx = getattr(p, name)
        counts = np.bincount(idx, minlength=len(values))
        assert counts.min() > 0.8 * len(u) / len(values), f"{name} is unbalanced: {counts}"
        # The value is a monotone function of its own latent coordinate.
        order = np.argsort(u[:, k])
        assert np.all(np.diff(idx[order]) >= 0)
    # Extreme latents reach the ends of the continuous ranges.
    hi = R.params_from_latent(np.full((1, R.LATENT_DIM), 6.0))
    for name, (_lo_v, hi_v) in R.CONTINUOUS.items():
        assert abs(float(getattr(hi, name)[0]) - hi_v) < 1e-4


@pytest.mark.parametrize("style", R.STYLES)
def test_every_attribute_value_is_visible_in_every_style(style):
    base = R.sample_params(12, seed=11)
    for name, values in R.ATTRIBUTES.items():
        imgs = [R.render(R.with_attributes(base, **{name: v}), style, seed=0).astype(int) for v in values]
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                # Pixels that change by more than 20 levels in some channel, per face.
                changed = (np.abs(imgs[i] - imgs[j]).max(-1) > 20).sum((1, 2))
                assert changed.min() >= 5, (
                    f"{style}: {name} {values[i]} vs {values[j]} changes only {changed.min()} pixels"
                )


def test_styles_are_clearly_different():
    params = R.sample_params(8, seed=5)
    imgs = {s: R.render(params, s, seed=0).astype(float) for s in R.STYLES}
    for i, a in enumerate(R.STYLES):
        for b in R.STYLES[i + 1 :]:
            assert np.abs(imgs[a] - imgs[b]).mean() > 15, f"{a} and {b} look alike"


def test_render_tensor_and_mixed_styles():
    params = R.sample_params(6, seed=4)
    t = R.render_tensor(params, "photo", seed=1)
    assert t.shape == (6, 3, 64, 64) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    ref = R.render(params, "photo", seed=1)
    assert torch.equal(R.to_tensor(ref), t)
    styles = [R.STYLES[i % len(R.STYLES)] for i in range(6)]
    mixed = R.render_mixed(params, styles, seed=1)
    assert np.array_equal(mixed[0], R.render(params.subset([0]), "photo", seed=1)[0])
    assert np.array_equal(mixed[1], R.render(params.subset([1]), styles[1], seed=1)[0])


def test_subset_concat_and_errors():
    p = R.sample_params(10, seed=0)
    q = R.FaceParams.concat([p.subset(slice(0, 4)), p.subset(np.arange(4, 10))])
    assert all(np.array_equal(getattr(p, f), getattr(q, f)) for f in R.ATTRIBUTES)
    assert len(q) == 10 and R.render(p.subset([]), "photo").shape == (0, 64, 64, 3)
    smiling = R.with_attributes(p, mouth="smiling", glasses=1)
    assert set(smiling.mouth) == {0} and set(smiling.glasses) == {1}
    with pytest.raises(NadaError, match="use one of"):
        R.render(p, "oil painting")
    with pytest.raises(NadaError, match="use one of"):
        R.with_attributes(p, mouth="laughing")


def test_captions_state_only_true_facts_and_include_short_forms():
    p = R.sample_params(400, seed=9)
    styles = [R.STYLES[i % len(R.STYLES)] for i in range(len(p))]
    caps = R.captions(p, styles, seed=1)
    assert len(caps) == len(p) and caps == R.captions(p, styles, seed=1)
    assert caps != R.captions(p, styles, seed=2)
    for i, (cap, facts) in enumerate(zip(caps, R.caption_parts(p, styles, seed=1))):
        if "style" in facts:
            assert facts["style"] == styles[i] and styles[i] in cap
        for name, word in facts.items():
            if name != "style":
                assert word == p.describe(i)[name]
                if name != "glasses":
                    assert word in cap
        for other in set(R.STYLES) - {styles[i]}:
            assert other not in cap
    short = {c for c in caps if len(c.split()) <= 2}
    assert short & set(R.STYLES) or short & {f"a {s}" for s in R.STYLES}, "no bare style captions"
    assert any(c.startswith("a smiling face") for c in R.captions(p, "photo", seed=3) + caps)
    assert any("glasses" in c for c in caps)


def test_sketch_parts_can_be_taken_away_with_the_same_texture():
    params = R.sample_params(8, seed=2)
    images, states = {}, {}
    for hatch, outlines in [("lines", True), ("tone", True), ("none", True), ("lines", False)]:
        rng = np.random.default_rng(4)
        images[hatch, outlines] = R._style_sketch(params, rng, hatch=hatch, outlines=outlines)
        states[hatch, outlines] = rng.bit_generator.state["state"]["state"]
    true = images["lines", True]
    assert np.array_equal(true, R._style_sketch(params, np.random.default_rng(4)))
    assert len(set(states.values())) == 1, "a variant drew a different texture"
    tone, none, bare = images["tone", True], images["none", True], images["lines", False]
    # The tone keeps the hatching's mean ink but not its lines.
    assert np.abs(tone - true).mean() > 0.01 > abs(float(tone.mean() - true.mean()))
    assert none.mean() > tone.mean() and bare.mean() > true.mean()


def test_part_maps_segment_the_photo_by_part_group():
    faces = R.with_attributes(R.sample_params(4, seed=5), glasses="no")
    with_glasses = R.with_attributes(faces, glasses="yes")
    maps, maps_glasses = R.part_maps(faces), R.part_maps(with_glasses)
    assert maps.shape == (4, len(R.PART_GROUPS), 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    glasses = list(R.PART_GROUPS).index("glasses")
    assert maps[:, glasses].max() == 0.0 and (maps_glasses[:, glasses].sum((1, 2)) > 20).all()
    # Visible coverage: the opaque groups never overlap by more than anti-aliasing, and the person covers the middle.
    opaque = np.delete(maps, glasses, axis=1).sum(1)
    assert opaque.max() <= 1.0 + 1e-5 and (opaque[:, 24:40, 24:40] > 0.99).all()
    # The photo's pixels follow the map: inside the hair group a black-haired face is darker than inside its skin.
    black = R.with_attributes(faces, hair_color="black")
    grey, dark = R.render(black, "photo").astype(np.float32).mean(-1), R.part_maps(black)
    hair, skin = list(R.PART_GROUPS).index("hair"), list(R.PART_GROUPS).index("skin")
    for i in range(4):
        assert grey[i][dark[i, hair] > 0.99].mean() < grey[i][dark[i, skin] > 0.99].mean() - 40
