"""The toy world as a nada plugin: registers its generator, CLIPs, profile, presets and judge."""

from __future__ import annotations


def register() -> None:
    """Register the toy world's parts with nada's registries (called once by `nada.plugins.load_plugins`)."""
    from nada.toy.clips import register_toy_clips

    register_toy_clips()
