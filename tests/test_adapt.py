"""The adaptation loop on a tiny generator and the tiny golden CLIP: learning, freezing, resume, refusals, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nada.adaptation.loop import RunPaths, adapt
from nada.config import AdaptConfig
from nada.errors import NadaError
from nada.generator.networks import Generator

CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


@pytest.fixture
def clip(tiny):
    """The golden tiny CLIP guides every adaptation here."""
    return tiny


def make_generator(seed: int = 0) -> Generator:
    """A 32x32 generator with seeded random weights and its mean latent set."""
    torch.manual_seed(seed)
    G = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS).eval()
    G.compute_mean_latent(n=512, seed=0)
    return G


def weights(G: Generator) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def config(tmp_path: Path, **kw) -> AdaptConfig:
    base = dict(
        source="photo",
        target="sketch",
        generator="tiny-test",
        templates="plain",
        layers="all",
        iterations=4,
        batch_size=2,
        auto_batch=2,
        lr=0.01,
        out_dir=str(tmp_path / "run"),
        n_sample_images=3,
        sample_every=2,
        save_every=2,
        device="cpu",
    )
    base.update(kw)
    return AdaptConfig(**base)


def log_of(cfg: AdaptConfig) -> list[dict]:
    return [json.loads(line) for line in RunPaths(Path(cfg.out_dir)).log.read_text().splitlines()]


def grid_rows(path: Path, size: int = 32, pad: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Top (frozen) and bottom (trained) row of a sample grid."""
    a = np.asarray(Image.open(path))
    return a[pad : pad + size], a[2 * pad + size : 2 * pad + 2 * size]


# ---------------------------------------------------------------- configuration


def test_config_defaults_and_auto_choices() -> None:
    d = AdaptConfig(target="sketch", generator="toy")
    assert (d.lr, d.beta1, d.beta2, d.mixing_prob, d.iterations, d.batch_size) == (0.002, 0.0, 0.99, 0.0, 300, 2)
    # "auto" asks the base's profile for its guide; the toy prompts go with the toy CLIPs (registered by the plugin).
    assert (d.resolved_clip(), d.resolved_templates()) == ("toy,toy-robust:2,toy-rn", "toy")
    assert (d.replace(generator="ffhq").resolved_clip(), d.replace(generator="ffhq").resolved_templates()) == (
        "ViT-B/32,ViT-B/16",
        "imagenet",
    )
    unknown = d.replace(generator="ffhq.pt")  # a file with no metadata: no profile, the paper's single CLIP
    assert (unknown.resolved_clip(), unknown.resolved_templates()) == ("ViT-B/32", "imagenet")
    assert d.replace(clip="ViT-B/16").resolved_templates() == "imagenet"
    # The toy prompt templates go with every packaged toy CLIP, alone or together; a mix with another CLIP
    # uses ImageNet's.
    assert d.replace(clip="toy,toy-robust:2,toy-rn").resolved_templates() == "toy"
    assert d.replace(clip="toy,ViT-B/32").resolved_templates() == "imagenet"
    assert AdaptConfig.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    with pytest.raises(NadaError, match="unknown adaptation settings"):
        AdaptConfig.from_dict({**d.to_dict(), "learning_rate": 1})


def test_cli_defaults_come_from_the_config() -> None:
    from nada.frontends.cli import adapt_config, build_parser

    args = build_parser().parse_args(["adapt", "--target", "sketch"])
    assert args.lr is None and args.layers is None  # not given: the base's profile or AdaptConfig decides
    assert adapt_config(args) == AdaptConfig(target="sketch")  # no base, no profile: AdaptConfig's defaults
    args = build_parser().parse_args(
        ["adapt", "--target", "x", "--no-antialias", "--bf16", "--mixing", "0.9", "--out", "o"]
    )
    assert (args.antialias, args.bf16, args.mixing_prob, args.out_dir) == (False, True, 0.9, "o")


# ---------------------------------------------------------------- learning and freezing


