"""Checkpoint loading and saving: rosinality formats, nada round trip, config inference, and every bad input."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from nada.errors import NadaError
from nada.generator.checkpoints import infer_config, load_generator, read_metadata, save_checkpoint
from nada.generator.networks import Generator, GeneratorConfig

CHANNELS = {4: 16, 8: 16, 16: 8, 32: 8}


def tiny_generator(seed: int = 0) -> Generator:
    """A 32x32 generator with every parameter perturbed (so biases and noise strengths matter) and its mean latent
    set."""
    torch.manual_seed(seed)
    G = Generator(32, style_dim=16, n_mlp=2, channels=CHANNELS)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    G.compute_mean_latent(n=256)
    return G.eval()


def render(G: Generator, psi: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return G(torch.randn(3, G.style_dim, generator=torch.Generator().manual_seed(7)), truncation_psi=psi)


def rosinality_ckpt(G: Generator) -> dict:
    return {"g_ema": G.state_dict(), "latent_avg": G.mean_latent.clone()}


class Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- rosinality formats


def test_golden_rosinality_checkpoint(golden: Path, tmp_path: Path) -> None:
    gold = torch.load(golden / "rosinality_A.pt", weights_only=True)
    path = tmp_path / "stylegan2-small.pt"
    torch.save(gold["ckpt"], path)
    G = load_generator(path)
    c = gold["config"]
    assert (G.size, G.style_dim, G.n_latent) == (c["size"], c["style_dim"], gold["n_latent"])
    assert G.config.channel_table == {int(k): v for k, v in c["channels"].items() if int(k) <= c["size"]}
    assert torch.equal(G.mean_latent, gold["ckpt"]["latent_avg"])
    with torch.no_grad():
        assert (G(gold["z"], noise=gold["noises"]) - gold["img"]).abs().max() < 1e-4
        assert (G(gold["z"], truncation_psi=0.7, noise=gold["noises"]) - gold["img_trunc"]).abs().max() < 1e-4
        assert (G(gold["z"]) - gold["img_buffer_noise"]).abs().max() < 1e-4


def test_training_checkpoint_with_args_namespace(tmp_path: Path) -> None:
    G, G_raw = tiny_generator(0), tiny_generator(1)
    ckpt = {
        "g": G_raw.state_dict(),
        "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
        "g_ema": G.state_dict(),
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99)}]},
        "d_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
        "args": argparse.Namespace(size=32, batch=16, lr=0.002, path="/data/lmdb", device="cuda"),
        "latent_avg": G.mean_latent.clone(),
    }
    path = tmp_path / "040000.pt"
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only loading refuses the Namespace
        torch.load(path, weights_only=True)
    loaded = load_generator(path)
    assert torch.equal(render(loaded), render(G)), "g_ema must be preferred over g"
    assert not torch.equal(render(loaded), render(G_raw))


def test_training_checkpoint_without_g_ema_warns_and_uses_g(tmp_path: Path) -> None:
    G = tiny_generator(2)
    path = tmp_path / "g_only.pt"
    torch.save({"g": G.state_dict(), "latent_avg": G.mean_latent}, path)
    with pytest.warns(UserWarning, match="'g_ema'"):
        loaded = load_generator(path)
    assert torch.equal(render(loaded), render(G))


def test_missing_mean_latent_is_computed_with_warning(tmp_path: Path) -> None:
    G = tiny_generator(3)
    path = tmp_path / "no_avg.pt"
    torch.save({"g_ema": G.state_dict()}, path)
    with pytest.warns(UserWarning, match="latent_avg"):
        loaded = load_generator(path)
    expected = tiny_generator(3).compute_mean_latent()
    assert torch.allclose(loaded.mean_latent, expected, atol=1e-6)


def test_load_to_device_argument(tmp_path: Path) -> None:
    path = tmp_path / "g.pt"
    torch.save(rosinality_ckpt(tiny_generator()), path)
    G = load_generator(path, device=torch.device("cpu"))
    assert next(G.parameters()).device.type == "cpu" and not G.training


# ---------------------------------------------------------------- config inference


def _shape_only(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Tensors with the given shapes but one element of storage (zero strides): enough for shape inference."""
    return {k: torch.empty_strided(s, [0] * len(s)) for k, s in shapes.items()}


