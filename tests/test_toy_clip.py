"""The toy CLIP: its training pieces (fast, untrained) and the shipped weights (loaded through nada.guidance.clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nada.toy import clip_train as T
from nada.toy import render as R

ASSETS = T.Path(__file__).resolve().parents[1] / "src" / "nada" / "assets" / "toy"
CLIP_VOCAB = T.CLIP_CONFIG["text_cfg"]["vocab_size"]


def shipped() -> tuple[T.Path, T.Path]:
    config, weights = ASSETS / T.CONFIG_FILE, ASSETS / T.WEIGHTS_FILE
    if not (config.is_file() and weights.is_file()):
        pytest.skip(f"toy CLIP weights not found in {ASSETS} (train them with python -m nada.toy.clip_train)")
    return config, weights


# ---------------------------------------------------------------- training pieces


def test_batch_pairs_truth_and_compatibility():
    cfg = T.TrainConfig(faces=12)
    batch = T.make_batch(cfg, step=3)
    n = cfg.faces
    assert batch.images.shape == (2 * n, 3, 64, 64) and batch.images.abs().max() <= 1
    assert batch.truth.shape == (2 * n, len(T.FACT_KEYS)) and len(batch.texts) == len(batch.facts)
    # Each pair differs in exactly the fact its pair_key names.
    for i, k in enumerate(batch.pair_key):
        differs = np.nonzero(batch.truth[i] != batch.truth[n + i])[0]
        assert list(differs) == [k]
    pos = T.compatibility(batch.truth, batch.facts)
    assert pos[:, : 2 * n].diagonal().all(), "an image's own caption must be true of it"
    for key, idx in batch.class_text.items():
        col = T.FACT_KEYS.index(key)
        assert torch.equal(pos[:, idx].float().argmax(1), torch.from_numpy(batch.truth[:, col]))
    again = T.make_batch(cfg, step=3)
    assert torch.equal(batch.images, again.images) and batch.texts == again.texts


def test_appearance_changes_keep_labels_and_only_touch_the_chosen_images():
    plain = T.make_batch(T.TrainConfig(faces=12), step=3)
    changed = T.make_batch(T.TrainConfig(faces=12, appearance_aug=1.0), step=3)
    # Same faces, styles and captions: only the pixels differ, and they stay in range.
    assert np.array_equal(plain.truth, changed.truth) and plain.texts == changed.texts
    assert changed.images.abs().max() <= 1 and not torch.equal(plain.images, changed.images)
    img = R.render_tensor(R.sample_params(6, seed=0), "photo")
    out = T.appearance_change(img, np.random.default_rng(0))
    assert out.shape == img.shape and (out - img).abs().mean(dim=(1, 2, 3)).min() > 0.01
    # With the share at 0 no image is changed and the random stream is the one of older runs.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert torch.equal(T.augment(img, rng_a, 0.0), T.augment(img, rng_b))
    assert rng_a.random() == rng_b.random()


def test_exploit_pairs_caption_an_adapted_generators_output_as_a_photo_beside_the_true_render():
    from nada.generator.checkpoints import load_generator
    from nada.toy.generator_train import face_params

    n = 8
    params = R.sample_params(n, seed=1)
    both, styles = R.FaceParams.concat([params, params]), ["sketch"] * (2 * n)
    images = R.render_tensor(both, "sketch", seed=0)
    pair_key = np.full(n, 3)
    cfg = T.TrainConfig(negatives_share=0.5, negatives_from="toy")
    out, out_styles, out_images = T.exploit_pairs(cfg, np.random.default_rng(0), both, styles, images, pair_key)
    rng = np.random.default_rng(0)  # the function's own draws, replayed
    pick = np.flatnonzero(rng.random(n) < 0.5)
    rng.integers(1, size=len(pick))
    z = torch.from_numpy(rng.standard_normal((len(pick), 64)).astype(np.float32))
    assert 0 < len(pick) < n and np.array_equal(np.flatnonzero(pair_key == 0), pick)
    with torch.no_grad():
        drawn = load_generator("toy").eval()(z, noise_mode="const").clamp(-1, 1)
    assert torch.allclose(out_images[pick], drawn, atol=1e-5)
    faces, truth = face_params(z), T.truth_table(out, out_styles)
    for col, key in enumerate(T.FACT_KEYS[1:], start=1):  # both images of a picked pair show the latent's face
        assert np.array_equal(truth[pick, col], getattr(faces, key))
        assert np.array_equal(truth[pick + n, col], getattr(faces, key))
    assert (truth[pick, 0] == 0).all() and (truth[pick + n, 0] != 0).all()  # a photo, then another style
    rest = np.setdiff1d(np.arange(2 * n), np.concatenate([pick, pick + n]))
    assert torch.equal(out_images[rest], images[rest]) and all(out_styles[i] == "sketch" for i in rest)
    # In a training step the swapped pairs keep the batch's invariants.
    batch = T.make_batch(T.TrainConfig(faces=12, negatives_share=0.5, negatives_from="toy"), step=3)
    for i, k in enumerate(batch.pair_key):
        assert list(np.nonzero(batch.truth[i] != batch.truth[12 + i])[0]) == [k]
    assert T.compatibility(batch.truth, batch.facts)[:, :24].diagonal().all()
    with pytest.raises(T.NadaError, match="give --negatives-from"):
        T.make_batch(T.TrainConfig(faces=12, negatives_share=0.5), step=3)


def test_colour_fields_are_smooth_keep_labels_and_are_drawn_only_when_asked():
    plain = T.make_batch(T.TrainConfig(faces=6), step=2)
    tinted = T.make_batch(T.TrainConfig(faces=6, colour_aug=1.0), step=2)
    assert np.array_equal(plain.truth, tinted.truth) and plain.texts == tinted.texts
    img = torch.zeros(4, 3, 64, 64)
    out = T.colour_change(img, np.random.default_rng(1), 1.0, 0.5)
    assert out.abs().max() <= 0.5 and out.abs().mean() > 0.02
    step = (out[..., 1:] - out[..., :-1]).abs().max()  # 4x4 offsets over 64 pixels: no pixel-level pattern
    assert step < 0.5 * 2 / 21 + 1e-6
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert T.colour_change(img, rng_a, 0.0, 0.5) is img and rng_a.random() == rng_b.random()


def test_stability_attack_stays_in_its_ball_and_moves_the_embedding_more_than_noise():
    model = T.build_model(seed=0)
    img = R.render_tensor(R.sample_params(8, seed=1), "photo")
    eps = 0.05
    attacked = T.stability_attack(model, img, eps, steps=3, seed=4)
    assert attacked.abs().max() <= 1 and (attacked - img).abs().max() <= eps + 1e-6
    assert all(p.grad is None for p in model.parameters()), "the attack must leave no parameter gradients"
    assert torch.equal(attacked, T.stability_attack(model, img, eps, steps=3, seed=4))
    noise = (img + eps * torch.randn(img.shape, generator=torch.Generator().manual_seed(0)).sign()).clamp(-1, 1)
    clean = T.encode_images(model, img)

    def moved(x: torch.Tensor) -> torch.Tensor:
        return (T.encode_images(model, x) - clean).norm(dim=-1).mean()

    assert moved(attacked) > 2 * moved(noise)


def test_stability_term_is_in_the_loss_only_when_asked():
    batch = T.make_batch(T.TrainConfig(faces=4), step=0)
    trainee = T.build_trainee(T.TrainConfig())
    plain = T.losses(trainee, T.tokenizer(), batch, T.TrainConfig())
    robust = T.losses(trainee, T.tokenizer(), batch, T.TrainConfig(adv_eps=0.05))
    assert "adv" not in plain and robust["adv"] > 0
    assert torch.allclose(robust["total"], plain["total"] + 10.0 * robust["adv"])


def test_blend_term_is_drawn_only_when_asked_and_at_full_blend_is_the_pairs_direction_term(tmp_path):
    plain_cfg, blend_cfg = (
        T.TrainConfig(faces=8),
        T.TrainConfig(faces=8, blend_weight=0.5, blend_min=0.2, blend_max=0.4),
    )
    plain, batch = T.make_batch(plain_cfg, step=1), T.make_batch(blend_cfg, step=1)
    assert plain.blend_t is None and torch.equal(plain.images, batch.images) and plain.texts == batch.texts
    assert batch.blend_t.shape == (8,) and (batch.blend_t >= 0.2).all() and (batch.blend_t <= 0.4).all()
    trainee = T.build_trainee(blend_cfg)
    terms = T.losses(trainee, T.tokenizer(), batch, blend_cfg)
    assert "blend" not in T.losses(trainee, T.tokenizer(), batch, plain_cfg)
    assert torch.allclose(
        terms["total"], T.losses(trainee, T.tokenizer(), batch, plain_cfg)["total"] + 0.5 * terms["blend"]
    )
    # At t = 1 a blend is the pair's second image: the term is the direction term over the cross-style pairs.
    cross = batch.pair_key == 0
    assert cross.any() and not cross.all()
    only_cross = T.Batch(**{**vars(batch), "blend_t": np.ones(8)})
    fi = T.encode_images(trainee.clip, batch.images)
    d_txt = torch.randn(8, fi.shape[1])
    d_txt = F.normalize(d_txt, dim=-1)
    expect = (1 - (F.normalize(fi[8:] - fi[:8], dim=-1) * d_txt).sum(-1))[torch.from_numpy(cross)].mean()
    assert torch.allclose(T.blend_direction_loss(trainee.clip, only_cross, fi[:8], d_txt), expect, atol=1e-5)
    with pytest.raises(T.NadaError, match="give 0 < --blend-min <= --blend-max <= 1"):
        T.TrainConfig(blend_weight=1.0, blend_min=0.0)
    out = tmp_path / "run"
    assert T.main(["--out", str(out), "--blend-weight", "1", "--blend-min", "0.6", "--blend-max", "0.2"]) == 2
    assert not out.exists()


def test_look_captions_name_only_changed_images_and_leave_the_other_data_as_it_was():
    base = T.TrainConfig(faces=12, appearance_aug=0.5)
    plain, named = (
        T.make_batch(base, step=2),
        T.make_batch(T.TrainConfig(faces=12, appearance_aug=0.5, look_captions=1.0), step=2),
    )
    assert torch.equal(plain.images, named.images) and plain.texts[24:] == named.texts[24:]
    looks = named.truth[:, -1]
    assert named.truth.shape == (24, len(T.FACT_KEYS) + 1) and np.array_equal(named.truth[:, :-1], plain.truth)
    assert (looks > 0).any() and (looks == 0).any()
    for i, (before, after) in enumerate(zip(plain.texts[:24], named.texts[:24])):
        assert after == (f"{before}, {T.LOOKS[looks[i] - 1]}" if looks[i] else before)
    pos = T.compatibility(named.truth, named.facts)
    assert pos[:, :24].diagonal().all(), "an image's own caption must be true of it"
    changed, unchanged = int(np.flatnonzero(looks > 0)[0]), np.flatnonzero(looks == 0)
    assert not pos[unchanged, changed].any(), "a caption naming a look is not true of an unchanged image"


def test_alignment_term_is_in_the_loss_only_when_asked_and_trains_the_image_tower():
    cfg = T.TrainConfig(faces=8, align_weight=2.0)
    plain_cfg = T.TrainConfig(faces=8)
    batch, plain = T.make_batch(cfg, step=1), T.make_batch(plain_cfg, step=1)
    assert plain.clean is None and torch.equal(plain.images, batch.images) and plain.texts == batch.texts
    trainee = T.build_trainee(cfg)
    terms = T.losses(trainee, T.tokenizer(), batch, cfg)
    assert "align" not in T.losses(trainee, T.tokenizer(), batch, plain_cfg)
    assert 0 < float(terms["align"]) < 2
    # Its own gradient (through the double backward) reaches the image tower and lowers it.
    tower = [p for p in trainee.clip.visual.parameters()]
    d_txt = F.normalize(torch.randn(8, T.CLIP_CONFIG["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    before = T.gradient_alignment_loss(trainee.clip, batch, d_txt)
    grads = torch.autograd.grad(before, tower)
    norm = torch.cat([g.flatten() for g in grads]).norm()
    assert norm > 0
    with torch.no_grad():
        for p, g in zip(tower, grads):
            p -= 1e-2 * g / norm
    assert T.gradient_alignment_loss(trainee.clip, batch, d_txt) < before
    high = T.gradient_alignment_loss(trainee.clip, batch, d_txt, band="high")
    assert 0 < float(high) < 2 and not torch.isclose(high, T.gradient_alignment_loss(trainee.clip, batch, d_txt))


def test_multi_positive_loss_prefers_positives():
    positive = torch.tensor([[True, False, True], [False, True, False]])
    good = torch.tensor([[5.0, -5.0, 5.0], [-5.0, 5.0, -5.0]])
    assert T.multi_positive_loss(good, positive) < T.multi_positive_loss(-good, positive)
    assert T.multi_positive_loss(good, torch.ones(2, 3, dtype=torch.bool)) == 0  # nothing to tell apart


def test_training_resumes_exactly(tmp_path):
    cfg = dict(faces=3, ckpt_every=1, eval_every=1000, eval_faces=12, direction_faces=4)
    T.train(T.TrainConfig(steps=3, **cfg), tmp_path / "straight")
    T.train(T.TrainConfig(steps=2, **cfg), tmp_path / "resumed")
    T.train(T.TrainConfig(steps=3, **cfg), tmp_path / "resumed")
    assert "resuming at step 2" in (tmp_path / "resumed" / "train.log").read_text()
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    with pytest.raises(T.NadaError, match="other settings"):
        T.train(T.TrainConfig(steps=4, **{**cfg, "faces": 4}), tmp_path / "resumed")
    model = T.load_exported(tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "clip_config.json").read_text()) == T.CLIP_CONFIG
    assert model.visual.image_size == (64, 64)


def test_runs_saved_before_an_option_existed_resume_with_its_default(tmp_path):
    cfg = dict(faces=3, ckpt_every=1, eval_every=1000, eval_faces=12, direction_faces=4)
    T.train(T.TrainConfig(steps=1, **cfg), tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    for key in ("adv_eps", "adv_steps", "adv_weight"):
        del state["config"][key]
    torch.save(state, tmp_path / "state.pt")
    T.train(T.TrainConfig(steps=2, **cfg), tmp_path)
    assert "resuming at step 1" in (tmp_path / "train.log").read_text()
    with pytest.raises(T.NadaError, match="adv_eps"):
        T.train(T.TrainConfig(steps=3, adv_eps=0.1, **cfg), tmp_path)


def test_locked_text_resnet_run_trains_only_its_image_tower_and_loads_through_nada_clip(tmp_path):
    from nada.guidance.clip import load_clip

    T.export(T.build_model(seed=3), tmp_path / "text")
    text_file = tmp_path / "text" / T.WEIGHTS_FILE
    cfg = T.TrainConfig(
        steps=2,
        faces=3,
        ckpt_every=1,
        eval_every=1000,
        eval_faces=12,
        direction_faces=4,
        vision="resnet",
        text_from=str(text_file),
        seed=5,
        lr=0.01,
        warmup=1,
    )
    T.train(cfg, tmp_path / "run")
    text = torch.load(text_file, weights_only=True)
    start = T.build_model(seed=5, config=T.model_config("resnet")).state_dict()
    trained = torch.load(tmp_path / "run" / T.WEIGHTS_FILE, weights_only=True)
    for k, v in trained.items():
        if T.is_text_key(k):
            assert torch.equal(v, text[k]), k  # frozen: exactly the source's fp16 values
    moved = [
        k
        for k in trained
        if k.startswith("visual.")
        and trained[k].is_floating_point()
        and not torch.allclose(trained[k].float(), start[k], atol=1e-3)
    ]
    assert any("conv" in k for k in moved) and any("attnpool" in k for k in moved)
    config = json.loads((tmp_path / "run" / T.CONFIG_FILE).read_text())
    assert config["vision_cfg"] == T.VISION_TOWERS["resnet"]
    wrapped = load_clip(str(tmp_path / "run"))
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    direct = T.encode_images(T.load_exported(tmp_path / "run"), img)
    assert torch.allclose(direct, F.normalize(wrapped.encode_image(img), dim=-1), atol=1e-4)


def test_bad_image_tower_or_text_source_is_refused(tmp_path):
    with pytest.raises(T.NadaError, match="unknown image tower 'rn50'"):
        T.model_config("rn50")
    T.export(T.build_model(seed=0), tmp_path / "vit")
    vit_file = str(tmp_path / "vit" / T.WEIGHTS_FILE)
    cfg = dict(steps=1, faces=3, eval_every=1000, eval_faces=12, direction_faces=4)
    with pytest.raises(T.NadaError, match="does not fit the 'resnet' image tower"):
        T.train(T.TrainConfig(vision="resnet", init_from=vit_file, **cfg), tmp_path / "a")
    with pytest.raises(T.NadaError, match="no CLIP weights at"):
        T.train(T.TrainConfig(text_from=str(tmp_path / "missing.pt"), **cfg), tmp_path / "b")


# ---------------------------------------------------------------- shipped weights


@pytest.fixture(scope="module")
def toy_clip():
    shipped()
    return T.load_exported(ASSETS), T.tokenizer()


def test_shipped_files_are_small_and_safe():
    config, weights = shipped()
    assert json.loads(config.read_text()) == T.CLIP_CONFIG
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in sd.values())
    assert weights.stat().st_size < 3e6  # the token table keeps only its trained rows


def test_loads_through_nada_clip_with_the_same_features(toy_clip):
    clip = pytest.importorskip("nada.guidance.clip")
    model, tok = toy_clip
    wrapped = clip.load_clip("toy")
    img = R.render_tensor(R.sample_params(6, seed=5), "watercolor", seed=5)
    ours = T.encode_images(model, img)
    theirs = F.normalize(wrapped.encode_image(img), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-4)
    texts = ["a sketch of a smiling face", "photo"]
    assert torch.allclose(T.encode_texts(model, tok, texts), F.normalize(wrapped.encode_text(texts), dim=-1), atol=1e-4)


def test_zero_shot_accuracy_on_fresh_renders(toy_clip):
    model, tok = toy_clip
    acc = T.zero_shot_accuracy(model, tok, n=300, seed=2024)  # a seed the training never used
    assert acc["style"] >= 0.95, T.format_accuracy(acc)
    for key in R.ATTRIBUTES:
        assert acc[key] >= 0.90, T.format_accuracy(acc)


def test_sketch_minus_photo_follows_the_text_direction(toy_clip):
    model, tok = toy_clip
    cos = T.direction_check(model, tok, source="photo", n=48, seed=77)
    assert cos["sketch"] > 0.2 and min(cos.values()) > 0.1, cos


# ---------------------------------------------------------------- the stability-trained copy ("toy-robust")

ROBUST = ASSETS / "clip_robust"


def packaged_copy(folder, name: str):
    """A packaged toy CLIP that shares the shipped one's token table, with the tokenizer (skips when absent)."""
    if not (folder / T.WEIGHTS_FILE).is_file():
        pytest.skip(f"{name} CLIP weights not found in {folder}")
    return T.load_exported(folder, tokens_from=ASSETS), T.tokenizer()


