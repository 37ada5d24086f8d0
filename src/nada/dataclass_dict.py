"""Plain dicts (JSON, checkpoint metadata) into dataclasses, refusing keys the dataclass does not know."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from nada.errors import NadaError

T = TypeVar("T")


def strict_from_dict(cls: type[T], d: Mapping[str, Any], what: str, fix: str = "") -> T:
    """``cls(**d)``; a NadaError names the keys of ``d`` that ``cls`` has no field for, with ``fix`` as the advice."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        advice = f"{fix}; " if fix else ""
        raise NadaError(f"unknown {what} {unknown}: {advice}valid names are {sorted(known)}")
    return cls(**dict(d))
