"""Presets: the table, where weights are found, compact preset files,
and `nada presets` / `nada generate --preset --compare`."""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nada.config import AdaptConfig, preset_config
from nada.errors import NadaError
from nada.frontends.cli import build_parser, main
from nada.generator.checkpoints import save_checkpoint
from nada.generator.generate import generate_images
from nada.generator.networks import Generator
from nada.weights import presets, registry
from nada.weights.download import WeightsSource
from nada.weights.presets import (
    PRESETS,
    Preset,
    comparison_rows,
    get_preset,
    load_preset,
    load_preset_file,
    pack_preset,
    preset_status,
)

SIZE, PAD = 16, 2
CHANGED = ("convs.1", "to_rgbs.0")  # the layers the fake adaptation moves


def make_base(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(SIZE, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8})
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    G.compute_mean_latent(n=256)
    return G.eval()


def adapted_from(base: Generator) -> Generator:
    """A copy of `base` whose CHANGED layers moved, as adaptation would move them."""
    G = make_base()
    G.load_state_dict(base.state_dict())
    G.mean_latent.copy_(base.mean_latent)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in CHANGED:
            for p in G.get_submodule(name).parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return G


@pytest.fixture(autouse=True)
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Private cache, offline, a registered base 'tiny' already in the cache, and two presets on it."""
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NADA_OFFLINE", "1")  # nothing in these tests may touch the network
    monkeypatch.chdir(tmp_path)
    tiny = registry.RegisteredGenerator(
        "tiny", WeightsSource("tiny.pt", url="https://example.invalid/tiny.pt"), SIZE, "test base"
    )
    monkeypatch.setitem(registry.GENERATORS, "tiny", tiny)
    base = make_base()
    save_checkpoint(registry.generator_file("tiny"), base, {})
    adapted = adapted_from(base)
    run = tmp_path / "run" / "generator.pt"
    save_checkpoint(
        run, adapted, {"base_model": "tiny", "source": "photo", "target": "sketch", "iterations": 7, "layers": "all"}
    )
    released = Preset(
        "tiny-released",
        "tiny",
        "photo",
        "sketch",
        (("iterations", 7),),
        WeightsSource("released.pt", url="https://example.invalid/released.pt"),
        "released weights",
    )
    on_demand = Preset(
        "tiny-on-demand", "tiny", "photo", "watercolor", (("iterations", 5), ("layers", "all")), None, "train on demand"
    )
    for p in (released, on_demand):
        monkeypatch.setitem(PRESETS, p.name, p)
    return {"base": base, "adapted": adapted, "run": run, "released": released, "on_demand": on_demand}


def render(G: Generator, seeds: list[int]) -> torch.Tensor:
    return generate_images(G, seeds, truncation_psi=0.7, batch_size=4)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- the table


def test_table_is_consistent() -> None:
    valid = {f.name for f in fields(AdaptConfig)}
    table = {name: get_preset(name) for name in presets.known_presets()}  # the plugins' presets too
    for name, p in table.items():
        if name.startswith("tiny-"):
            continue
        assert p.name == name and p.base in registry.known_generators(), name
        assert {k for k, _ in p.options} <= valid, name
        preset_config(p).validate()  # every recipe is a runnable AdaptConfig
        if p.weights is not None and p.weights.kind == "hub":
            assert len(p.weights.hf_revision) == 40 and p.weights.address.startswith("https://huggingface.co/"), name
    toy = [p for p in table.values() if p.base == "toy"]
    assert {"toy-sketch", "toy-watercolor", "toy-pixel-art"} <= {p.name for p in toy}
    assert all(p.weights is not None and p.weights.package_path == f"assets/toy/presets/{p.name}.pt" for p in toy)
    assert any(p.weights is None for p in table.values())  # recipes that train on demand exist
    assert sum(p.weights is not None and p.weights.kind == "hub" for p in table.values()) >= 5


@pytest.mark.parametrize("name", [n for n in presets.known_presets() if not n.startswith("tiny-")])
def test_printed_adapt_command_parses_to_the_recipe(name: str) -> None:
    from nada.frontends.cli import adapt_config

    p = get_preset(name)
    argv = shlex.split(presets.adapt_command(p, out_dir="runs/x"))
    assert argv[:2] == ["nada", "adapt"]
    parsed = adapt_config(build_parser().parse_args(argv[1:]))  # the base's profile applies as it does in the CLI
    assert parsed == preset_config(p, "runs/x")
    assert parsed.to_dict() == {**parsed.to_dict(), **dict(p.options)}  # the preset's recipe wins over the profile


def test_unknown_preset_lists_names() -> None:
    with pytest.raises(NadaError, match="unknown preset 'nope'.*toy-sketch"):
        get_preset("nope")


# ---------------------------------------------------------------- where the weights are


def test_status_and_loading_of_released_weights(world: dict, tmp_path: Path) -> None:
    p = world["released"]
    st = preset_status(p)
    assert not st.available and "downloads" in st.note
    with pytest.raises(NadaError) as err:  # offline: the message says what to put where
        load_preset(p.name)
    target = tmp_path / "cache" / "weights" / "tiny-released" / "released.pt"
    assert str(target) in str(err.value)
    target.parent.mkdir(parents=True)
    target.write_bytes(Path(world["run"]).read_bytes())
    assert preset_status(p).available and preset_status(p).path == target
    G = load_preset(p.name)
    assert torch.allclose(render(G, [0, 1]), render(world["adapted"], [0, 1]), atol=1e-6)


def test_train_on_demand_preset(world: dict) -> None:
    p = world["on_demand"]
    assert "train on demand" in preset_status(p).note
    with pytest.raises(NadaError) as err:
        load_preset(p.name)
    msg = str(err.value)
    assert "nada adapt" in msg and str(presets.trained_dir(p.name)) in msg and "--target watercolor" in msg
    trained = presets.trained_dir(p.name) / "generator.pt"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(Path(world["run"]).read_bytes())  # what the printed command leaves there
    assert preset_status(p).note == "yes (trained here)"
    assert torch.allclose(render(load_preset(p.name), [3]), render(world["adapted"], [3]), atol=1e-6)


def test_missing_packaged_preset_is_not_available() -> None:
    p = Preset(
        "toy-missing",
        "toy",
        "photo",
        "neon",
        (),
        WeightsSource("toy-missing.pt", package_path="assets/toy/presets/toy-missing.pt"),
    )
    st = preset_status(p)
    assert not st.available and st.note.startswith("not available")


# ---------------------------------------------------------------- compact preset files


def test_pack_stores_only_changed_tensors_in_float16(world: dict, tmp_path: Path) -> None:
    out = pack_preset(world["run"], tmp_path / "p.pt", name="tiny-released")
    raw = torch.load(out, weights_only=True)  # plain data and tensors only
    changed = {k for k in raw["delta"]}
    base = world["base"]
    expected = {f"{m}.{n}" for m in CHANGED for n, _ in base.get_submodule(m).named_parameters()}
    assert changed == expected and all(t.dtype == torch.float16 for t in raw["delta"].values())
    assert raw["nada_preset"]["base"] == "tiny" and raw["nada_preset"]["metadata"]["target"] == "sketch"
    assert out.stat().st_size < Path(world["run"]).stat().st_size / 3
    info = presets.packed_info(out)
    assert info["tensors"] == len(expected) and info["parameters"] == sum(raw["delta"][k].numel() for k in expected)


def test_packed_preset_loads_as_a_normal_generator(world: dict, tmp_path: Path) -> None:
    out = pack_preset(world["run"], tmp_path / "p.pt")
    G = load_preset_file(out)
    assert isinstance(G, Generator) and not G.training
    base_sd, adapted_sd, got = world["base"].state_dict(), world["adapted"].state_dict(), G.state_dict()
    for k in got:
        if k.split(".")[0] + "." + k.split(".")[1] in CHANGED:
            assert torch.allclose(got[k], adapted_sd[k], atol=1e-4, rtol=0), k  # float16 rounding of a small difference
        else:
            assert torch.equal(got[k], base_sd[k]), k  # untouched layers come from the base, bit for bit
    diff = (render(G, [0, 1, 2]) - render(world["adapted"], [0, 1, 2])).abs().max().item()
    assert diff < 2e-3


def test_pack_refuses_to_overwrite_and_needs_a_registered_base(world: dict, tmp_path: Path) -> None:
    out = pack_preset(world["run"], tmp_path / "p.pt")
    with pytest.raises(NadaError, match="already exists"):
        pack_preset(world["run"], out)
    pack_preset(world["run"], out, overwrite=True)
    bare = tmp_path / "bare.pt"
    torch.save({"g_ema": world["adapted"].state_dict(), "latent_avg": world["adapted"].mean_latent}, bare)
    with pytest.raises(NadaError, match="not a registered name"):
        pack_preset(bare, tmp_path / "q.pt")
    assert pack_preset(bare, tmp_path / "q.pt", base="tiny").is_file()


def test_packed_preset_refuses_a_different_base(world: dict, tmp_path: Path) -> None:
    out = pack_preset(world["run"], tmp_path / "p.pt")
    save_checkpoint(registry.generator_file("tiny"), make_base(seed=5), {}, overwrite=True)  # the base changed since
    with pytest.raises(NadaError, match="other weights of the base generator 'tiny'"):
        load_preset_file(out)


def test_corrupt_preset_file_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(NadaError, match="bad.pt"):
        load_preset_file(bad)


# ---------------------------------------------------------------- comparison helpers


def test_comparison_rows_put_base_above_adapted() -> None:
    base, adapted = -torch.ones(11, 3, 4, 4), torch.zeros(11, 3, 4, 4)
    rows = comparison_rows(base, adapted, columns=8)
    assert len(rows) == 4 and all(r.shape == (8, 3, 4, 4) for r in rows)
    assert (rows[0] == -1).all() and (rows[1] == 0).all()
    assert (rows[2][:3] == -1).all() and (rows[3][:3] == 0).all() and (rows[2][3:] == 1).all()  # white padding


def test_share_mean_latent_only_with_the_same_mapping(world: dict) -> None:
    base, adapted = world["base"], make_base()
    adapted.load_state_dict(world["adapted"].state_dict())
    adapted.mean_latent.zero_()
    assert presets.share_mean_latent(base, adapted) and torch.equal(adapted.mean_latent, base.mean_latent)
    other = make_base(seed=3)
    assert not presets.share_mean_latent(other, adapted)


# ---------------------------------------------------------------- command line


def test_cli_presets_list_and_show(capsys: pytest.CaptureFixture[str], world: dict) -> None:
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "BASE", "DOMAIN"]
    for name in ("toy-sketch", "ffhq-pixar", "ffhq-werewolf", "tiny-released"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "photo -> watercolor" in out and "train on demand" in out
    assert main(["presets", "show", "tiny-on-demand"]) == 0
    shown = capsys.readouterr().out
    assert "nada adapt --generator tiny --source photo --target watercolor" in shown
    assert main(["presets", "generators"]) == 0
    assert "ffhq" in capsys.readouterr().out
    assert main(["presets", "show", "nope"]) == 2


def test_cli_pack(capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path) -> None:
    assert main(["presets", "pack", "tiny-on-demand", str(world["run"])]) == 0
    out = capsys.readouterr().out
    target = presets.trained_dir("tiny-on-demand") / "generator.pt"
    assert target.is_file() and f"wrote {target}" in out and "changed tensors" in out
    assert preset_status(world["on_demand"]).available  # packed into the place load_preset looks at
    assert main(["presets", "show", "tiny-on-demand"]) == 0
    shown = capsys.readouterr().out
    assert "yes (trained here)" in shown and "packed:" in shown and "'iterations': 7" in shown
    assert main(["presets", "pack", "tiny-on-demand", str(world["run"])]) == 2  # no silent overwrite


def test_cli_generate_preset_compare(world: dict, tmp_path: Path) -> None:
    trained = presets.trained_dir("tiny-on-demand") / "generator.pt"
    pack_preset(world["run"], trained)
    out = tmp_path / "cmp.png"
    assert (
        main(
            [
                "generate",
                "--preset",
                "tiny-on-demand",
                "--seeds",
                "0-2",
                "--truncation",
                "0.7",
                "--compare",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    img = pixels(out)
    assert img.shape == (2 * (SIZE + PAD) + PAD, 3 * (SIZE + PAD) + PAD, 3)
    top = img[PAD : PAD + SIZE, PAD : PAD + SIZE].astype(int)
    bottom = img[2 * PAD + SIZE : 2 * PAD + 2 * SIZE, PAD : PAD + SIZE].astype(int)
    expect_top = ((render(world["base"], [0])[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    expect_bottom = ((render(world["adapted"], [0])[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(top - expect_top).max() <= 1 and np.abs(bottom - expect_bottom).max() <= 2
    assert np.abs(top - bottom).max() > 10  # the adaptation shows
    assert (
        main(["generate", "--preset", "tiny-on-demand", "--seeds", "0-2", "--compare", "--out", str(out)]) == 2
    )  # exists


def test_cli_generate_checkpoint_compare_uses_recorded_base(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "cmp.png"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(world["run"]),
                "--seeds",
                "4",
                "--compare",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert pixels(out).shape == (2 * (SIZE + PAD) + PAD, SIZE + 2 * PAD, 3)


def test_cli_generate_preset_errors(world: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["generate", "--preset", "tiny-on-demand", "--seeds", "0"]) == 2
    assert "nada adapt" in capsys.readouterr().err
    assert main(["generate", "--preset", "tiny-released", "--compare", "--out-dir", str(tmp_path / "d")]) == 2
    assert "use --out" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"
    torch.save({"g_ema": world["adapted"].state_dict(), "latent_avg": world["adapted"].mean_latent}, bare)
    assert main(["generate", "--checkpoint", str(bare), "--compare", "--out", str(tmp_path / "x.png")]) == 2
    assert "--base" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--preset", "a", "--checkpoint", "b"])


def test_packaged_toy_world_fits_its_30_mb_budget() -> None:
    assets = Path(__file__).resolve().parents[1] / "src" / "nada" / "assets"
    total = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    assert 20e6 < total <= 30e6, f"packaged assets: {total / 1e6:.2f} MB"