@pytest.fixture(scope="module")
def robust_clip():
    return packaged_copy(ROBUST, "toy-robust")


def test_robust_copy_keeps_zero_shot_accuracy(robust_clip):
    model, tok = robust_clip
    assert json.loads((ROBUST / T.CONFIG_FILE).read_text()) == T.CLIP_CONFIG
    # It shares the shipped CLIP's token table but for the rows its fine-tuning changed.
    assert (ROBUST / T.WEIGHTS_FILE).stat().st_size < 3e6
    acc = T.zero_shot_accuracy(model, tok, n=300, seed=2024)
    assert acc["style"] >= 0.95, T.format_accuracy(acc)
    for key in R.ATTRIBUTES:
        assert acc[key] >= 0.90, T.format_accuracy(acc)


def test_robust_copy_moves_far_less_under_attack_and_loads_by_name(toy_clip, robust_clip):
    img = R.render_tensor(R.sample_params(32, seed=77), "photo", seed=77)

    def moved(model: torch.nn.Module) -> float:
        attacked = T.stability_attack(model, img, eps=0.1, steps=3, seed=0)
        with torch.no_grad():
            return float((T.encode_images(model, attacked) - T.encode_images(model, img)).norm(dim=-1).mean())

    # Measured on these renders: 1.45 for the shipped CLIP, 0.32 for its stability-trained copy.
    assert moved(robust_clip[0]) < 0.5 * moved(toy_clip[0])
    clip = pytest.importorskip("nada.guidance.clip")
    wrapped = clip.load_clip("toy-robust")
    assert wrapped.name == "toy-robust"
    assert torch.allclose(
        T.encode_images(robust_clip[0], img), F.normalize(wrapped.encode_image(img), dim=-1), atol=1e-4
    )


