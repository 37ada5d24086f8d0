"""Plugins: packages that register generators, CLIPs, profiles, presets and judges with nada.

A plugin is a function named in the `nada.plugins` entry-point group of its distribution's metadata
(`[project.entry-points."nada.plugins"]` in pyproject.toml); nada calls each one once, before the
first lookup in any registry. The toy world registers itself this way, as a third-party base would.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TypeVar

from nada.errors import NadaError

T = TypeVar("T")

GROUP = "nada.plugins"
_loaded: list[str] = []
_started = False


def load_plugins() -> list[str]:
    """Call every registered plugin once; returns the names of the plugins loaded so far."""
    global _started
    if _started:  # also while plugins load: a registry lookup inside a plugin must not load them again
        return list(_loaded)
    _started = True
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            ep.load()()
        except Exception as e:  # a broken plugin names itself instead of failing somewhere later
            raise NadaError(f"nada plugin {ep.name!r} ({ep.value}) failed to load: {e}; reinstall or remove it") from e
        _loaded.append(ep.name)
    return list(_loaded)


def register(table: dict[str, T], name: str, entry: T, kind: str, replace: bool = False) -> T:
    """Put ``entry`` into a registry ``table`` under ``name``; NadaError if another entry holds the name (unless
    ``replace``). Registering an equal entry again is a no-op, so a plugin may run twice."""
    if name in table and table[name] != entry and not replace:
        raise NadaError(f"{kind} {name!r} is already registered: choose another name or pass replace=True")
    table[name] = entry
    return entry
