"""Command-line options from dataclass fields: one flag per field, its type and default from the dataclass.

Every option defaults to None on the parsed namespace, so a command knows which options the user gave
(`given`) and can put them above other sources of defaults (a base's profile, a preset's recipe).
Booleans become switches: ``--name`` for a field that defaults to False, ``--no-name`` for one that
defaults to True.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


def flag_for(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The flag of a field: the one `flags` names, else ``--field-name``."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    helps: Mapping[str, str],
    flags: Mapping[str, str] | None = None,
    defaults_note: str = "",
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> list[str]:
    """Add one option per field of `cls` named in `helps` (in that order); returns the fields added.

    The parsed value is None unless the option is given; the help shows the dataclass default and `defaults_note`.
    """
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name, text in helps.items():
        default = _default(by_name[name])
        shown = default if default not in (None, "") else "none"
        note = f" (default: {shown}{defaults_note})"
        flag = flag_for(name, flags)
        if isinstance(default, bool):
            switch = flag if not default else "--no-" + flag[2:]
            parser.add_argument(
                switch, dest=name, action="store_const", const=not default, default=None, help=text + note
            )
            continue
        kind = str if default is None else type(default)
        metavar = flag[2:].upper().replace("-", "_")
        allowed = (choices or {}).get(name)
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            metavar=None if allowed else metavar,
            choices=allowed,
            help=text + note,
        )
    return list(helps)


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among `names` that the command line gave (their value is not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def dataclass_from_args(cls: type, args: argparse.Namespace, names: Sequence[str], **extra: Any) -> Any:
    """An instance of `cls` from the given options among `names` (others keep the dataclass defaults) and `extra`."""
    return cls(**{**given(args, names), **extra})


def _default(field: dataclasses.Field) -> Any:
    """A field's default value (its factory's product for default_factory fields)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