# ---------------------------------------------------------------- the convolutional guide ("toy-rn")

RESNET = ASSETS / "clip_rn"


@pytest.fixture(scope="module")
def resnet_clip():
    return packaged_copy(RESNET, "toy-rn")


def locked_text_guide_accuracy(folder, vision: str, model, tok, toy_clip) -> dict:
    """Checks every packaged locked-text guide shares (config, size, the toy CLIP's text tower); its zero-shot
    accuracy on 300 fresh renders."""
    assert json.loads((folder / T.CONFIG_FILE).read_text()) == T.model_config(vision)
    assert (folder / T.WEIGHTS_FILE).stat().st_size < 4e6
    texts = ["a sketch of a smiling face", "a photo of a face with glasses"]
    assert torch.equal(T.encode_texts(model, tok, texts), T.encode_texts(toy_clip[0], tok, texts))
    acc = T.zero_shot_accuracy(model, tok, n=300, seed=2024)
    assert acc["style"] >= 0.95, T.format_accuracy(acc)
    return acc


def test_resnet_guide_shares_the_text_tower_and_reads_every_attribute(toy_clip, resnet_clip):
    model, tok = resnet_clip
    acc = locked_text_guide_accuracy(RESNET, "resnet", model, tok, toy_clip)
    for key in R.ATTRIBUTES:
        assert acc[key] >= 0.95, T.format_accuracy(acc)
    cos = T.direction_check(model, tok, source="photo", n=48, seed=77)
    assert cos["sketch"] > 0.5 and min(cos.values()) > 0.3, cos
    clip = pytest.importorskip("nada.guidance.clip")
    wrapped = clip.load_clip("toy-rn")
    img = R.render_tensor(R.sample_params(4, seed=9), "sketch", seed=9)
    assert torch.allclose(T.encode_images(model, img), F.normalize(wrapped.encode_image(img), dim=-1), atol=1e-4)