def test_loss_falls_and_frozen_generator_never_changes(tmp_path: Path, clip) -> None:
    import torch.nn.functional as F

    from nada.adaptation.loop import build_guides

    G = make_generator()
    base = weights(G)
    cfg = config(tmp_path, iterations=20, noise_mode="const", sample_every=0, save_every=0)
    G_train = adapt(cfg, progress=False, G_base=G, clip=clip)
    losses = [r["direction"] for r in log_of(cfg)]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert losses[0] == 1.0  # step 1: equal images, the loss's first-order limit
    assert np.mean(losses[-5:]) < 0.95, losses
    # On latents never trained on, the edit of the CLIP image features follows the text direction.
    (guide,) = build_guides([(clip, 1.0)], cfg, G, None)
    with torch.no_grad():
        ws = G.broadcast_w(G.mapping(torch.randn(16, 32, generator=torch.Generator().manual_seed(123))))
        unit = lambda img: F.normalize(clip.encode_image(img), dim=-1)  # noqa: E731
        edit = unit(G_train.synthesis(ws)) - unit(G.synthesis(ws))
    assert float((edit @ guide.direction.T).mean()) > 0.01
    # The base generator passed in is untouched, and the frozen row of the grids never changes.
    assert all(torch.equal(base[k], v) for k, v in G.state_dict().items())
    paths = RunPaths(Path(cfg.out_dir))
    top0, bottom0 = grid_rows(paths.sample(0))
    top20, bottom20 = grid_rows(paths.sample(20))
    assert np.array_equal(top0, bottom0)  # before training both generators agree
    assert np.array_equal(top0, top20)
    assert not np.array_equal(bottom0, bottom20)
    # The mapping network and the constant input never train.
    trained = G_train.state_dict()
    assert all(torch.equal(base[k], trained[k]) for k in base if k.startswith(("style.", "input.")))
    assert not G_train.training and not any(p.requires_grad for p in G_train.parameters())


@pytest.mark.parametrize("layers", ["last:1", "auto:1"])
def test_layers_never_selected_stay_bit_identical(tmp_path: Path, clip, layers: str) -> None:
    G = make_generator()
    base = weights(G)
    cfg = config(tmp_path, layers=layers, iterations=3, sample_every=0, save_every=0)
    G_train = adapt(cfg, progress=False, G_base=G, clip=clip)
    selected = set().union(*(r["layers"] for r in log_of(cfg)))
    assert selected and selected < {info.name for info in G.layer_table()}
    if layers == "last:1":
        assert selected == {"convs.4", "convs.5", "to_rgbs.2"}
    trained = G_train.state_dict()
    for k in base:
        parts = k.split(".")
        layer = ".".join(parts[:2]) if parts[0] in ("convs", "to_rgbs") else parts[0]
        changed = not torch.equal(base[k], trained[k])
        if layer not in selected:
            assert not changed, f"{k} changed although {layer} was never selected"
    assert any(not torch.equal(base[k], trained[k]) for k in base if k.startswith(tuple(n + "." for n in selected)))
    meta = torch.load(RunPaths(Path(cfg.out_dir)).final, weights_only=True)["nada"]
    assert set(meta["trained_layers"]) == selected and meta["iterations"] == 3


# ---------------------------------------------------------------- resume


