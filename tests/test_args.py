"""nada.frontends.args: options from dataclass fields, None until given, switches for booleans."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, flag_for, given


@dataclass(frozen=True)
class Settings:
    steps: int = 300
    rate: float = 0.1
    net: str = "vgg"
    folder: str | None = None
    exact: bool = True
    fast: bool = False


HELP = {"steps": "steps", "rate": "rate", "net": "backbone", "folder": "a folder", "exact": "inexact", "fast": "fast"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Settings, HELP, flags={"rate": "--lr"}, choices={"net": ("vgg", "alex")})
    return p


def test_options_are_none_until_given_and_typed_from_the_defaults() -> None:
    args = parser().parse_args([])
    assert given(args, list(HELP)) == {} and dataclass_from_args(Settings, args, list(HELP)) == Settings()
    args = parser().parse_args(["--steps", "5", "--lr", "0.3", "--folder", "d", "--no-exact", "--fast"])
    assert given(args, list(HELP)) == {"steps": 5, "rate": 0.3, "folder": "d", "exact": False, "fast": True}
    assert dataclass_from_args(Settings, args, list(HELP), net="alex") == Settings(5, 0.3, "alex", "d", False, True)
    assert flag_for("max_pairs") == "--max-pairs" and flag_for("rate", {"rate": "--lr"}) == "--lr"


def test_bad_values_are_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--steps", "x"], ["--net", "resnet"], ["--exact"]):
        with pytest.raises(SystemExit):
            parser().parse_args(argv)
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_help_shows_the_dataclass_default() -> None:
    text = parser().format_help()
    assert "(default: 300)" in text and "(default: none)" in text and "--no-exact" in text
