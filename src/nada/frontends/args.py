"""Command-line options from dataclass fields: one flag per field, its type and default from the dataclass.

By default every option is None on the parsed namespace until given, so a command knows which options the
user gave (`given`) and can put them above other sources of defaults (a base's profile, a preset's recipe);
``keep_defaults=True`` parses to the dataclass default instead, for commands with no other source. A field
declared with `option` carries its own help text and, where the type alone does not say it, its parser,
metavar and choices. Booleans become switches: ``--name`` for a field that defaults to False, ``--no-name``
for one that defaults to True. Tuple and list fields of plain values take one or more values.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args, get_type_hints


def option(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    choices: Sequence[Any] | None = None,
    shown: str | None = None,
) -> Any:
    """A dataclass field whose command-line flag has this help (and parser, metavar, choices, shown default)."""
    extra = {"type": type, "metavar": metavar, "choices": choices, "shown": shown}
    return dataclasses.field(default=default, metadata={"help": help, **{k: v for k, v in extra.items() if v}})


def field_helps(cls: type) -> dict[str, str]:
    """The help texts of the fields of `cls` declared with `option`, in field order."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}


def flag_for(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The flag of a field: the one `flags` names, else ``--field-name``."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    helps: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
    defaults_note: str = "",
    choices: Mapping[str, Sequence[Any]] | None = None,
    keep_defaults: bool = False,
    shown: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one option per field of `cls` named in `helps` (in that order; None: `field_helps`); returns the fields.

    The parsed value is None unless the option is given (the dataclass default with `keep_defaults`); the help
    shows the dataclass default (or what `shown` says of it) and `defaults_note`.
    """
    helps = field_helps(cls) if helps is None else helps
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name, text in helps.items():
        field = by_name[name]
        default = _default(field)
        said = (shown or {}).get(name) or field.metadata.get("shown")
        said = said or (_shown(default) if default not in (None, "") else "none")
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": default if keep_defaults else None,
            "help": f"{text} (default: {said}{defaults_note})",
        }
        flag = flag_for(name, flags)
        if isinstance(default, bool):
            switch = flag if not default else "--no-" + flag[2:]
            parser.add_argument(switch, action="store_const", const=not default, **kwargs)
            continue
        allowed = (choices or {}).get(name) or field.metadata.get("choices")
        metavar = field.metadata.get("metavar") or (None if allowed else flag[2:].upper().replace("-", "_"))
        parser.add_argument(flag, metavar=metavar, choices=allowed, **_value_kind(cls, field, default), **kwargs)
    return list(helps)


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among `names` that the command line gave (their value is not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def dataclass_from_args(cls: type, args: argparse.Namespace, names: Sequence[str], **extra: Any) -> Any:
    """An instance of `cls` from the given options among `names` (others keep the dataclass defaults) and `extra`."""
    return cls(**{**given(args, names), **extra})


def _value_kind(owner: type, field: dataclasses.Field, default: Any) -> dict[str, Any]:
    """argparse's `type` (and `nargs` for a tuple or list of plain values) of a field's values."""
    if "type" in field.metadata:
        return {"type": field.metadata["type"]}
    if default is None:  # the annotation names the type: `int | None` parses ints
        kinds = [t for t in get_args(get_type_hints(owner)[field.name]) if t is not type(None)]
        return {"type": kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, str) else str}
    if isinstance(default, tuple | list):
        item = type(default[0]) if default else str
        # argparse gives a list; a tuple field gets a tuple back so the dataclass stays hashable and comparable
        return {"type": item, "nargs": "+", "action": _TupleStore if isinstance(default, tuple) else "store"}
    return {"type": type(default)}


class _TupleStore(argparse.Action):
    """Stores the values of an ``nargs="+"`` option as a tuple."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, _: Any = None):
        setattr(namespace, self.dest, tuple(values))


def _shown(default: Any) -> str:
    """A default as the help shows it: sequences as their items separated by spaces."""
    return " ".join(map(str, default)) if isinstance(default, tuple | list) else str(default)


def _default(field: dataclasses.Field) -> Any:
    """A field's default value (its factory's product for default_factory fields)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