def test_resume_is_bit_identical(tmp_path: Path, clip) -> None:
    # Dynamic selection every 2 steps, style mixing and random noise: every random stream matters.
    kw = dict(layers="auto:2", select_every=2, mixing_prob=0.5, iterations=6, save_every=2)
    full = adapt(config(tmp_path / "a", **kw), progress=False, G_base=make_generator(), clip=clip)

    # Ctrl-C after step 3: the state is saved right there.
    cfg_b = config(tmp_path / "b", **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(cfg_b, progress=False, G_base=make_generator(), clip=clip, callback=interrupt)
    assert torch.load(RunPaths(Path(cfg_b.out_dir)).state, weights_only=True)["step"] == 3
    resumed = adapt(cfg_b, progress=False, G_base=make_generator(), clip=clip, resume=True)

    # A kill after step 5: only the periodic save of step 4 exists, the log has a stale line.
    cfg_c = config(tmp_path / "c", **kw)

    def kill(step: int, record: dict) -> None:
        if step == 5:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        adapt(cfg_c, progress=False, G_base=make_generator(), clip=clip, callback=kill)
    assert torch.load(RunPaths(Path(cfg_c.out_dir)).state, weights_only=True)["step"] == 4
    killed = adapt(cfg_c, progress=False, G_base=make_generator(), clip=clip, resume=True)

    ref = full.state_dict()
    for other in (resumed, killed):
        assert all(torch.equal(ref[k], v) for k, v in other.state_dict().items())
    drop_time = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    log_a = drop_time(log_of(config(tmp_path / "a", **kw)))
    assert [r["step"] for r in log_a] == [1, 2, 3, 4, 5, 6]
    assert log_a == drop_time(log_of(cfg_b)) == drop_time(log_of(cfg_c))


def test_resume_of_a_finished_run_and_extension(tmp_path: Path, clip) -> None:
    cfg = config(tmp_path, iterations=2, sample_every=0, save_every=0)
    first = adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    again = adapt(cfg, progress=False, G_base=make_generator(), clip=clip, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert len(log_of(cfg)) == 2
    longer = adapt(cfg.replace(iterations=3), progress=False, G_base=make_generator(), clip=clip, resume=True)
    assert [r["step"] for r in log_of(cfg)] == [1, 2, 3]
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), longer.state_dict().values()))
    with pytest.raises(NadaError, match="different settings"):
        adapt(cfg.replace(iterations=3, lr=0.1), progress=False, G_base=make_generator(), clip=clip, resume=True)
    with pytest.raises(NadaError, match="already has 3 iterations"):
        adapt(cfg.replace(iterations=2), progress=False, G_base=make_generator(), clip=clip, resume=True)
    state = RunPaths(Path(cfg.out_dir)).state
    state.write_bytes(state.read_bytes()[:100])  # truncated
    with pytest.raises(NadaError, match="truncated, corrupt or not a weights file.*--force"):
        adapt(cfg.replace(iterations=3), progress=False, G_base=make_generator(), clip=clip, resume=True)


def test_existing_run_is_never_overwritten(tmp_path: Path, clip) -> None:
    cfg = config(tmp_path, iterations=1, sample_every=0, save_every=0)
    adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    final = RunPaths(Path(cfg.out_dir)).final
    before = final.read_bytes()
    with pytest.raises(NadaError, match="already holds an adaptation run.*--resume.*--force"):
        adapt(cfg.replace(seed=1), progress=False, G_base=make_generator(), clip=clip)
    assert final.read_bytes() == before
    adapt(cfg.replace(seed=1), progress=False, G_base=make_generator(), clip=clip, force=True)
    assert final.read_bytes() != before
    assert json.loads(RunPaths(Path(cfg.out_dir)).config.read_text())["seed"] == 1


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(target=""), "target text is empty"),
        (dict(source="  "), "source text is empty"),
        (dict(target="Photo"), "source and target are the same"),
        (dict(layers="auto:99"), "K <= 8"),
        (dict(layers="grad:12"), "K <= 11"),
        (dict(layers="sideways"), "bad layers spec"),
        (dict(clip="ViT-Z/99"), "unknown CLIP model"),
        (dict(clip="ViT-B/32:-1"), "must be a positive number"),
        (dict(lambda_direction=0.0), "every loss weight is 0"),
        (dict(templates="klingon"), "unknown templates"),
        (dict(clip_views=-1), "clip_views must be 0 or more"),
        (dict(clip_noise=-0.1), "clip_noise must lie in"),
        (dict(clip_noise=1.5), "clip_noise must lie in"),
    ],
)
def test_validation_errors(tmp_path: Path, changes: dict, message: str) -> None:
    cfg = config(tmp_path).replace(**changes)
    with pytest.raises(NadaError, match=message):
        adapt(cfg, progress=False, G_base=make_generator())  # clip=None: load by name from cfg.clip


def test_unwritable_out_dir(tmp_path: Path, clip) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(NadaError, match="cannot write to the output folder"):
        adapt(config(tmp_path, out_dir=str(blocker / "run")), progress=False, G_base=make_generator(), clip=clip)


