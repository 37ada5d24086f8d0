"""The shared helpers: one error formatter, one strict from_dict, one safe weights reader, the CLIP registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nada.dataclass_dict import strict_from_dict
from nada.errors import NadaError, one_line


def test_one_line_collapses_cuts_and_names_the_type() -> None:
    e = ValueError("first  line\n\n  second\tline")
    assert one_line(e) == "first line second line"
    assert one_line(e, first_line=True) == "first line"
    assert one_line(e, typed=True, first_line=True) == "ValueError: first line"
    assert one_line(e, last_line=True) == "second line"  # Ray's task errors: the traceback first, the cause last
    assert one_line(KeyError()) == "KeyError"  # an empty message still says something
    cut = one_line(OSError("x" * 500), limit=50)
    assert len(cut) == 50 and cut.endswith("...")


@dataclass(frozen=True)
class _Pair:
    a: int = 1
    b: str = "x"


def test_strict_from_dict_names_unknown_keys_and_the_fix() -> None:
    assert strict_from_dict(_Pair, {"a": 2}, "pair settings") == _Pair(a=2)
    with pytest.raises(NadaError, match=r"unknown pair settings \['c', 'd'\]: fix it; valid names are \['a', 'b'\]"):
        strict_from_dict(_Pair, {"a": 2, "c": 3, "d": 4}, "pair settings", "fix it")


def test_read_state_dict_reads_every_format_and_unwraps(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from nada.weights.safe_load import read_state_dict

    sd = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "nested.pth")
    save_file(sd, str(tmp_path / "plain.safetensors"))
    for name in ("nested.pth", "plain.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd), name
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(NadaError, match=r"LPIPS weights .*list\.pt holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt", "LPIPS weights")


class _Payload:
    """Unpickling this calls os.system: a file holding it must be refused, never executed."""

    def __reduce__(self):
        return (os.system, ("echo executed > /dev/null",))


def test_torch_load_refuses_code_and_reports_damage_in_one_line(tmp_path: Path) -> None:
    from nada.weights.safe_load import torch_load

    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(NadaError, match=r"evil\.pt contains the Python object '(posix|os)\.system'") as err:
        torch_load(tmp_path / "evil.pt")
    assert "\n" not in str(err.value)
    (tmp_path / "page.pt").write_bytes(b"<html>not weights</html>")
    with pytest.raises(NadaError, match=r"page\.pt is truncated, corrupt or not a weights file \(") as err:
        torch_load(tmp_path / "page.pt")
    assert "\n" not in str(err.value) and "PyTorch 2.6" not in str(err.value)  # torch's advice is left out


def test_torchscript_archive_is_read_as_data(tmp_path: Path, monkeypatch) -> None:
    from nada.weights.safe_load import is_torchscript_archive, read_state_dict

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.pt"))

    def _no_code(*args, **kwargs):
        raise AssertionError("TorchScript code was compiled")

    monkeypatch.setattr(torch.jit, "load", _no_code)
    assert is_torchscript_archive(tmp_path / "net.pt")
    got = read_state_dict(tmp_path / "net.pt")
    assert got.keys() == {"0.weight", "0.bias"}
    assert torch.equal(got["0.weight"], net[0].weight.detach())


def test_registered_clip_names_load_through_load_clip(monkeypatch) -> None:
    from nada.guidance import clip_specs
    from nada.guidance.clip import load_clip

    clip_specs.registered_clip_names()  # plugins register into the real registry before the test's copy
    monkeypatch.setattr(clip_specs, "_REGISTRY", dict(clip_specs._REGISTRY))
    calls = []
    clip_specs.register_clip("mine", lambda name, device, antialias, precision: calls.append((name, precision)) or "m")
    assert load_clip("mine", precision="fp16") == "m" and calls == [("mine", "fp16")]
    assert "'mine'" in clip_specs.valid_names_hint()
    with pytest.raises(NadaError, match="already registered"):
        clip_specs.register_clip("mine", lambda *a: None)
    with pytest.raises(NadaError, match="no OpenAI or open_clip name"):
        clip_specs.register_clip("ViT-B/32", lambda *a: None)


def test_the_toy_world_registers_its_clips_through_the_plugin() -> None:
    from nada.guidance.clip_specs import registered_clip, registered_clip_names

    assert {"toy", "toy-robust", "toy-rn"} <= set(registered_clip_names())
    assert registered_clip("toy").loader.__module__ == "nada.toy.clips"


def test_the_guidance_modules_do_not_name_the_toy_clips() -> None:
    guidance = Path(__file__).resolve().parent.parent / "src" / "nada" / "guidance"
    for path in guidance.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "toy-robust" not in text and "nada.toy" not in text, path.name
