"""NVlabs stylegan2-ada-pytorch snapshots: exact conversion against the reference outputs, and refusal of payloads."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from nada.errors import NadaError
from nada.generator.checkpoints import load_generator
from nada.generator.nvlabs import PersistentObject, convert_generator, read_snapshot, snapshot_generator

TOL = 1e-4


@functools.lru_cache(maxsize=1)
def _expected(path: str) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture
def expected(golden: Path) -> dict:
    return _expected(str(golden / "nvlabs_small_expected.pt"))


@pytest.fixture
def G_nv(golden: Path):
    return load_generator(golden / "nvlabs_small.pkl")


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"{tuple(a.shape)} vs {tuple(b.shape)}"
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- golden conversion


def test_config_and_layout(G_nv, golden: Path, expected: dict) -> None:
    cfg = G_nv.config
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.lr_mlp) == (64, 64, 4, 0.01)
    # channel_base 2048, channel_max 64: min(2048 // res, 64)
    assert cfg.channel_table == {4: 64, 8: 64, 16: 64, 32: 64, 64: 32}
    assert G_nv.n_latent == expected["num_ws"] == 10
    assert torch.equal(G_nv.mean_latent, expected["w_avg"])
    assert not G_nv.training


@torch.no_grad()
def test_mapping_matches_reference(G_nv, expected: dict) -> None:
    w = G_nv.mapping(expected["z"])
    assert maxdiff(G_nv.broadcast_w(w), expected["ws_psi1"]) < TOL
    assert maxdiff(G_nv.broadcast_w(G_nv.truncate(w, 0.7)), expected["ws_psi07"]) < TOL


@torch.no_grad()
def test_images_match_reference(G_nv, expected: dict) -> None:
    scale = expected["img_psi1"].abs().max().item()
    assert scale > 0.5, "reference images must not be trivially small"
    assert maxdiff(G_nv(expected["z"], noise_mode="const"), expected["img_psi1"]) < TOL
    assert maxdiff(G_nv(expected["z"], truncation_psi=0.7, noise_mode="const"), expected["img_psi07"]) < TOL
    assert maxdiff(G_nv.synthesis(expected["ws_fixed"], noise_mode="const"), expected["img_synth_ws_fixed"]) < TOL
    assert (
        maxdiff(G_nv.synthesis(expected["ws_fixed"], noise_mode="none"), expected["img_synth_ws_fixed_noise_none"])
        < TOL
    )
    # The noise really matters in this model, so the 'const' comparison checks the noise conversion.
    assert maxdiff(expected["img_synth_ws_fixed"], expected["img_synth_ws_fixed_noise_none"]) > 1e-2


def test_snapshot_structure_is_data_only(golden: Path) -> None:
    schema = json.loads((golden / "nvlabs_small_schema.json").read_text())
    snap = read_snapshot(golden / "nvlabs_small.pkl")
    assert set(snap) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    g = snapshot_generator(snap)
    assert isinstance(g, PersistentObject) and g.class_name == "Generator"
    assert "module_src" not in g.state and g.child("synthesis").class_name == "SynthesisNetwork"
    tensors = g.tensors()
    assert {k: list(t.shape) for k, t in tensors.items()} == {e["key"]: e["shape"] for e in schema["state_dict"]}


# ---------------------------------------------------------------- unsupported variants


def _converted(golden: Path, edit) -> tuple:
    g = snapshot_generator(read_snapshot(golden / "nvlabs_small.pkl"))
    edit(g)
    return convert_generator(g)


def test_conditional_generator_refused(golden: Path) -> None:
    with pytest.raises(NadaError, match="conditional"):
        _converted(golden, lambda g: g.state.update(c_dim=10))


def test_resnet_architecture_refused(golden: Path) -> None:
    with pytest.raises(NadaError, match="'resnet' architecture"):
        _converted(golden, lambda g: g.child("synthesis").child("b16").state.update(architecture="resnet"))


def test_extra_weights_refused(golden: Path) -> None:
    def add_embed(g: PersistentObject) -> None:
        g.child("mapping").state["_parameters"]["embed_weight"] = torch.zeros(3)

    with pytest.raises(NadaError, match="no place for"):
        _converted(golden, add_embed)


def test_conv_clamp_warns(golden: Path) -> None:
    with pytest.warns(UserWarning, match="conv_clamp"):
        _, sd, _ = _converted(
            golden, lambda g: g.child("synthesis").child("b8").child("conv0").state.update(conv_clamp=256)
        )
    assert "convs.0.conv.weight" in sd


def test_truncated_snapshot(golden: Path, tmp_path: Path) -> None:
    data = (golden / "nvlabs_small.pkl").read_bytes()
    bad = tmp_path / "network-snapshot-000100.pkl"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(NadaError, match="truncated or corrupt"):
        load_generator(bad)


def test_tensorflow_pickle_gets_conversion_hint(tmp_path: Path) -> None:
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")  # GLOBAL, EMPTY_TUPLE, NEWOBJ, STOP
    with pytest.raises(NadaError, match="TensorFlow StyleGAN2 pickle.*convert it"):
        load_generator(path)


# ---------------------------------------------------------------- malicious snapshots


class Reduce:
    """Pickles as a call `fn(*args)`: the building block of the payloads below."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.fixture