def test_target_images(tmp_path: Path, clip) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("no image here")
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(NadaError, match="no readable image"), pytest.warns(UserWarning, match="broken.png"):
        adapt(config(tmp_path, target="", target_images=str(bad)), progress=False, G_base=make_generator(), clip=clip)
    with pytest.raises(NadaError, match="does not exist"):
        adapt(
            config(tmp_path, target="", target_images=str(tmp_path / "nowhere")),
            progress=False,
            G_base=make_generator(),
            clip=clip,
        )

    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 48), (64, 64)]):  # style references of different sizes
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(good / f"style{i}.png")
    cfg = config(
        tmp_path, target="", target_images=str(good), iterations=2, lambda_global=0.5, sample_every=0, save_every=0
    )
    adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    log = log_of(cfg)
    assert len(log) == 2 and {"direction", "global"} <= set(log[0]) and np.isfinite(log[-1]["loss"])


def test_directional_term_has_a_sane_gradient_at_equal_images() -> None:
    from nada.adaptation.loop import directional_term
    from nada.guidance import losses

    torch.manual_seed(0)
    f_src, direction = torch.randn(3, 8), torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    f_tgt = f_src.clone().requires_grad_(True)
    loss = directional_term(f_src, f_tgt, direction)
    (grad,) = torch.autograd.grad(loss, f_tgt)
    assert float(loss.detach()) == 1.0 and torch.isfinite(grad).all() and 1e-3 < float(grad.norm()) < 10
    moved = f_src + torch.randn(3, 8)
    assert torch.allclose(directional_term(f_src, moved, direction), losses.directional_loss(f_src, moved, direction))
    rounding = f_src + 1e-7 * torch.randn(3, 8)  # equal images, features apart by rounding only
    assert torch.allclose(directional_term(f_src, rounding, direction), torch.tensor(1.0), atol=1e-6)
    mixed = torch.cat([f_src[:1], moved[1:]])
    expected = (1.0 + 2 * losses.directional_loss(f_src[1:], moved[1:], direction)) / 3
    assert torch.allclose(directional_term(f_src, mixed, direction), expected)
    # Features apart by more than rounding, but the images are known equal (reduced precision): at rest all the same.
    at_rest = torch.tensor([True, False, False])
    unit = torch.nn.functional.normalize
    first = 1 - (unit(moved[:1], dim=-1) - unit(f_src[:1], dim=-1))[0] @ direction[0]
    moving = 2 * losses.directional_loss(f_src[1:], moved[1:], direction)
    assert torch.allclose(directional_term(f_src, moved, direction, at_rest), (first + moving) / 3)
    assert not torch.allclose(first, losses.directional_loss(f_src[:1], moved[:1], direction))  # the forms differ


def test_images_at_rest_tolerates_rounding_not_a_step() -> None:
    from nada.adaptation.loop import images_at_rest

    img = torch.rand(3, 3, 8, 8) * 2 - 1
    other = img.clone()
    other[0] += 1e-6  # kernel noise
    other[1, 0, 4, 4] += 0.01  # one pixel moved by a training step
    other[2] = other[2].bfloat16().float()  # rounding of bf16 autocast
    assert images_at_rest(img, other).tolist() == [True, False, False]
    assert images_at_rest(img.bfloat16(), other.bfloat16()).tolist() == [True, True, True]


