"""Toy generator: the regression-training pieces on tiny models, and the shipped weights
(nada.load_generator("toy"))."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nada.errors import NadaError
from nada.toy import generator_train as gt

# A model small enough that a few steps take well under a second.
TINY = dict(
    style_dim=32,
    n_mlp=2,
    channels=((4, 16), (8, 16), (16, 8), (32, 8), (64, 8)),
    batch_size=2,
    ckpt_every=2,
    sample_every=2,
    eval_size=8,
)


def tiny_config(**overrides) -> gt.TrainConfig:
    return gt.TrainConfig(**{**TINY, "steps": 4, **overrides})


def test_face_latent_depends_only_on_direction_of_z():
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    u = gt.face_latent(z, 18)
    assert u.shape == (5, 18)
    # The mapping network pixel-normalises z, so the target must not change with |z|.
    assert abs(gt.face_latent(3.0 * z, 18) - u).max() < 1e-6
    # It is the normalised z itself, hence still about standard normal per coordinate.
    big = gt.face_latent(torch.randn(4000, 64, generator=torch.Generator().manual_seed(1)), 18)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1.0) < 0.05


def test_face_latent_lays_face_shapes_out_so_width_changes_monotonically():
    from nada.toy import render as R

    z = torch.randn(3000, 64, generator=torch.Generator().manual_seed(5))
    u = gt.face_latent(z, R.LATENT_DIM)
    zn = (z / z.pow(2).mean(1, keepdim=True).sqrt()).double().numpy()
    # Only the reordered coordinate changes; the others are the pixel-normalised z.
    assert abs(u[:, 1:] - zn[:, 1 : R.LATENT_DIM]).max() < 1e-5
    shapes = R.params_from_latent(u).face_shape[zn[:, 0].argsort()]
    names = [R.ATTRIBUTES["face_shape"][i] for i in shapes]
    # Along z the shapes come in LATENT_ORDER, each a third of the faces, in contiguous runs.
    assert names[:900] == ["oval"] * 900 and names[1100:1900] == ["square"] * 800 and names[-900:] == ["round"] * 900
    assert (names[:1000].count("oval") + names[1000:2000].count("square") + names[2000:].count("round")) > 2900
    # Along that order the drawn face gets wider and shorter, which a smooth network can follow.
    width = [dict(round=0.43, oval=0.35, square=0.42)[n] for n in gt.LATENT_ORDER["face_shape"]]
    assert width == sorted(width)


def test_render_targets_are_photo_renders_of_the_face_latent():
    from nada.toy import render as R

    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    t = gt.render_targets(z, seed=7)
    assert t.shape == (3, 3, 64, 64) and t.min() >= -1 and t.max() <= 1
    expected = R.render_tensor(R.params_from_latent(gt.face_latent(z, R.LATENT_DIM)), "photo", seed=7)
    assert torch.equal(t, expected)


def test_regression_loss_is_zero_only_for_equal_images():
    a = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    b = a.clone()
    b[:, :, 10:20, 10:20] += 0.5
    for kind in gt.LOSSES:
        assert gt.regression_loss(a, a, kind).item() == 0.0
        assert gt.regression_loss(a, b, kind).item() > 0
    # A 0.5 error on 100 of 4096 pixels: squared error is half the absolute one at full resolution.
    frac = 100 / 4096
    plain = gt.regression_loss(a, b, "mse", multiscale_weight=0.0).item()
    assert plain == pytest.approx(0.25 * frac, rel=1e-4)
    assert gt.regression_loss(a, b, "l1", multiscale_weight=0.0).item() == pytest.approx(0.5 * frac, rel=1e-4)
    # The difference term reacts to the square's edges, the coarse scales to its blurred mass.
    assert gt.regression_loss(a, b, "mse", multiscale_weight=0.0, gradient_weight=1.0).item() > plain
    assert gt.regression_loss(a, b, "mse").item() > plain
    with pytest.raises(NadaError, match="unknown regression loss"):
        gt.regression_loss(a, b, "l3")


def test_pixel_weights_single_out_eyes_mouth_and_glasses():
    from nada.toy import render as R

    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    w = gt.pixel_weights(z, 9.0)
    mask = torch.from_numpy(R.detail_mask(R.params_from_latent(gt.face_latent(z, R.LATENT_DIM))))
    assert w.shape == (4, 1, 64, 64) and torch.equal(w[:, 0], 1.0 + 9.0 * mask)
    assert w.min() == 1.0 and w.max() == pytest.approx(10.0)
    # Details are a small share of the image, all inside the face's middle.
    share = (mask > 0.5).float().mean().item()
    assert 0.005 < share < 0.08
    assert mask[:, :16].sum() == 0 and mask[:, -12:].sum() == 0
    # The weight multiplies each pixel's error: an error on a detail pixel costs more.
    target = gt.render_targets(z, seed=0)
    on, off = target.clone(), target.clone()
    detail = (mask[0] > 0.9).nonzero()[0]
    on[0, :, detail[0], detail[1]] += 0.5
    off[0, :, 2, 2] += 0.5
    plain = gt.regression_loss(on, target, "mse", multiscale_weight=0.0).item()
    assert plain == pytest.approx(gt.regression_loss(off, target, "mse", multiscale_weight=0.0).item())
    assert (
        gt.regression_loss(on, target, "mse", 0.0, weight=w).item()
        > 9 * gt.regression_loss(off, target, "mse", 0.0, weight=w).item()
    )
    # The face outline adds its own weight where asked.
    outline = torch.from_numpy(R.outline_mask(R.params_from_latent(gt.face_latent(z, R.LATENT_DIM))))
    assert torch.allclose(gt.pixel_weights(z, 9.0, 4.0)[:, 0], 1.0 + 9.0 * mask + 4.0 * outline)
    assert 0.02 < (outline > 0.5).float().mean().item() < 0.12


def test_lr_schedule_holds_then_decays_to_five_percent():
    cfg = gt.TrainConfig(steps=1000, decay_start=0.6)
    assert gt.lr_factor(0, cfg) == 1.0 and gt.lr_factor(599, cfg) == 1.0
    assert 0.05 < gt.lr_factor(800, cfg) < 1.0
    assert gt.lr_factor(1000, cfg) == pytest.approx(0.05)


def test_mapping_group_has_the_requested_effective_rate():
    cfg = tiny_config(mapping_lr=0.1)
    G = gt.build_generator(cfg)
    opt = gt.build_optimizer(G, cfg)
    synth, mapping = opt.param_groups
    assert synth["lr"] == cfg.lr
    # Mapping weights are used multiplied by lr_mlp, so their Adam step is divided by it.
    assert mapping["lr"] * G.config.lr_mlp == pytest.approx(cfg.lr * cfg.mapping_lr)
    n_mapping = sum(p.numel() for n, p in G.named_parameters() if n.startswith("style."))
    assert sum(p.numel() for p in mapping["params"]) == n_mapping > 0


def test_initialisation_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = gt.build_generator(tiny_config(seed=5)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    b = gt.build_generator(tiny_config(seed=5)).state_dict()
    c = gt.build_generator(tiny_config(seed=6)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input.input"], c["input.input"])


def _state(path: Path) -> dict:
    return torch.load(path / gt.STATE_FILE, weights_only=True)


def test_interrupted_run_resumes_exactly_like_an_uninterrupted_one(tmp_path: Path):
    cfg = tiny_config()
    gt.train(cfg, tmp_path / "whole", progress=False)
    gt.train(cfg, tmp_path / "split", progress=False, stop_after=2)
    assert _state(tmp_path / "split")["step"] == 2
    gt.train(cfg, tmp_path / "split", progress=False)
    whole, split = _state(tmp_path / "whole"), _state(tmp_path / "split")
    assert whole["step"] == split["step"] == 4
    for key in ("model", "G_ema"):
        assert all(torch.equal(whole[key][k], split[key][k]) for k in whole[key]), key
    assert torch.equal(whole["optimizer"]["state"][0]["exp_avg"], split["optimizer"]["state"][0]["exp_avg"])
    # Training changed the weights, and the log and the sample grids were written.
    init = gt.build_generator(cfg).state_dict()
    assert not torch.equal(init["input.input"], whole["model"]["input.input"])
    log = (tmp_path / "split" / "train.log").read_text()
    assert "resumed from" in log and "eval_l1" in log
    assert (tmp_path / "split" / "samples" / "step000004.png").is_file()


def test_batches_depend_only_on_seed_and_step_and_workers_render_the_same():
    cfg = tiny_config()
    z3, t3, w3 = gt.batch_for_step(cfg, 3)
    assert z3.shape == (2, 32) and t3.shape == (2, 3, 64, 64) and w3.shape == (2, 1, 64, 64)
    again = gt.batch_for_step(cfg, 3)
    assert all(torch.equal(a, b) for a, b in zip((z3, t3, w3), again))
    assert not torch.equal(z3, gt.batch_for_step(cfg, 4)[0])
    assert not torch.equal(z3, gt.batch_for_step(tiny_config(seed=1), 3)[0])
    assert torch.equal(t3, gt.render_targets(z3, seed=3))
    in_process = list(gt.step_batches(cfg, 2, 5, workers=0, pin_memory=False))
    by_workers = list(gt.step_batches(cfg, 2, 5, workers=2, pin_memory=False))
    assert len(in_process) == len(by_workers) == 3
    for a, b in zip(in_process, by_workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(in_process[1][0], z3)


def test_time_limit_stops_after_a_saved_step_and_the_run_continues(tmp_path: Path):
    cfg = tiny_config(ckpt_every=100)
    gt.train(cfg, tmp_path, progress=False, time_limit_s=0.0)
    assert _state(tmp_path)["step"] == 1 and not gt.is_finished(tmp_path / gt.STATE_FILE)
    assert "time limit" in (tmp_path / "train.log").read_text()
    gt.train(cfg, tmp_path, progress=False)
    assert gt.is_finished(tmp_path / gt.STATE_FILE)


def test_resume_with_other_settings_is_refused(tmp_path: Path):
    gt.train(tiny_config(), tmp_path, progress=False, stop_after=2)
    with pytest.raises(NadaError, match="batch_size"):
        gt.train(tiny_config(batch_size=3), tmp_path, progress=False)
    # The step count and the checkpoint cadence may change on resume.
    gt.train(tiny_config(steps=6, ckpt_every=3), tmp_path, progress=False, stop_after=1)
    assert _state(tmp_path)["step"] == 3


def test_corrupt_state_gives_a_clear_error(tmp_path: Path):
    (tmp_path / gt.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(NadaError, match="delete it"):
        gt.train(tiny_config(), tmp_path, progress=False)


def test_export_writes_a_loadable_nada_checkpoint(tmp_path: Path):
    from nada.generator.checkpoints import load_generator, read_metadata

    state = gt.train(tiny_config(steps=2), tmp_path, progress=False)
    path = gt.export_generator(state, tmp_path / "g.pt")
    meta = read_metadata(path)
    assert meta["base"] == "toy" and meta["style"] == "photo" and meta["steps"] == 2 and meta["seed"] == 0
    assert meta["train_config"]["batch_size"] == 2 and meta["eval_l1"] > 0
    G = load_generator(path)
    assert G.size == 64 and G.style_dim == 32
    assert G.mean_latent.abs().sum() > 0  # set from 4096 samples at export
    ema = torch.load(state, weights_only=True)["G_ema"]
    assert all(torch.equal(G.state_dict()[k], ema[k]) for k in ema)
    with pytest.raises(NadaError, match="exists"):
        gt.export_generator(state, path)


def test_init_from_starts_a_stage_from_a_generator_and_refuses_another_architecture(tmp_path: Path):
    from nada.generator.checkpoints import read_metadata

    base = gt.export_generator(gt.train(tiny_config(steps=2), tmp_path / "a", progress=False), tmp_path / "a.pt")
    G = gt.build_generator(tiny_config(seed=3))
    gt.initial_weights(G, str(base))
    assert all(torch.equal(v, torch.load(base, weights_only=True)["g_ema"][k]) for k, v in G.state_dict().items())
    with pytest.raises(NadaError, match="--channels"):
        gt.initial_weights(
            gt.build_generator(tiny_config(channels=((4, 16), (8, 16), (16, 8), (32, 8), (64, 4)))), str(base)
        )
    # A stage with a vanishing learning rate ends where its base was, not at a random initialisation.
    stage = gt.train(tiny_config(steps=1, lr=1e-9, seed=3, init_from=str(base)), tmp_path / "b", progress=False)
    g_b = torch.load(stage, weights_only=True)["model"]
    g_a = torch.load(base, weights_only=True)["g_ema"]
    assert all(torch.allclose(g_b[k], g_a[k], atol=1e-5) for k in g_b)
    meta = read_metadata(gt.export_generator(stage, tmp_path / "b.pt"))
    assert "fine-tuned from" in meta["method"] and meta["init_train_time_s"] == read_metadata(base)["train_time_s"]
    # A third stage counts the time of both stages before it.
    third = gt.train(tiny_config(steps=1, seed=4, init_from=str(tmp_path / "b.pt")), tmp_path / "c", progress=False)
    meta_c = read_metadata(gt.export_generator(third, tmp_path / "c.pt"))
    assert meta_c["init_train_time_s"] == pytest.approx(meta["train_time_s"] + meta["init_train_time_s"], abs=0.11)


def test_teacher_loss_prefers_the_true_attributes_and_joins_training(tmp_path: Path):
    from nada.guidance.clip import load_clip
    from nada.toy import render as R

    clip = load_clip("toy")
    text = gt.attribute_text_features(clip)
    z = torch.randn(24, 64, generator=torch.Generator().manual_seed(6))
    img, labels = gt.render_targets(z, seed=0), gt.face_labels(z)
    assert set(labels) == set(R.ATTRIBUTES) and labels["mouth"].shape == (24,)
    wrong = {k: (v + 1) % len(R.ATTRIBUTES[k]) for k, v in labels.items()}
    right_loss = gt.teacher_loss(clip, text, img, labels).item()
    assert right_loss < 0.5 * gt.teacher_loss(clip, text, img, wrong).item()
    # The teacher's gradient reaches the images, and a run with it logs the teacher's accuracy.
    img.requires_grad_(True)
    gt.teacher_loss(clip, text, img, wrong).backward()
    assert img.grad.abs().sum() > 0
    gt.train(tiny_config(steps=2, teacher="toy", teacher_weight=0.5), tmp_path, progress=False)
    assert "teacher_acc" in (tmp_path / "train.log").read_text()


def test_border_latents_sit_next_to_a_border_and_leave_other_runs_unchanged(capsys):
    from nada.toy import render as R

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(400, 64, generator=gen)
    moved_z = gt.near_borders(z, share=0.5, width=0.04, gen=gen)
    changed = moved_z != z
    moved = changed.any(1)
    assert 0.4 < moved.float().mean() < 0.6 and changed[moved].sum(1).eq(1).all()  # one coordinate each
    assert changed[:, len(R.ATTRIBUTES) :].sum() == 0  # only the discrete attributes' coordinates move
    zn = moved_z.double() * torch.rsqrt(moved_z.double().pow(2).mean(1, keepdim=True))
    values = list(R.ATTRIBUTES.values())
    for i in torch.nonzero(moved).flatten().tolist():
        k = int(torch.nonzero(changed[i])[0])
        q = 0.5 * (1 + math.erf(float(zn[i, k]) / math.sqrt(2))) * len(values[k])  # standard normal CDF
        border = min(max(round(q), 1), len(values[k]) - 1)
        assert abs(q - border) / len(values[k]) <= 0.04 + 1e-9
    # Off by default, and then the batches are the ones drawn before the option existed.
    z_plain, _, _ = gt.batch_for_step(tiny_config(), 3)
    seed = int(np.random.SeedSequence([0, 3]).generate_state(1)[0])
    assert torch.equal(z_plain, torch.randn(2, 32, generator=torch.Generator().manual_seed(seed)))
    z_border, _, _ = gt.batch_for_step(tiny_config(border_share=1.0, batch_size=8), 3)
    assert (z_border != gt.batch_for_step(tiny_config(batch_size=8), 3)[0]).any(1).all()
    assert gt.main(["--out", "x", "--border-share", "1.5"]) == 2
    assert "--border-share" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_an_export_before_training(tmp_path: Path, capsys):
    target = tmp_path / "g.pt"
    target.write_bytes(b"keep me")
    rc = gt.main(["--out", str(tmp_path / "run"), "--steps", "1", "--export", str(target), "--no-progress"])
    assert rc == 2 and "--force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me" and not (tmp_path / "run").exists()


def test_channel_table_option_reaches_the_network_and_bad_tables_are_refused(capsys):
    table = gt.parse_channels("4:16,8:16,16:12,32:8,64:8")
    assert table == ((4, 16), (8, 16), (16, 12), (32, 8), (64, 8))
    G = gt.build_generator(tiny_config(channels=table))
    assert G.channels[64] == 8 and G.channels[16] == 12
    for bad in ("4:16,8:16", "4:16,8:x,16:12,32:8,64:8", "4:16,8:16,16:12,32:8,64:0"):
        with pytest.raises(SystemExit):
            gt.parse_args(["--out", "x", "--channels", bad])
        assert "--channels" in capsys.readouterr().err


# ---------------------------------------------------------------- the shipped weights

# Mean absolute pixel error (images in [-1, 1]) of G(z) against the photo render of its face, on the
# 16 latents of seeds 0-15: 0.088 for the shipped weights (0.45 against another face's render). The
# bound leaves room for platform differences but fails for a generator that draws the average face.
MAX_MAE = 0.12
# Evaluator agreement with the true attributes of the faces of seeds 0-63, shipped weights (stage 4): face shape
# 98 %, mouth 98 %, the others 100 % (stage 3, before the mapping was sharpened: face shape 91 %, mouth 89 %,
# eyes 95 %, glasses 95 %).
MIN_RATES = {"face_shape": 0.9, "hair_color": 0.9, "hair_style": 0.9, "eyes": 0.9, "mouth": 0.9, "glasses": 0.9}


@pytest.fixture(scope="module")
def toy_generator():
    from nada.generator.checkpoints import load_generator

    return load_generator("toy")


@pytest.fixture(scope="module")
def toy_samples(toy_generator):
    """Latents of seeds 0-63, the generator's images of them and the photo renders of their faces."""
    from nada.io import z_from_seeds

    z = z_from_seeds(list(range(64)), toy_generator.style_dim)
    with torch.no_grad():
        img = toy_generator(z, noise_mode="const")
    return z, img, gt.render_targets(z, seed=0)


