"""The weights preflight: every weights file a command needs is resolved before any download or work.

A command first collects its `Need`s (generator, every CLIP of the ensemble, the perceptual and identity
networks; `generator_needs`, `preset_needs`, `clip_needs`, `loss_needs`, or `adapt_needs` for a whole
adaptation), then calls `ensure` (downloads what is missing) or `check` (downloads nothing, only refuses).
When some required file is missing and cannot be fetched now, because offline mode is on (``NADA_OFFLINE=1``
or ``HF_HUB_OFFLINE=1``), because a download host does not answer one connection attempt, or because the
file is placed by hand only, one `NadaError` lists every such file with its address, size and target path.
The network is probed once per host with one TCP connection (`probe_host`), so an offline machine learns
everything at once instead of waiting through the retries of each download in turn.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from nada.errors import NadaError, one_line
from nada.generator.domains import read_domain
from nada.guidance.clip_specs import parse_clip_spec
from nada.guidance.clip_weights import fetch_pretrained_weights, pretrained_weights
from nada.photos import perceptual as P
from nada.photos.invert import LOSS_KINDS
from nada.weights import download
from nada.weights.download import OFFLINE_REASON, human_size, local_path, offline
from nada.weights.presets import get_preset, is_compact, preset_status
from nada.weights.registry import GENERATORS

if TYPE_CHECKING:
    from nada.config import AdaptConfig
    from nada.photos.invert import InvertConfig
    from nada.weights.download import WeightsSource

PROBE_TIMEOUT_S = 5.0  # one connection attempt per download host; no retries


@dataclass(frozen=True)
class Need:
    """One weights file a command needs: what it is for, where it comes from and goes, whether it is here."""

    what: str  # e.g. "generator 'ffhq'", "CLIP 'ViT-B/32'"
    source: "WeightsSource | None"  # None: no address is known
    dest: Path  # where nada looks for it and a download goes
    found: Path | None  # the file on this machine, None when missing
    fetch: Callable[[], Path] | None = None  # downloads it; None: it can only be placed by hand
    optional: bool = False  # the command runs without it (a loss dropped with --allow-missing-losses)
    hint: str = ""  # another way out, added once to the message (e.g. the flag that drops the loss)

    def line(self) -> str:
        """'what: address (size) -> target path', one line of the missing-files message."""

        address = self.source.address if self.source is not None else "(no download address known)"
        size = human_size(self.source.size) if self.source is not None and self.source.size else "size unknown"
        by_hand = "" if self.fetch is not None else " (download it by hand: the host serves a web page, not the file)"
        return f"{self.what}: {address} ({size}) -> {self.dest}{by_hand}"


# ---------------------------------------------------------------- what a command needs


def generator_needs(source: str | os.PathLike | None) -> list[Need]:
    """The download a generator source needs: a registered name's file; nothing for paths and packaged names."""

    text = str(source or "").strip()
    entry = GENERATORS.get(text)
    if entry is None or entry.weights.kind == "package" or Path(text).expanduser().exists():
        return []  # paths, random:SIZE and unknown names are checked by the loader itself
    dest = local_path(entry.weights, entry.name)
    return [
        Need(
            f"generator {entry.name!r}",
            entry.weights,
            dest,
            dest if dest.is_file() else None,
            lambda: download.fetch(entry.weights, entry.name),
        )
    ]


def preset_needs(name: str) -> list[Need]:
    """The released weights of a preset not yet on this machine, or the base generator a compact preset file needs."""

    preset = get_preset(name)
    status = preset_status(preset)
    if status.available:
        on_base = status.path is not None and (is_compact(status.path) or read_domain(status.path) is not None)
        return generator_needs(preset.base) if on_base else []
    if preset.weights is None or preset.weights.kind == "package":
        return []  # train on demand: load_preset says how
    weights, dest = preset.weights, local_path(preset.weights, preset.name)
    return [Need(f"preset {name!r}", weights, dest, None, lambda: download.fetch(weights, preset.name))]


def clip_needs(spec: str) -> list[Need]:
    """The pretrained weights of every model of a CLIP spec ("ViT-B/32,ViT-B/16:0.5"); registered CLIPs and paths need
    none."""

    needs = []
    for name, _ in parse_clip_spec(spec):
        w = pretrained_weights(name)
        if w is not None:
            getter = (lambda n=name: fetch_pretrained_weights(n)) if w.source is not None else None
            needs.append(Need(f"CLIP {name!r}", w.source, w.dest, w.found, getter))
    return needs