def test_clip_views_are_paired_seeded_crops() -> None:
    from nada.adaptation.loop import apply_views, paired_views

    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    assert torch.allclose(apply_views(img, identity), img, atol=1e-5)
    theta = paired_views(2, 3, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert theta.shape == (6, 2, 3) and torch.equal(
        theta, paired_views(2, 3, torch.Generator().manual_seed(1), torch.device("cpu"))
    )
    views = apply_views(img, theta)
    assert views.shape == (6, 3, 32, 32) and views.abs().max() <= 1 + 1e-5
    assert not torch.allclose(views[0], views[1])  # the views of one image differ
    # View j of image i is a crop of image i: it correlates with its own image far more than with the other one.
    own = torch.corrcoef(torch.stack([views[4].flatten(), img[1].flatten()]))[0, 1]
    other = torch.corrcoef(torch.stack([views[4].flatten(), img[0].flatten()]))[0, 1]
    assert own > 0.3 > abs(other)


def test_views_keep_the_first_step_at_rest_and_train(tmp_path: Path, clip) -> None:
    from nada.adaptation.loop import build_guides, loss_terms

    cfg = config(tmp_path, clip_views=3)
    guides = build_guides([(clip, 1.0)], cfg, make_generator(), None)
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    terms = loss_terms(guides, img, img.clone(), cfg, torch.Generator().manual_seed(0))
    assert float(terms["direction"]) == pytest.approx(1.0, abs=1e-6)  # the same views of equal images: no edit yet
    adapt(cfg.replace(iterations=2, sample_every=0, save_every=0), progress=False, G_base=make_generator(), clip=clip)
    assert all(np.isfinite(r["loss"]) for r in log_of(cfg))


def test_clip_noise_is_shared_by_a_pair_and_seeded(tmp_path: Path, clip) -> None:
    from nada.adaptation.loop import build_guides, loss_terms, paired_noise

    a = paired_noise(torch.Size([2, 3, 8, 8]), 0.2, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(
        a, paired_noise(torch.Size([2, 3, 8, 8]), 0.2, torch.Generator().manual_seed(3), torch.device("cpu"))
    )
    assert 0.15 < float(a.std()) < 0.25
    cfg = config(tmp_path, clip_noise=0.2, clip_views=2)
    guides = build_guides([(clip, 1.0)], cfg, make_generator(), None)
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    other = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    terms = loss_terms(guides, img, img.clone(), cfg, torch.Generator().manual_seed(0))
    assert float(terms["direction"]) == pytest.approx(1.0, abs=1e-6)  # the same noise on equal images: no edit yet
    noisy = loss_terms(guides, img, other, cfg, torch.Generator().manual_seed(0))["direction"]
    plain = loss_terms(guides, img, other, cfg.replace(clip_noise=0.0), torch.Generator().manual_seed(0))["direction"]
    assert float(noisy) != pytest.approx(float(plain), abs=1e-4)  # the noise reaches what CLIP sees
    adapt(cfg.replace(iterations=2, sample_every=0, save_every=0), progress=False, G_base=make_generator(), clip=clip)
    assert all(np.isfinite(r["loss"]) for r in log_of(cfg))


def test_all_loss_terms_are_logged(tmp_path: Path, clip) -> None:
    cfg = config(
        tmp_path,
        iterations=1,
        lambda_global=0.5,
        lambda_manifold=0.5,
        lambda_texture=0.5,
        lambda_patch=0.5,
        lambda_structure=0.5,
        lambda_consistency=0.5,
        keep="a smiling face|a frowning face",
        lambda_keep=0.5,
        batch_size=3,
        layers="grad:3",
        sample_every=0,
        save_every=0,
    )
    adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    (record,) = log_of(cfg)
    terms = {
        k: record[k]
        for k in ("direction", "global", "manifold", "texture", "patch", "structure", "consistency", "keep")
    }
    assert all(np.isfinite(v) for v in terms.values())
    expected = terms["direction"] + 0.5 * sum(v for k, v in terms.items() if k != "direction")
    assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert len(record["layers"]) == 3


# ---------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path: Path, golden: Path, capsys) -> None:
    from nada.frontends.cli import main
    from nada.generator.checkpoints import load_generator, read_metadata, save_checkpoint

    gen_path = save_checkpoint(tmp_path / "tiny.pt", make_generator(), {"note": "random test generator"})
    out = tmp_path / "cli-run"
    argv = [
        "adapt",
        "--source",
        "photo",
        "--target",
        "sketch",
        "--generator",
        str(gen_path),
        "--clip",
        str(golden / "tiny_clip_openai.pt"),
        "--layers",
        "auto:2",
        "--iterations",
        "3",
        "--batch-size",
        "2",
        "--auto-batch",
        "2",
        "--templates",
        "plain",
        "--n-samples",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    paths = RunPaths(out)
    for p in (paths.sample(3), paths.log, paths.final):
        assert str(p) in printed and p.is_file()
    assert Image.open(paths.sample(3)).size == (2 * 34 + 2, 2 * 34 + 2)
    assert [json.loads(line)["step"] for line in paths.log.read_text().splitlines()] == [1, 2, 3]
    G = load_generator(paths.final)
    assert G.size == 32 and torch.isfinite(G(torch.randn(1, 32))).all()
    meta = read_metadata(paths.final)
    assert meta["source"] == "photo" and meta["target"] == "sketch" and meta["iterations"] == 3
    assert meta["base_model"] == str(gen_path) and meta["adapt_config"]["layers"] == "auto:2"

    # A second run into the same folder is refused with one line on stderr and exit code 2.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds an adaptation run" in err and len(err.strip().splitlines()) == 1
    assert main(argv + ["--resume"]) == 0  # already complete: nothing to do
    assert main(argv + ["--target", "photo", "--out", str(tmp_path / "x")]) == 2  # later flags win
    assert "same text" in capsys.readouterr().err


def test_ctrl_c_stops_after_the_current_iteration(tmp_path: Path, clip) -> None:
    import signal

    cfg = config(tmp_path, iterations=4, sample_every=0, save_every=0)

    def press_ctrl_c(step: int, record: dict) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # delivered to this thread before the call returns

    # A terminal's Ctrl-C handler, whatever started pytest (a background job inherits SIGINT ignored).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            adapt(cfg, progress=False, G_base=make_generator(), clip=clip, callback=press_ctrl_c)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert torch.load(RunPaths(Path(cfg.out_dir)).state, weights_only=True)["step"] == 2
    assert [r["step"] for r in log_of(cfg)] == [1, 2]


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_deterministic_runs_are_finite_and_repeat(tmp_path: Path, golden: Path, bf16: bool) -> None:
    from nada.guidance.clip import load_clip

    clip_cuda = load_clip(str(golden / "tiny_clip_openai.pt"), device="cuda")
    kw = dict(device="cuda", bf16=bf16, deterministic=True, layers="auto:2", iterations=3, sample_every=0, save_every=0)
    a = adapt(config(tmp_path / "a", **kw), progress=False, G_base=make_generator(), clip=clip_cuda)
    b = adapt(config(tmp_path / "b", **kw), progress=False, G_base=make_generator(), clip=clip_cuda)
    assert all(np.isfinite(r["loss"]) for r in log_of(config(tmp_path / "a", **kw)))
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.are_deterministic_algorithms_enabled()  # the run's switches are undone


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_first_step_takes_equal_images_as_at_rest_in_every_precision(tmp_path: Path, precision: str) -> None:
    """Step 1 renders the same latents with equal weights: its directional term must be the at-rest form (1 - e.d
    with e = 0), not the direction of rounding noise, with ViT-B/32's attention kernels in reduced precision."""
    from nada.guidance.clip import build_random_clip

    clip_cuda = build_random_clip("ViT-B/32", device="cuda", seed=0)
    kw = dict(device="cuda", bf16=precision == "bf16", tf32=precision != "fp32", iterations=1, sample_every=0)
    cfg = config(tmp_path, save_every=0, **kw)
    adapt(cfg, progress=False, G_base=make_generator(), clip=clip_cuda)
    first = log_of(cfg)[0]["direction"]
    assert abs(first - 1.0) < 1e-4, f"{precision}: step 1's directional term is {first}, not the at-rest 1"


def test_phase_timings_and_grids_written_before_adapt_returns(tmp_path: Path, clip) -> None:
    from nada.adaptation.loop import render_samples
    from nada.io import image_grid

    cfg = config(tmp_path, iterations=2, sample_every=1, save_every=1)
    timings: dict[str, float] = {}
    G_base = make_generator()
    G = adapt(cfg, progress=False, G_base=G_base, clip=clip, timings=timings)
    assert set(timings) == {"setup", "iterations", "grids", "saves"} and all(t > 0 for t in timings.values())
    written = sorted(p.name for p in (Path(cfg.out_dir) / "samples").iterdir())
    assert written == ["step_000000.png", "step_000001.png", "step_000002.png"]  # no temporary file left
    expected = image_grid([render_samples(g, 3, cfg.sample_truncation, 2) for g in (G_base, G)])
    with Image.open(Path(cfg.out_dir) / "samples" / "step_000002.png") as got:
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_guides_share_text_features_without_changing_them(tiny) -> None:
    from nada.adaptation.loop import build_guides
    from nada.guidance import losses
    from nada.guidance.templates import IMAGENET_TEMPLATES

    cfg = AdaptConfig(source="photo", target="sketch", templates="imagenet", lambda_manifold=1.0)
    (g,) = build_guides([(tiny, 1.0)], cfg, make_generator(), None)
    assert torch.equal(g.direction, losses.text_direction(tiny, "photo", "sketch", IMAGENET_TEMPLATES))
    assert torch.equal(g.source_anchor, losses.mean_text_feature(tiny, "photo", IMAGENET_TEMPLATES))
    assert torch.equal(g.target_anchor, losses.mean_text_feature(tiny, "sketch", IMAGENET_TEMPLATES))


def test_chunked_selection_run_matches_the_whole_batch(tmp_path: Path, clip) -> None:
    kw = dict(layers="auto:2", auto_batch=4, iterations=3, sample_every=0, save_every=0)
    a = adapt(config(tmp_path / "a", **kw), progress=False, G_base=make_generator(), clip=clip)
    b = adapt(config(tmp_path / "b", select_chunk=1, **kw), progress=False, G_base=make_generator(), clip=clip)
    layers = [[r["layers"] for r in log_of(config(tmp_path / name))] for name in ("a", "b")]
    assert layers[0] == layers[1]
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(NadaError, match="select_chunk"):
        config(tmp_path / "c", select_chunk=-1).validate()


def test_speed_switches_on_the_command_line() -> None:
    from nada.frontends.cli import adapt_config, build_parser

    flags = ["--select-chunk", "2", "--deterministic"]
    args = build_parser().parse_args(["adapt", "--target", "x", *flags])
    cfg = adapt_config(args)
    assert (cfg.select_chunk, cfg.deterministic) == (2, True)
    defaults = adapt_config(build_parser().parse_args(["adapt", "--target", "x"]))
    assert (defaults.select_chunk, defaults.deterministic) == (0, False)


def test_consistency_loss_needs_three_images_per_batch(tmp_path: Path, clip) -> None:
    cfg = config(
        tmp_path, iterations=1, batch_size=1, clip_views=2, lambda_consistency=1.0, sample_every=0, save_every=0
    )
    with pytest.raises(NadaError, match="--batch-size or --clip-views"):
        adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    adapt(cfg.replace(clip_views=3), progress=False, G_base=make_generator(), clip=clip)
    (record,) = log_of(cfg)
    assert (
        np.isfinite(record["consistency"]) and record["consistency"] >= -1e-6
    )  # a KL divergence, up to float rounding


def test_keep_term_reads_the_named_attributes_and_only_with_them(tmp_path: Path, clip) -> None:
    from nada.adaptation.loop import build_guides, loss_terms

    cfg = config(
        tmp_path,
        iterations=1,
        keep="a smiling face|a neutral face|a frowning face; glasses|no glasses",
        sample_every=0,
        save_every=0,
    )
    (guide,) = build_guides([(clip, 1.0)], cfg, make_generator(), None)
    dim = clip.encode_text(["x"]).shape[1]
    assert [tuple(t.shape) for t in guide.keep_text] == [(3, dim), (2, dim)]
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rng = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert float(loss_terms([guide], img, img.clone(), cfg, rng())["keep"]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_terms([guide], img, img.flip(-2), cfg, rng())["keep"]) > 0
    (plain,) = build_guides([(clip, 1.0)], cfg.replace(keep=""), make_generator(), None)
    assert plain.keep_text == () and "keep" not in loss_terms([plain], img, img.flip(-2), cfg.replace(keep=""), rng())
    assert cfg.replace(keep="toy").resolved_keep()[-1] == ["a face without glasses", "a face with glasses"]
    assert cfg.replace(keep=" ").resolved_keep() == [] and AdaptConfig().resolved_keep() == []
    assert len(cfg.replace(keep="toy").resolved_keep()) == 6 and cfg.replace(keep="toy:glasses").resolved_keep() == [
        ["a face without glasses", "a face with glasses"]
    ]
    with pytest.raises(NadaError, match="unknown toy attributes \\['beard'\\]"):
        cfg.replace(keep="toy:glasses,beard").validate()
    with pytest.raises(NadaError, match="fewer than 2 values"):
        cfg.replace(keep="a smiling face").validate()
    with pytest.raises(NadaError, match="every loss weight is 0"):
        cfg.replace(keep="", lambda_direction=0.0).validate()


# ---------------------------------------------------------------- buffered log


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import nada.adaptation.loop as A
from conftest import load_tiny_clip
from test_adapt import config, make_generator
from pathlib import Path

calls = []
real = A.sample_latents

def sample_latents(*args, **kwargs):
    calls.append(1)
    if len(calls) == {kill_at}:  # the start of iteration kill_at: kill -9, no handler runs
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

A.sample_latents = sample_latents
cfg = config(Path({out!r}), **{kw!r})
A.adapt(cfg, progress=False, G_base=make_generator(), clip=load_tiny_clip({clip!r}))
"""


def test_buffered_log_survives_kill_9_and_resume_agrees(tmp_path: Path, clip, golden: Path) -> None:
    """log_every 3, saves every 4: a kill -9 before step 7 leaves state at 4 and a log that reaches it."""
    import os
    import signal
    import subprocess
    import sys

    kw = dict(layers="all", iterations=8, save_every=4, sample_every=0, log_every=3)
    full = adapt(config(tmp_path / "a", **kw), progress=False, G_base=make_generator(), clip=clip)
    script = KILL_SCRIPT.format(
        tests=str(Path(__file__).parent),
        kill_at=7,
        out=str(tmp_path / "b"),
        kw=kw,
        clip=str(golden / "tiny_clip_openai.pt"),
    )
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg_b = config(tmp_path / "b", **kw)
    paths = RunPaths(Path(cfg_b.out_dir))
    assert torch.load(paths.state, weights_only=True)["step"] == 4
    # Written at the reads of steps 3 and 6 and before the save of step 4; nothing of step 7.
    assert [r["step"] for r in log_of(cfg_b)] == [1, 2, 3, 4, 5, 6]
    resumed = adapt(cfg_b.replace(log_every=5), progress=False, G_base=make_generator(), clip=clip, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    drop_time = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    log_a = drop_time(log_of(config(tmp_path / "a", **kw)))
    assert [r["step"] for r in log_a] == list(range(1, 9))
    assert log_a == drop_time(log_of(cfg_b))


def test_log_every_is_one_read_per_flush(tmp_path: Path, clip, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a callback the losses are read back once per log_every steps (and at the final save), not per step."""
    from nada.adaptation.loop import LogBuffer

    reads = []
    real = LogBuffer.flush

    def counting(self):
        records = real(self)
        if records:
            reads.append([r["step"] for r in records])
        return records

    monkeypatch.setattr(LogBuffer, "flush", counting)
    cfg = config(tmp_path, iterations=7, sample_every=0, save_every=0, log_every=3)
    adapt(cfg, progress=False, G_base=make_generator(), clip=clip)
    assert reads == [[1, 2, 3], [4, 5, 6], [7]]
    assert [r["step"] for r in log_of(cfg)] == list(range(1, 8))
    with pytest.raises(NadaError, match="log_every must be at least 1"):
        adapt(cfg.replace(log_every=0), progress=False, G_base=make_generator(), clip=clip, force=True)


def test_deterministic_switch_is_set_for_the_block_and_undone(monkeypatch) -> None:
    from nada.adaptation.loop import deterministic_kernels

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a value set by the user wins
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark)
    with deterministic_kernels(torch.device("cpu"), True):  # the CPU: nothing to switch
        assert (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic) == before[:2]
    with deterministic_kernels(torch.device("cuda"), True):  # only flags are set: no CUDA device needed
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert cudnn.deterministic and not cudnn.benchmark
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark) == before
    assert torch.backends.cuda.flash_sdp_enabled()
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