def test_shipped_generator_is_a_small_64px_generator(toy_generator):
    assert toy_generator.size == 64 and toy_generator.style_dim == 64 and toy_generator.n_latent == 10
    assert all(torch.isfinite(t).all() for t in toy_generator.state_dict().values())
    assert torch.isfinite(toy_generator.mean_latent).all() and toy_generator.mean_latent.abs().sum() > 0
    shipped = Path(gt.__file__).resolve().parents[1] / "assets" / "toy" / "generator.pt"
    assert shipped.stat().st_size < 6 * 2**20


def test_shipped_metadata_describes_the_training():
    from nada.generator.checkpoints import read_metadata
    from nada.toy.render import LATENT_DIM

    meta = read_metadata("toy")
    assert meta["base"] == "toy" and meta["style"] == "photo"
    assert meta["seed"] == meta["train_config"]["seed"] and meta["steps"] == meta["train_config"]["steps"] > 0
    assert meta["latent_dim"] == LATENT_DIM and meta["train_time_s"] > 0
    assert "regression" in meta["method"] and meta["generator_config"]["size"] == 64
    # Three stages: the regression from scratch, a stage taught by toy-robust, then the exported stage taught by
    # the stability-trained ResNet CLIP; the time of the stages before it is recorded too.
    assert meta["train_config"]["teacher"] == "runs/toy_clip_rn_robust" and meta["train_config"]["init_from"]
    assert meta["init_train_time_s"] > meta["train_time_s"] > 0
    assert "face_shape runs oval, square, round" in meta["face_latent"]
    # Stage 4 distilled the mapping network towards latents moved away from the attribute borders.
    assert (
        meta["sharpen_config"]["margin"] == 0.15 and meta["sharpen_time_s"] > 0 and "nada.toy.sharpen" in meta["method"]
    )
    assert meta["sharpen_history"][-1]["eval_mse"] < meta["sharpen_history"][0]["eval_mse"]


