"""The toy evaluator: architecture, training/resume (fast, untrained) and the shipped weights' accuracy."""

from __future__ import annotations

import pytest
import torch

from nada.errors import NadaError
from nada.toy import evaluator as E
from nada.toy import evaluator_train as T
from nada.toy import render as R


def test_architecture_outputs_and_independence_from_the_clip():
    model = T.build(0).eval()
    img = R.render_tensor(R.sample_params(5, seed=0), "neon")
    logits = model(img)
    assert set(logits) == {"style", *R.ATTRIBUTES}
    assert all(logits[k].shape == (5, len(v)) for k, v in E.class_names().items())
    pred = model.predict(img)
    assert all(p.dtype == torch.long and p.shape == (5,) for p in pred.values())
    emb = model.embed(img)
    assert emb.shape == (5, model.config.embed_dim) and torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    # A convolutional network with no attention: a different kind of model from the ViT toy CLIP.
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    # Other input sizes are resized, so generator outputs at any resolution can be judged.
    assert model.predict(torch.nn.functional.interpolate(img, size=128))["style"].shape == (5,)


def test_images_beyond_the_range_are_judged_as_shown():
    model = T.build(0).eval()
    img = R.render_tensor(R.sample_params(4, seed=1), "photo") * 2.5 + 0.8  # overshoots, as generators do
    with torch.no_grad():
        assert torch.equal(model.features(img), model.features(img.clamp(-1, 1)))
        assert not torch.allclose(model.features(img), model.features(img / 2.5))
    assert all(torch.equal(a, b) for a, b in zip(model.predict(img).values(), model.predict(img.clamp(-1, 1)).values()))


def test_augmentation_keeps_range_and_is_seeded():
    cfg = T.TrainConfig(batch=8)
    a, la = T.make_batch(cfg, step=5)
    b, lb = T.make_batch(cfg, step=5)
    assert torch.equal(a, b) and all(torch.equal(la[k], lb[k]) for k in la)
    assert a.shape == (8, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    assert set(la) == {"style", *R.ATTRIBUTES}


def test_training_resumes_exactly_and_exports(tmp_path):
    cfg = dict(batch=6, ckpt_every=1, eval_every=1000, eval_faces=12)
    T.train(T.TrainConfig(steps=3, **cfg), tmp_path / "straight")
    T.train(T.TrainConfig(steps=2, **cfg), tmp_path / "resumed")
    T.train(T.TrainConfig(steps=3, **cfg), tmp_path / "resumed", export_to=tmp_path / "copy" / "evaluator.pt")
    assert "resuming at step 2" in (tmp_path / "resumed" / "train.log").read_text()
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    loaded = E.load_evaluator(tmp_path / "copy" / "evaluator.pt")
    assert loaded.metadata["steps"] == 3 and not loaded.training
    with pytest.raises(NadaError, match="other settings"):
        T.train(T.TrainConfig(steps=4, **{**cfg, "batch": 7}), tmp_path / "resumed")


def test_missing_or_corrupt_weights_give_clear_errors(tmp_path):
    with pytest.raises(NadaError, match="not found"):
        E.load_evaluator(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(NadaError, match="evaluator weights .* truncated, corrupt or not a weights file"):
        E.load_evaluator(bad)


@pytest.fixture(scope="module")
def shipped() -> E.Evaluator:
    if not E.default_weights_path().is_file():
        pytest.skip(
            f"evaluator weights not found at {E.default_weights_path()} (train them with python -m "
            "nada.toy.evaluator_train)"
        )
    return E.load_evaluator()


def test_shipped_evaluator_accuracy_on_fresh_renders(shipped):
    images, labels = E.fresh_renders(360, seed=31337)  # a seed the training never used
    acc = E.accuracy(shipped, images, labels)
    assert acc["style"] >= 0.98, acc
    for key in R.ATTRIBUTES:
        assert acc[key] >= 0.95, acc


def test_shipped_evaluator_tolerates_generator_like_softness(shipped):
    images, labels = E.fresh_renders(120, seed=4242)
    soft = T._gaussian_blur(images, torch.full((len(images),), 0.8))
    acc = E.accuracy(shipped, soft, labels)
    assert min(acc.values()) >= 0.85, acc