def test_infer_config_ffhq_1024_layout(golden: Path) -> None:
    schema = json.loads((golden / "rosinality_1024_schema.json").read_text())
    entries = schema["state_dict"] if isinstance(schema, dict) and "state_dict" in schema else schema
    # The FIR kernel buffers are left out: their values (not only shapes) matter and this state dict has none.
    shapes = {e["key"]: e["shape"] for e in entries if not e["key"].endswith(".kernel")}
    cfg = infer_config(_shape_only(shapes))
    assert cfg == GeneratorConfig(1024, 512, 8, channel_multiplier=2)


def test_infer_config_channel_multiplier_one() -> None:
    # The keys infer_config reads, shaped like rosinality's Generator(128, 32, 3, channel_multiplier=1).
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128}
    shapes = {f"style.{i}.weight": [32, 32] for i in (1, 2, 3)} | {"input.input": [1, 512, 4, 4]}
    prev = 512
    for j, res in enumerate([8, 16, 32, 64, 128]):
        shapes[f"convs.{2 * j}.conv.weight"] = [1, ch[res], prev, 3, 3]
        shapes[f"to_rgbs.{j}.conv.weight"] = [1, 3, ch[res], 1, 1]
        prev = ch[res]
    cfg = infer_config(_shape_only(shapes))
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channel_multiplier, cfg.channels) == (128, 32, 3, 1, None)


def test_infer_config_explicit_channels() -> None:
    cfg = infer_config(tiny_generator().state_dict())
    assert cfg.channel_table == CHANNELS and cfg.size == 32 and cfg.n_mlp == 2 and cfg.blur_kernel == (1, 3, 3, 1)


# ---------------------------------------------------------------- nada checkpoints


def test_nada_checkpoint_round_trip(tmp_path: Path) -> None:
    G = tiny_generator(4)
    meta = {
        "base_model": "toy",
        "source_text": "photo",
        "target_text": "sketch",
        "trained_layers": ["convs.0", "to_rgbs.1"],
        "iterations": 300,
        "adaptation_config": {"lr": 0.002, "clip_models": ["ViT-B/32"], "weights": (1.0, 0.5)},
        "base_config": G.config,  # dataclasses are stored as plain dicts
    }
    path = save_checkpoint(tmp_path / "adapted.pt", G, meta)
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert set(raw) == {"g_ema", "latent_avg", "nada"} and list(raw["g_ema"]) == list(G.state_dict())
    loaded = load_generator(path)
    assert loaded.config == G.config
    assert torch.equal(loaded.mean_latent, G.mean_latent)
    assert torch.equal(render(loaded), render(G)) and torch.equal(render(loaded, 0.5), render(G, 0.5))
    got = read_metadata(path)
    for key, value in meta.items():
        if key == "base_config":
            assert GeneratorConfig.from_dict(got[key]) == G.config
        else:
            assert got[key] == (json.loads(json.dumps(value)) if key == "adaptation_config" else value)
    assert got["generator_config"] == G.config.to_dict()
    assert GeneratorConfig.from_dict(got["generator_config"]) == G.config
    assert got["nada_version"] and got["format_version"] == 1


def test_save_refuses_overwrite_and_non_plain_metadata(tmp_path: Path) -> None:
    G = tiny_generator()
    path = save_checkpoint(tmp_path / "a.pt", G, {"iterations": 1})
    before = path.read_bytes()
    with pytest.raises(NadaError, match="already exists"):
        save_checkpoint(path, G, {"iterations": 2})
    assert path.read_bytes() == before
    save_checkpoint(path, G, {"iterations": 2}, overwrite=True)
    assert read_metadata(path)["iterations"] == 2
    with pytest.raises(NadaError, match="plain types"):
        save_checkpoint(tmp_path / "b.pt", G, {"bad": object()})
    assert not (tmp_path / "b.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"], "no temporary files may be left behind"


def test_read_metadata_of_foreign_checkpoint(tmp_path: Path, golden: Path) -> None:
    path = tmp_path / "ros.pt"
    torch.save(rosinality_ckpt(tiny_generator()), path)
    with pytest.raises(NadaError, match="no nada metadata"):
        read_metadata(path)
    with pytest.raises(NadaError, match="not a nada checkpoint"):
        read_metadata(golden / "nvlabs_small.pkl")