# ---------------------------------------------------------------- the stroke-seeing guide ("toy-strokes")

STROKES = ASSETS / "clip_strokes"


def test_stroke_guide_reads_styles_from_strokes_alone_and_loads_by_name(toy_clip):
    model, tok = packaged_copy(STROKES, "toy-strokes")
    acc = locked_text_guide_accuracy(STROKES, "resnet-strokes", model, tok, toy_clip)
    # Colour is invisible to it: hair colour is read from the hair's luma and texture only.
    assert min(acc[k] for k in R.ATTRIBUTES if k != "hair_color") >= 0.85, T.format_accuracy(acc)
    assert acc["hair_color"] >= 0.7, T.format_accuracy(acc)
    img = R.render_tensor(R.sample_params(4, seed=9), "photo", seed=9)
    # A uniform brightness offset draws no stroke, so it leaves the embedding where it was.
    assert torch.allclose(T.encode_images(model, img + 0.1), T.encode_images(model, img), atol=1e-4)
    clip = pytest.importorskip("nada.guidance.clip")
    wrapped = clip.load_clip("toy-strokes")
    assert torch.allclose(T.encode_images(model, img), F.normalize(wrapped.encode_image(img), dim=-1), atol=1e-4)


def test_token_table_sharing_round_trips_and_refuses_a_foreign_base():
    from nada.toy.clips import TOKEN_TABLE, pack_token_table, unpack_token_table

    base = T.build_model(seed=0).state_dict()
    tuned = {k: v.clone() for k, v in base.items()}
    tuned[TOKEN_TABLE][[3, 70]] += 1.0
    tuned["logit_scale"] += 0.5
    packed = pack_token_table(tuned, base)
    assert TOKEN_TABLE not in packed and packed["token_embedding.changed_rows"].tolist() == [3, 70]
    rebuilt = unpack_token_table(packed, base)
    assert set(rebuilt) == set(tuned) and all(torch.equal(rebuilt[k], tuned[k]) for k in tuned)
    small = {TOKEN_TABLE: base[TOKEN_TABLE][:50]}
    with pytest.raises(T.NadaError, match="do not fit the base table"):
        unpack_token_table(packed, small)
    with pytest.raises(T.NadaError, match="not a shared-table copy"):
        unpack_token_table(tuned, base)