def test_shipped_generator_draws_the_photo_face_of_each_latent(toy_samples):
    _, img, target = toy_samples
    mae = (img[:16] - target[:16]).abs().mean().item()
    assert mae < MAX_MAE
    # Each image matches its own face far better than the other faces: z controls the content.
    shuffled = (img[:16] - target[:16].roll(1, dims=0)).abs().mean().item()
    assert shuffled > 1.5 * mae


def test_evaluator_sees_photo_faces_with_the_right_attributes(toy_samples):
    from nada.toy import evaluator as ev
    from nada.toy import render as R

    z, img, _ = toy_samples
    model = ev.load_evaluator()
    pred = model.predict(img)
    photo_rate = (pred["style"] == R.STYLES.index("photo")).float().mean().item()
    truth = R.params_from_latent(gt.face_latent(z, R.LATENT_DIM)).labels()
    rates = {k: (pred[k] == torch.from_numpy(v)).float().mean().item() for k, v in truth.items()}
    print(f"photo {photo_rate:.3f}, attributes {rates}")
    assert photo_rate >= 0.9
    assert all(rates[k] >= bound for k, bound in MIN_RATES.items()), rates


def test_a_run_folder_linked_to_nowhere_is_a_clear_error(tmp_path: Path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(NadaError, match="does not exist: create that folder"):
        gt.train(tiny_config(steps=1), link, progress=False)
    (tmp_path / "missing").mkdir()
    assert gt.train(tiny_config(steps=1), link, progress=False).is_file()