def test_metadata_config_that_does_not_fit_weights(tmp_path: Path) -> None:
    G = tiny_generator()
    path = save_checkpoint(tmp_path / "a.pt", G, {})
    raw = torch.load(path, weights_only=True)
    raw["nada"]["generator_config"] = GeneratorConfig(1024, 16, 2).to_dict()
    bad = tmp_path / "declared_1024.pt"
    torch.save(raw, bad)
    with pytest.raises(NadaError, match=r"declares a generator with size 1024.*weights are for size 32"):
        load_generator(bad)


# ---------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NadaError, match=r"not found.*check the path"):
        load_generator(tmp_path / "nope.pt")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NadaError, match="is a directory"):
        load_generator(tmp_path)


def test_unknown_registered_name() -> None:
    with pytest.raises(NadaError, match=r"registered generator.*toy"):
        load_generator("no-such-generator")


def test_registered_toy_name() -> None:
    from nada.weights.registry import known_generators, resolve_generator

    assert "toy" in known_generators()
    try:
        path = resolve_generator("toy")
    except NadaError as e:  # the packaged file is added by the toy world; its absence must be explained
        assert "reinstall" in str(e) and "toy" in str(e)
    else:
        assert path.is_file() and path.name == "generator.pt"


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_file(tmp_path: Path, cut: float) -> None:
    good = tmp_path / "good.pt"
    torch.save(rosinality_ckpt(tiny_generator()), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(NadaError, match=r"bad\.pt.*(empty|truncated, corrupt)"):
        load_generator(bad)


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(NadaError, match="not a checkpoint nada knows"):
        load_generator(path)


@pytest.mark.parametrize("obj", [[1, 2, 3], {"model": {"w": torch.zeros(2)}}])
def test_torch_file_without_generator(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(NadaError, match="other.pt"):
        load_generator(path)


def test_shape_mismatch(tmp_path: Path) -> None:
    sd = tiny_generator().state_dict()
    sd["convs.1.conv.weight"] = sd["convs.1.conv.weight"][:, :, :8]
    path = tmp_path / "bad_shape.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, path)
    with pytest.raises(NadaError, match=r"wrong shape: convs\.1\.conv\.weight"):
        load_generator(path)


def test_missing_key(tmp_path: Path) -> None:
    sd = tiny_generator().state_dict()
    del sd["convs.2.noise.weight"]
    path = tmp_path / "missing_key.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(NadaError, match=r"missing: convs\.2\.noise\.weight"):
        load_generator(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights(tmp_path: Path, value: float) -> None:
    sd = tiny_generator().state_dict()
    sd["to_rgbs.0.bias"][0, 1] = value
    path = tmp_path / "nan.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, path)
    with pytest.raises(NadaError, match=r"to_rgbs\.0\.bias contains NaN or infinite"):
        load_generator(path)


def test_bad_latent_avg_shape(tmp_path: Path) -> None:
    path = tmp_path / "avg.pt"
    torch.save({"g_ema": tiny_generator().state_dict(), "latent_avg": torch.zeros(3, 16)}, path)
    with pytest.raises(NadaError, match=r"latent_avg has shape \[3, 16\]"):
        load_generator(path)


def test_malicious_torch_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "x": Payload(marker)}, path)
    with pytest.raises(NadaError, match=r"system.*refuses to load"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_plain_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Payload(marker)}, protocol=protocol))
    with pytest.raises(NadaError, match=r"refused to unpickle global '(posix|os)\.system'"):
        load_generator(path)
    assert not marker.exists()


def test_no_warning_for_clean_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "g.pt"
    torch.save(rosinality_ckpt(tiny_generator()), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_generator(path)


def test_random_source_is_seeded_and_validated() -> None:
    a, b, c = load_generator("random:32"), load_generator("random:32"), load_generator("random:32:1")
    z = torch.randn(2, a.style_dim, generator=torch.Generator().manual_seed(0))
    assert a.size == 32 and a.mean_latent.abs().sum() > 0
    assert torch.equal(a(z), b(z)) and not torch.equal(a(z), c(z))
    with pytest.raises(NadaError, match="power of two"):
        load_generator("random:48")