def loss_needs(config: "InvertConfig", kind: str, optional: bool = False) -> list[Need]:
    """LPIPS (backbone and linear layers) and ArcFace files that an inversion with `config` weights for `kind`."""

    if kind not in LOSS_KINDS:
        raise NadaError(f"unknown loss set {kind!r}: use one of {', '.join(LOSS_KINDS)}")
    if kind != "face":
        return []  # a profile's own perceptual distance is the profile's to provide

    keys = [P._LPIPS_ARCH[config.lpips_net][2], f"lpips-{config.lpips_net}"] if config.lambda_lpips > 0 else []
    keys += ["arcface-ir-se50"] if config.lambda_id > 0 else []
    return [_perceptual_need(key, optional) for key in keys]


def _perceptual_need(key: str, optional: bool) -> Need:

    source = P.WEIGHTS[key]
    dest = local_path(source, key)
    found = next((p for p in (dest, *P._elsewhere(key)) if p.is_file()), None)
    getter = None if key in P.MANUAL_ONLY else (lambda: P.resolve_weights(key))
    hint = "pass --allow-missing-losses to run without the losses whose weights are missing"
    return Need(f"weights {key!r}", source, dest, found, getter, optional, hint)


def adapt_needs(config: "AdaptConfig") -> list[Need]:
    """Everything an adaptation loads: its base generator and every CLIP of its guide."""
    return generator_needs(config.generator) + clip_needs(config.resolved_clip())


# ---------------------------------------------------------------- checking and fetching


def probe_host(host: str, port: int = 443) -> str | None:
    """None when one TCP connection to host:port (or to the HTTPS proxy) succeeds, else the reason in a few words."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"{host}:{port} does not answer ({one_line(e)})"


def _host(need: Need) -> str:
    assert need.source is not None
    if need.source.kind == "hub":
        return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    return urlparse(need.source.url).hostname or ""


def _unique(needs: Iterable[Need]) -> list[Need]:
    seen: dict[Path, Need] = {}
    for n in needs:
        seen.setdefault(n.dest, n)
    return list(seen.values())


def _blocked(missing: Sequence[Need]) -> str | None:
    """Why the missing files cannot be downloaded now, or None when they can (one probe per host)."""

    if offline():
        return OFFLINE_REASON
    if any(n.fetch is None for n in missing):
        return "some of them cannot be downloaded automatically"
    for host in dict.fromkeys(_host(n) for n in missing):
        reason = probe_host(host)
        if reason is not None:
            return f"the network cannot be reached ({reason}; NADA_OFFLINE=1 skips this check)"
    return None


def missing_message(missing: Sequence[Need], reason: str) -> str:
    """The one message that lists every missing file (address, size, target path) and what to do.

    Its first line alone names the problem, the folder the files go to and both fixes; the lines after it
    list the files, one each.
    """
    many = len(missing) > 1
    count = f"{len(missing)} weights files" if many else "1 weights file"
    root = Path(os.path.commonpath([str(n.dest.parent) for n in missing]))
    lines = [
        f"{count} this command needs {'are' if many else 'is'} not on this machine and {reason}: "
        f"download {'each file listed below' if many else 'the file below'} and save it as the path after its arrow "
        f"(under {root}), or run again with network access (NADA_OFFLINE unset), which caches "
        f"{'them' if many else 'it'} there"
    ]
    lines += [f"  - {n.line()}" for n in missing]
    lines += [f"or {hint}" for hint in dict.fromkeys(n.hint for n in missing if n.hint)]
    return "\n".join(lines)


def check(needs: Iterable[Need]) -> list[Need]:
    """The required files to download (none fetched here); NadaError listing them all if they cannot be fetched now."""
    missing = [n for n in _unique(needs) if n.found is None and not n.optional]
    if missing:
        reason = _blocked(missing)
        if reason is not None:
            raise NadaError(missing_message(missing, reason))
    return missing


def ensure(needs: Iterable[Need]) -> None:
    """Download every missing required file after `check` found them all obtainable; the loaders then find them."""
    for need in check(needs):
        assert need.fetch is not None
        need.fetch()
