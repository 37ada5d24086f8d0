"""nada.frontends.args: options from dataclass fields, None until given, switches for booleans."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, field_helps, flag_for, given, option


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


@dataclass(frozen=True)
class Declared:
    steps: int = option(5, "steps")
    sizes: tuple[int, ...] = option((64, 128), "sizes")
    net: str = option("vgg", "backbone", choices=("vgg", "alex"), metavar="NET")
    pair: str = option("a:b", "a pair", type=lambda s: s.replace("-", ":"), shown="A:B")
    hidden: float = 0.5


def test_option_fields_carry_help_type_and_choices_and_keep_defaults_parses_to_them() -> None:
    assert field_helps(Declared) == {"steps": "steps", "sizes": "sizes", "net": "backbone", "pair": "a pair"}
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Declared, keep_defaults=True)
    args = p.parse_args([])
    assert (args.steps, args.sizes, args.net, args.pair) == (5, (64, 128), "vgg", "a:b") and "hidden" not in args
    args = p.parse_args(["--sizes", "8", "16", "32", "--pair", "x-y", "--net", "alex"])
    config = dataclass_from_args(Declared, args, list(field_helps(Declared)))
    assert config == Declared(5, (8, 16, 32), "alex", "x:y") and hash(config)  # a tuple field stays a tuple
    text = " ".join(p.format_help().split())
    assert "--sizes SIZES [SIZES ...]" in text and "(default: 64 128)" in text and "(default: A:B)" in text
    assert "--net NET" in text
    q = argparse.ArgumentParser()
    add_dataclass_arguments(q, Settings, {"folder": "a folder"}, shown={"folder": "the current folder"})
    assert "(default: the current folder)" in " ".join(q.format_help().split())
