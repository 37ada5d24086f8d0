"""The reference mode against five steps of the official StyleGAN-NADA loop (``official_train_steps.pt``),
and the default mode's departures from it: only those that docs/adapt.md lists."""

from __future__ import annotations

import functools
import json
import re
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from conftest import ROOT, load_tiny_clip
from nada.adaptation.loop import RunPaths, adapt, build_guides, loss_terms
from nada.config import REFERENCES, AdaptConfig
from nada.generator.networks import Generator


@functools.lru_cache(maxsize=1)
def _load(path: str) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture
def steps(golden: Path) -> dict:
    """The official five-step record."""
    return _load(str(golden / "official_train_steps.pt"))


@pytest.fixture
def base(golden: Path) -> Generator:
    """The frozen generator of the record: rosinality_A's checkpoint."""
    gold = _load(str(golden / "rosinality_A.pt"))
    c = gold["config"]
    args = (c["size"], c["style_dim"], c["n_mlp"], c["channel_multiplier"], c["blur_kernel"], c["lr_mlp"])
    G = Generator(*args, channels=c["channels"])
    G.load_state_dict(gold["ckpt"]["g_ema"], strict=True)
    G.mean_latent.copy_(gold["ckpt"]["latent_avg"])
    return G.eval()


def perturbed(base: Generator, steps: dict) -> Generator:
    """The record's trainable start: its trained parameters + perturb_std * randn from perturb_seed, sorted order."""
    cfg = steps["config"]
    start = {k: v.clone() for k, v in base.state_dict().items()}
    gen = torch.Generator().manual_seed(cfg["perturb_seed"])
    for key in sorted(cfg["trained_keys"]):
        start[key] = start[key] + cfg["perturb_std"] * torch.randn(start[key].shape, generator=gen)
    checksum = sum(float(start[k].double().pow(2).sum()) for k in cfg["trained_keys"])
    assert checksum == pytest.approx(steps["inputs"]["init_checksum"], rel=1e-9)
    G = deepcopy(base)
    G.load_state_dict(start)
    return G


def replay_config(tmp_path: Path, steps: dict, cfg: AdaptConfig) -> AdaptConfig:
    """The record's setting on top of ``cfg``: its texts, batch, lr, trained layers, stored noise, 5 steps."""
    c = steps["config"]
    return cfg.replace(
        source=c["source"],
        target=c["target"],
        generator="golden-A",
        layers=c["nada_layers"],
        batch_size=c["batch_size"],
        lr=c["lr"],
        beta1=c["beta1"],
        beta2=c["beta2"],
        lambda_direction=c["lambda_direction"],
        noise_mode="const",
        iterations=c["steps"],
        seed=c["seed"],
        out_dir=str(tmp_path / "run"),
        n_sample_images=1,
        sample_every=0,
        save_every=1,
        device="cpu",
    )


def update_agreement(ours: dict, start: dict, expected: dict) -> tuple[float, float]:
    """Relative L2 error of our updates against the record's, and the share of elements updated the other way."""
    keys = sorted(expected)
    d_ours = torch.cat([(ours[k] - start[k]).flatten() for k in keys])
    d_ref = torch.cat([(expected[k] - start[k]).flatten() for k in keys])
    rel = float((d_ours - d_ref).norm() / d_ref.norm())
    flipped = float(((d_ours * d_ref) < 0).float().mean())
    return rel, flipped


def run_replay(
    tmp_path: Path, golden: Path, steps: dict, base: Generator, cfg: AdaptConfig
) -> tuple[list[float], dict, dict, dict]:
    """Five steps of nada's loop from the record's start: losses, weights after steps 1 and 5, start weights."""
    clip = load_tiny_clip(str(golden / "tiny_clip_openai.pt"), antialias=cfg.antialias)
    start = perturbed(base, steps)
    cfg = replay_config(tmp_path, steps, cfg)
    G = adapt(cfg, progress=False, G_base=base, clip=clip, G_start=start)
    losses = [json.loads(line)["direction"] for line in RunPaths(Path(cfg.out_dir)).log.read_text().splitlines()]
    step1 = torch.load(RunPaths(Path(cfg.out_dir)).checkpoint(1), weights_only=True)["g_ema"]
    return losses, step1, G.state_dict(), start.state_dict()


def assert_matches_record(tmp_path: Path, golden: Path, steps: dict, base: Generator, cfg: AdaptConfig) -> None:
    """nada's five steps meet the record's tolerances (README of the golden folder)."""
    losses, step1, step5, start = run_replay(tmp_path, golden, steps, base, cfg)
    expected = steps["expected"]["loss"].tolist()
    assert losses[:2] == pytest.approx(expected[:2], rel=1e-4)
    assert losses == pytest.approx(expected, rel=1e-3)
    for ours, ref in ((step1, steps["expected"]["weights_step1"]), (step5, steps["expected"]["weights_step5"])):
        rel, flipped = update_agreement(ours, start, ref)
        assert rel < 0.05 and flipped < 0.01, f"updates differ: relative L2 {rel:.3g}, opposite sign {flipped:.3%}"
    untouched = [k for k in start if k not in steps["config"]["trained_keys"]]
    assert all(torch.equal(step5[k], start[k]) for k in untouched)


@pytest.mark.slow
def test_reference_mode_replays_the_official_steps(tmp_path: Path, golden: Path, steps: dict, base: Generator) -> None:
    assert_matches_record(tmp_path, golden, steps, base, AdaptConfig.reference("official"))


