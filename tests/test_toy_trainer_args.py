"""The toy trainers' command lines: every TrainConfig flag defaults to the dataclass default and sets its field."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import pytest

from nada.frontends.args import dataclass_from_args, field_helps, flag_for
from nada.toy import clip_train, evaluator_train, generator_train, sharpen

TRAINERS = {
    "clip_train": (clip_train, clip_train.TrainConfig),
    "generator_train": (generator_train, generator_train.TrainConfig),
    "evaluator_train": (evaluator_train, evaluator_train.TrainConfig),
    "sharpen": (sharpen, sharpen.SharpenConfig),
}
CHANNELS = "4:8,8:16,16:16,32:8,64:8"  # a channel table other than the default


def _other(field: dataclasses.Field) -> tuple[str, Any]:
    """A command-line value for `field` that differs from its default, and the value it parses to."""
    default, choices = field.default, field.metadata.get("choices")
    if choices:
        pick = next(c for c in choices if c != default)
        return str(pick), pick
    if field.name == "channels":
        return CHANNELS, generator_train.parse_channels(CHANNELS)
    if field.name in ("blend_min", "blend_max"):  # shares that must stay a range inside (0, 1]
        return str(round(default + 0.1, 6)), round(default + 0.1, 6)
    if field.name in ("negatives", "generator_share", "negatives_from_share", "drawn_share"):  # their sum stays < 1
        return str(round(default + 0.1, 6)), round(default + 0.1, 6)
    if field.name == "drawn_from":
        return "sketch=elsewhere", "sketch=elsewhere"
    if isinstance(default, str):
        return "elsewhere", "elsewhere"
    return str(default + 1), default + 1


def _parse(module: ModuleType, cls: type, argv: list[str]) -> Any:
    return dataclass_from_args(cls, module.parse_args(["--out", "run", *argv]), list(field_helps(cls)))


@pytest.mark.parametrize("name", list(TRAINERS))
def test_parser_defaults_are_the_dataclass_defaults(name: str) -> None:
    module, cls = TRAINERS[name]
    args = module.parse_args(["--out", "run"])
    helps = field_helps(cls)
    assert len(helps) >= 6  # the trainer's flags really come from its dataclass
    assert {f: getattr(args, f) for f in helps} == {f: getattr(cls(), f) for f in helps}
    assert _parse(module, cls, []) == cls()


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_flag_round_trips_to_its_field(name: str) -> None:
    module, cls = TRAINERS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    argv, expected = [], {}
    for field in field_helps(cls):
        text, value = _other(fields[field])
        argv += [flag_for(field), text]
        expected[field] = value
    config = _parse(module, cls, argv)
    assert config == dataclasses.replace(cls(), **expected) and config != cls()


def test_help_keeps_the_flag_names_and_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        generator_train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    for flag in ("--batch-size", "--channels RES:C,...", "--init-from GENERATOR", "--teacher CLIP", "--loss {mse,l1}"):
        assert flag in text
    assert "(default: 4:128,8:128,16:96,32:64,64:32)" in text and "(default: 6000)" in text


def test_a_bad_channel_table_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        generator_train.parse_args(["--out", "run", "--channels", "4:8,8:8"])
    assert "give a positive count for each of 4, 8, 16, 32 and 64" in capsys.readouterr().err