def fake_persistence(monkeypatch: pytest.MonkeyPatch):
    """A stand-in `torch_utils.persistence` that behaves like the real one: it exec()s the embedded module source."""

    def _reconstruct_persistent_obj(meta: dict):
        module = types.ModuleType("_imported_module")
        exec(meta["module_src"], module.__dict__)  # what the real NVlabs loader does
        obj = getattr(module, meta["class_name"]).__new__(getattr(module, meta["class_name"]))
        obj.__dict__.update(meta["state"])
        return obj

    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return _reconstruct_persistent_obj


def _snapshot_bytes(g_ema: object) -> bytes:
    return pickle.dumps(dict(training_set_kwargs=None, G=None, D=None, G_ema=g_ema, augment_pipe=None), protocol=4)


def test_embedded_source_is_never_executed(fake_persistence, tmp_path: Path) -> None:
    def snapshot(marker: Path) -> bytes:
        src = f"open({str(marker)!r}, 'w').close()\nclass Generator:\n    pass\n"
        meta = dict(type="class", version=6, module_src=src, class_name="Generator", state={"_modules": {}, "z_dim": 4})
        return _snapshot_bytes(Reduce(fake_persistence, meta))

    # Sanity check: the payload is live, plain unpickling (what NVlabs' own loader does) runs it.
    pickle.loads(snapshot(tmp_path / "pwned_live"))
    assert (tmp_path / "pwned_live").exists()

    marker = tmp_path / "pwned_by_module_src"
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(snapshot(marker))
    with pytest.raises(NadaError, match="not a stylegan2-ada-pytorch Generator"):
        load_generator(path)
    assert not marker.exists()


def test_bare_network_pickle_is_read_as_generator(fake_persistence, tmp_path: Path) -> None:
    meta = dict(
        type="class", version=6, module_src="raise SystemExit", class_name="MappingNetwork", state={"_modules": {}}
    )
    path = tmp_path / "G.pkl"
    path.write_bytes(pickle.dumps(Reduce(fake_persistence, meta), protocol=4))
    with pytest.raises(NadaError, match="MappingNetwork is not a stylegan2-ada-pytorch Generator"):
        load_generator(path)


@pytest.mark.parametrize("fn", [os.system, exec, eval], ids=["os.system", "builtins.exec", "builtins.eval"])
def test_payload_inside_snapshot_state_is_refused(fake_persistence, tmp_path: Path, fn) -> None:
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w').close()"
    if fn is eval:
        code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    state = {"_modules": {}, "_parameters": {"weight": Reduce(fn, code)}}
    meta = dict(type="class", version=6, module_src="class Generator:\n    pass\n", class_name="Generator", state=state)
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(_snapshot_bytes(Reduce(fake_persistence, meta)))
    name = "(posix|os).system" if fn is os.system else f"builtins.{fn.__name__}"
    with pytest.raises(NadaError, match=rf"refused to unpickle global '{name}'"):
        load_generator(path)
    assert not marker.exists()


def test_payload_inside_tensor_storage_bytes_is_refused(tmp_path: Path) -> None:
    # Real snapshots pickle storages as torch.storage._load_from_bytes(blob), which upstream reads with
    # weights_only=False; here the blob is a torch.save'd payload instead of a storage.
    marker = tmp_path / "pwned"
    blob = io.BytesIO()
    torch.save(Reduce(os.system, f"touch {marker}"), blob, _use_new_zipfile_serialization=False)
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(_snapshot_bytes(Reduce(torch.storage._load_from_bytes, blob.getvalue())))
    with pytest.raises(
        NadaError, match="network-snapshot-000000.pkl: a tensor storage in the snapshot contains the Python object"
    ):
        load_generator(path)
    assert not marker.exists()