def test_a_table_kept_against_the_seeded_untrained_rows_round_trips_and_says_what_it_needs():
    from nada.toy.clips import TOKEN_TABLE, full_state_dict, pack_against_untrained, pack_token_table

    sd = T.build_model(seed=4).state_dict()
    trained = torch.tensor([5, 9, 400])
    packed = pack_against_untrained(sd, trained, seed=3)
    assert TOKEN_TABLE not in packed and packed["token_embedding.changed_rows"].tolist() == [5, 9, 400]
    full = full_state_dict(packed)
    assert set(full) == set(sd) and all(torch.equal(full[k], sd[k]) for k in sd if k != TOKEN_TABLE)
    assert torch.equal(full[TOKEN_TABLE][trained], sd[TOKEN_TABLE][trained])
    assert torch.equal(full_state_dict(packed)[TOKEN_TABLE], full[TOKEN_TABLE])  # the same stand-in every time
    assert full_state_dict(sd) is sd  # a whole table is returned as it is
    with pytest.raises(T.NadaError, match="load them with that CLIP's weights as the base"):
        full_state_dict(pack_token_table(sd, T.build_model(seed=5).state_dict()))


def test_the_shipped_toy_clip_keeps_only_its_trained_token_rows():
    from nada.toy.clips import TOKEN_TABLE, full_state_dict

    _, weights = shipped()
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    assert TOKEN_TABLE not in sd and len(sd["token_embedding.changed_rows"]) == 48
    assert full_state_dict(sd)[TOKEN_TABLE].shape == (CLIP_VOCAB, T.CLIP_CONFIG["text_cfg"]["width"])
    # Every token of the prompts the toy world uses is a trained row.
    tok = T.tokenizer()
    used = torch.unique(
        tok([t.format(s) for t in R.TEMPLATES for s in R.STYLES] + T.class_prompts(np.random.default_rng(0))[0])
    )
    assert set(used.tolist()) - {0} <= set(sd["token_embedding.changed_rows"].tolist())


