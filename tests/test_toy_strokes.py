"""The stroke stem (nada.toy.strokes): what it sees of an image; how a tower behind it is saved and loaded."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nada.errors import NadaError
from nada.guidance.clip_weights import load_clip_from_config
from nada.toy import clip_train as T
from nada.toy import filters as toy_filters
from nada.toy import render as R
from nada.toy.strokes import CONFIG_KEY, INPUT_STEMS, STEM, stroke_channels


def test_a_flat_page_has_no_strokes_and_a_uniform_offset_changes_nothing():
    flat = torch.full((2, 3, 32, 32), 0.3)
    assert stroke_channels(flat).abs().max() < 1e-6
    img = R.render_tensor(R.sample_params(3, seed=4), "photo", seed=4)
    # A brightness offset moves every pixel's luma by the same amount: gradients and local contrast keep.
    assert torch.allclose(stroke_channels(img + 0.2), stroke_channels(img), atol=1e-5)
    # Contrast about mid-grey scales the strokes, it does not draw new ones.
    assert torch.allclose(stroke_channels(img * 0.5), 0.5 * stroke_channels(img), atol=1e-5)


def test_a_dark_line_on_a_page_is_seen_as_edges_and_as_darker_than_around_it():
    page = torch.ones(1, 3, 16, 16)
    page[..., 7] = -1.0  # a one-pixel black vertical line
    gx, gy, local = stroke_channels(page)[0]
    assert gx[:, 6].mean() < -1 and gx[:, 8].mean() > 1  # light -> dark, then dark -> light
    assert gy.abs().max() < 1e-6  # nothing changes along the line
    assert local[:, 7].mean() < -1 and local[:, 2].abs().max() < 1e-5


def test_a_sketch_has_more_strokes_than_the_same_faces_washed_out():
    params = R.sample_params(8, seed=6)
    photo = R.render_tensor(params, "photo", seed=6)
    sketch = R.render_tensor(params, "sketch", seed=6)
    washed = toy_filters.wash(toy_filters.grayscale(photo, 1.0), 0.5)
    energy = [stroke_channels(x).pow(2).mean().item() for x in (sketch, photo, washed)]
    assert energy[0] > 2 * energy[1] > 2 * energy[2], energy


def test_a_stroke_tower_exports_names_its_stem_and_loads_only_with_it(tmp_path):
    config = T.model_config("resnet-strokes")
    assert config[CONFIG_KEY] == STEM
    model = T.build_model(seed=2, config=config).eval()
    T.export(model, tmp_path, config=config)
    saved = json.loads((tmp_path / T.CONFIG_FILE).read_text())
    assert saved[CONFIG_KEY] == STEM
    img = R.render_tensor(R.sample_params(3, seed=1), "sketch", seed=1)
    direct = T.encode_images(T.load_exported(tmp_path), img)
    with pytest.raises(NadaError, match="input stem 'luma-strokes'"):
        load_clip_from_config(tmp_path / T.CONFIG_FILE, tmp_path / T.WEIGHTS_FILE)
    wrapped = load_clip_from_config(tmp_path / T.CONFIG_FILE, tmp_path / T.WEIGHTS_FILE, input_stems=INPUT_STEMS)
    assert torch.allclose(direct, F.normalize(wrapped.encode_image(img), dim=-1), atol=1e-3)
    # Behind the stem a brightness offset is invisible; the same weights without it see the change.
    plain = T.build_model(seed=2, config=T.model_config("resnet")).eval()
    plain.load_state_dict(model.state_dict())
    moves = [(T.encode_images(m, img + 0.2) - T.encode_images(m, img)).abs().max().item() for m in (model, plain)]
    assert moves[1] > 20 * moves[0], moves


def test_noise_augmentation_touches_only_its_share_and_is_off_by_default():
    import numpy as np

    img = torch.zeros(200, 3, 8, 8)
    assert T.noise_change(img, np.random.default_rng(0), 0.0, 0.4) is img
    noisy = T.noise_change(img, np.random.default_rng(0), 0.3, 0.4)
    touched = noisy.flatten(1).abs().amax(1) > 0
    assert 0.15 < touched.float().mean() < 0.45
    assert noisy.std() < 0.4 and noisy.abs().max() > 0.5  # up to 0.4 std, unclipped