def test_reference_mode_gradient_of_step_one(golden: Path, steps: dict, base: Generator) -> None:
    cfg = replay_config(Path("/nonexistent"), steps, AdaptConfig.reference("official"))
    clip = load_tiny_clip(str(golden / "tiny_clip_openai.pt"), antialias=False)
    start = perturbed(base, steps)
    guides = build_guides([(clip, 1.0)], cfg, base, None)
    z = steps["inputs"]["z"][0]
    ws = base.broadcast_w(base.mapping(z))
    params = dict(start.named_parameters())
    start.requires_grad_(False)
    for k in steps["config"]["trained_keys"]:
        params[k].requires_grad_(True)
    img_frozen = base.synthesis(ws, noise_mode="const").detach()
    img_train = start.synthesis(ws, noise_mode="const")
    terms = loss_terms(guides, img_frozen, img_train, cfg, torch.Generator().manual_seed(0))
    assert float(terms["direction"].detach()) == pytest.approx(float(steps["expected"]["loss"][0]), rel=1e-4)
    keys = sorted(steps["expected"]["grad_step1"])
    grads = torch.autograd.grad(terms["direction"], [params[k] for k in keys])
    ours = torch.cat([g.flatten() for g in grads])
    ref = torch.cat([steps["expected"]["grad_step1"][k].flatten() for k in keys])
    assert float((ours - ref).norm() / ref.norm()) < 1e-3


# ---------------------------------------------------------------- the default mode's departures


DOC = ROOT / "docs" / "adapt.md"


def deviation_rows() -> dict[str, str]:
    """The deviation table of docs/adapt.md: AdaptConfig field -> the row's text."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`(\w+)`", line)
        if m and m.group(1) in AdaptConfig.__dataclass_fields__:
            rows[m.group(1)] = line
    return rows


def test_every_default_that_departs_from_the_reference_is_documented() -> None:
    default, official = AdaptConfig(), AdaptConfig.reference("official")
    differing = {k for k in REFERENCES["official"] if getattr(default, k) != getattr(official, k)}
    assert differing, "the reference mode changes nothing"
    rows = deviation_rows()
    assert differing <= set(rows), f"departures without a row in docs/adapt.md: {sorted(differing - set(rows))}"
    for k in differing:
        value = getattr(official, k)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert shown in rows[k].lower() or k == "antialias", f"the row of {k} does not name the value {value!r}"
    # Every row documents a real departure: a field whose official value differs from the default.
    assert set(rows) <= differing, f"rows for settings that equal the official ones: {sorted(set(rows) - differing)}"


@pytest.mark.slow
def test_default_mode_differs_from_the_record_only_where_documented(
    tmp_path: Path, golden: Path, steps: dict, base: Generator
) -> None:
    """From the record's perturbed start with stored noise, the documented departures that do not apply here
    (first-step rule, noise sharing, layer sets: the layers are named) leave the official steps unchanged, so
    the default mode with the record's resize and templates replays them too."""
    assert_matches_record(tmp_path, golden, steps, base, AdaptConfig(antialias=False, templates="imagenet"))


def test_first_step_rule_is_the_documented_departure(golden: Path, base: Generator, steps: dict) -> None:
    """At equal images the official rule's gradient is huge (the 1e-6 shift), the default's is ordinary."""
    clip = load_tiny_clip(str(golden / "tiny_clip_openai.pt"), antialias=False)
    z = steps["inputs"]["z"][0]
    ws = base.broadcast_w(base.mapping(z))
    img = base.synthesis(ws, noise_mode="const")
    sizes = {}
    for rule in ("limit", "shift"):
        cfg = replay_config(Path("/nonexistent"), steps, AdaptConfig.reference("official", first_step=rule))
        guides = build_guides([(clip, 1.0)], cfg, base, None)
        trained = img.detach().clone().requires_grad_(True)
        terms = loss_terms(guides, img.detach(), trained, cfg, torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(terms["direction"], [trained])
        sizes[rule] = float(grad.abs().max())
    assert sizes["shift"] > 1000 * sizes["limit"], sizes


# ---------------------------------------------------------------- the reference preset and its flags


def test_reference_preset_and_cli_flag() -> None:
    from nada.frontends.cli import adapt_config, build_parser

    official = AdaptConfig.reference("official", target="sketch")
    switches = (official.layer_sets, official.noise_mode, official.first_step, official.antialias)
    assert switches == ("official", "independent", "shift", False)
    assert official.select_score == "mean_abs" and official.select_noise == "random"
    parse = build_parser().parse_args
    assert adapt_config(parse(["adapt", "--target", "sketch", "--reference", "official"])) == official
    # A flag given on the command line wins over the preset, even when it names nada's default.
    argv = ["adapt", "--target", "sketch", "--reference", "official", "--noise-mode", "random", "--lr", "0.01"]
    chosen = adapt_config(parse(argv))
    assert chosen == official.replace(noise_mode="random", lr=0.01)
    plain = adapt_config(parse(["adapt", "--target", "sketch", "--first-step", "shift"]))
    assert plain == AdaptConfig(target="sketch", first_step="shift")
    with pytest.raises(Exception, match="unknown reference mode"):
        AdaptConfig.reference("fast")


@pytest.mark.parametrize("field", ["select_score", "select_noise", "layer_sets", "first_step", "noise_mode"])
def test_reference_switches_are_validated(field: str) -> None:
    from nada.errors import NadaError

    with pytest.raises(NadaError, match=f"unknown {field}"):
        AdaptConfig(target="sketch", **{field: "bogus"}).validate()