def test_export_can_share_the_token_table(tmp_path):
    base_model, tuned_model = T.build_model(seed=0), T.build_model(seed=0)
    with torch.no_grad():
        tuned_model.token_embedding.weight[5] += 1.0
        tuned_model.visual.proj += 0.1
    T.export(base_model, tmp_path / "base")
    T.export(tuned_model, tmp_path / "copy", share_tokens_with=tmp_path / "base" / T.WEIGHTS_FILE)
    assert (tmp_path / "copy" / T.WEIGHTS_FILE).stat().st_size < 0.5 * (
        tmp_path / "base" / T.WEIGHTS_FILE
    ).stat().st_size
    rebuilt = T.load_exported(tmp_path / "copy", tokens_from=tmp_path / "base").state_dict()
    for k, v in tuned_model.state_dict().items():
        assert torch.equal(rebuilt[k], v.half().float()), k
    # A run may start from such a copy when its locked text tower comes from the base it shares the table with.
    cfg = T.TrainConfig(
        init_from=str(tmp_path / "copy" / T.WEIGHTS_FILE), text_from=str(tmp_path / "base" / T.WEIGHTS_FILE)
    )
    started = T.build_trainee(cfg).clip.state_dict()
    assert torch.equal(started["visual.proj"], tuned_model.visual.proj.half().float())
    with pytest.raises(T.NadaError, match="token-table rows that differ"):
        T.build_trainee(T.TrainConfig(init_from=cfg.init_from))
