"""Domain vectors: a domain as per-channel offsets of the styles of a frozen generator (HyperDomainNet).

Every modulated convolution and to_rgb layer of a StyleGAN2 generator scales its input channels by a
style vector s [N, in] computed from w. A domain vector holds one offset per such channel, for every
layer (``Generator.domain_channels`` gives the layout: 1,312 numbers for the toy generator, 9,088 for
FFHQ 1024), and the generator renders the domain with the styles s * (1 + delta). A zero vector is the
base exactly; only the style modulation changes; the weights stay the base's, so one base renders a
batch in which every sample has its own domain (``Generator.synthesis(ws, domain=[N, D])``).

A domain file (written by `save_domain`, read by `read_domain` and by ``nada.load_generator``) is::

    {"nada": {"kind": "domain", "format_version": 1, "base_model": str, "base_path": str or None,
              "base_fingerprint": sha256 hex of the base state dict, "generator_config": {...},
              "layers": [[name, channels], ...], ... the run's metadata ...},
     "domain": float32 [D]}

Only tensors and plain values: it loads with ``torch.load(weights_only=True)``. Loading it through
``nada.load_generator`` finds the base (a registered name, the recorded path, or the same name beside
the domain file), checks the fingerprint and returns a plain `Generator` with the vector folded into its
style layers (equal to rendering with the vector up to float32 rounding).

Blends: ``"0.5*ffhq-sketch+0.5*ffhq-pixar"`` mixes domain vectors when every term is one on the same
base, and interpolates full weights otherwise (as the official StyleGAN-NADA code does for its models).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nada import __version__
from nada.errors import NadaError
from nada.generator.checkpoints import _plain, _sniff, _torch_load, load_generator, read_metadata
from nada.generator.generate import generate_images
from nada.io import atomic_torch_save, z_from_seeds
from nada.weights.presets import get_preset, known_presets, load_preset_file, preset_file, state_fingerprint
from nada.weights.registry import known_generators

if TYPE_CHECKING:
    from nada.generator.networks import Generator

KIND = "domain"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- the trainable domain


class _LayerDelta(nn.Module):
    """The domain offsets [channels] of one modulated layer (the module name mirrors the generator's)."""

    def __init__(self, channels: int, device: torch.device) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(channels, device=device))


class DomainGenerator(nn.Module):
    """A frozen base generator rendered with one trainable domain vector, zero-initialised (step 0 = the base).

    Its parameters are the vector's per-layer slices, registered under the base's layer names
    (``conv1.delta``, ``convs.3.delta``, ``to_rgbs.1.delta`` ...), so the layer selections of `nada.adaptation.layers`
    pick slices of the vector as they pick layers of a generator; ``input`` has no slice. The base is
    shared, not owned: it is not a submodule, `to` does not move it, and attributes this class lacks
    (``mapping``, ``mean_latent``, ``n_latent`` ...) are the base's.
    """

    def __init__(self, base: "Generator", vector: torch.Tensor | None = None) -> None:
        super().__init__()
        self.__dict__["_base"] = base  # a plain attribute, so the base stays out of parameters and state dict
        device = base.input.input.device
        self.input = nn.Module()
        self.to_rgb1 = _LayerDelta(base.to_rgb1.conv.in_channel, device)
        self.conv1 = _LayerDelta(base.conv1.conv.in_channel, device)
        self.convs = nn.ModuleList(_LayerDelta(c.conv.in_channel, device) for c in base.convs)
        self.to_rgbs = nn.ModuleList(_LayerDelta(t.conv.in_channel, device) for t in base.to_rgbs)
        if vector is not None:
            self.load_vector(vector)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_base")
            if base is None:
                raise
            return getattr(base, name)

    @property
    def base(self) -> "Generator":
        """The frozen generator this domain is rendered on."""
        return self.__dict__["_base"]

    def vector(self) -> torch.Tensor:
        """The domain vector [D] (differentiable), layers in ``base.domain_channels()`` order."""
        return torch.cat([self.get_submodule(name).delta for name, _ in self.base.domain_channels()])

    @torch.no_grad()
    def load_vector(self, vector: torch.Tensor) -> None:
        """Set the domain to ``vector`` [D]; NadaError when its size does not fit the base."""
        layers = self.base.domain_channels()
        check_vector(vector, self.base.domain_size, "the domain vector")
        for (name, _), part in zip(layers, vector.reshape(-1).split([c for _, c in layers])):
            self.get_submodule(name).delta.copy_(part)

    def synthesis(
        self, ws: torch.Tensor, noise: Sequence[torch.Tensor] | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """The base's synthesis ws [N, n_latent, style_dim] -> images [N, 3, size, size] in this domain."""
        return self.base.synthesis(ws, noise=noise, noise_mode=noise_mode, domain=self.vector())

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        noise: Sequence[torch.Tensor] | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """z [N, style_dim] -> images [N, 3, size, size] in this domain (truncation towards the base's mean latent)."""
        return self.base(z, truncation_psi, noise=noise, noise_mode=noise_mode, domain=self.vector())

    def folded(self) -> "Generator":
        """A plain Generator (a copy of the base) with this domain folded into its style layers."""
        return fold_domain(self.base, self.vector().detach())


def check_vector(vector: Any, size: int, what: str) -> torch.Tensor:
    """``vector`` as a finite float tensor of ``size`` numbers; NadaError naming ``what`` otherwise."""
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        raise NadaError(f"{what} is not a float tensor: the domain file is corrupt; train or copy it again")
    if vector.numel() != size:
        raise NadaError(
            f"{what} has {vector.numel()} numbers but this generator's domain vectors have {size}: "
            "it was made for another architecture; use the base it was trained on"
        )
    if not bool(torch.isfinite(vector).all()):
        raise NadaError(f"{what} contains NaN or infinite values: the domain file is corrupt (or training diverged)")
    return vector


@torch.no_grad()
def fold_domain(G: "Generator", vector: torch.Tensor) -> "Generator":
    """A copy of G whose style layers compute s * (1 + vector) [D] by themselves (modulation weight and bias scaled)."""
    check_vector(vector, G.domain_size, "the domain vector")
    out = deepcopy(G)
    layers = G.domain_channels()
    for (name, _), part in zip(layers, vector.reshape(-1).split([c for _, c in layers])):
        mod = out.get_submodule(name).conv.modulation
        factor = (1 + part).to(mod.weight)
        mod.weight.mul_(factor[:, None])
        mod.bias.mul_(factor)
    return out


# ---------------------------------------------------------------- domain files


def base_fingerprint(G: "Generator") -> str:
    """SHA-256 of the base's state dict (names, shapes, float32 bytes): a domain file names its exact base by it."""

    return state_fingerprint(G)


def save_domain(
    path: str | os.PathLike,
    vector: torch.Tensor,
    base: "Generator",
    base_model: str,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a domain file (vector [D] float32, the base's name, path and fingerprint); never overwrites unasked."""

    path = Path(path)
    if path.exists() and not overwrite:
        raise NadaError(f"{path} already exists: choose another path or pass overwrite=True")
    vector = check_vector(vector.detach().float().cpu().reshape(-1).clone(), base.domain_size, "the domain vector")
    base_path = Path(base_model).expanduser()
    meta = _plain(dict(metadata or {}), "metadata")
    meta.update(
        kind=KIND,
        format_version=FORMAT_VERSION,
        nada_version=__version__,
        base_model=str(base_model),
        base_path=str(base_path.resolve()) if base_path.is_file() else None,
        base_fingerprint=base_fingerprint(base),
        generator_config=base.config.to_dict(),
        layers=[[n, c] for n, c in base.domain_channels()],
    )
    return atomic_torch_save({"nada": meta, "domain": vector}, path)


@dataclass(frozen=True)
class DomainFile:
    """A domain file as read: its path, vector [D] (float32, CPU) and metadata."""

    path: Path
    vector: torch.Tensor
    meta: dict[str, Any]

    @property
    def base_model(self) -> str:
        return str(self.meta.get("base_model"))


def is_domain_payload(obj: Any) -> bool:
    """True for a loaded torch object that is a domain file (a 'nada' record of kind 'domain')."""
    return isinstance(obj, dict) and isinstance(obj.get("nada"), dict) and obj["nada"].get("kind") == KIND


def read_domain(path: str | os.PathLike) -> DomainFile | None:
    """The domain file at ``path``, or None when ``path`` is another kind of file (a checkpoint, a preset)."""

    path = Path(path)
    if not path.is_file() or _sniff(path) != "torch" or path.stat().st_size > 64 * 1024 * 1024:
        return None  # domain files are kilobytes; large files are generators
    obj = _torch_load(path)
    return domain_from_payload(obj, path) if is_domain_payload(obj) else None


def domain_from_payload(obj: dict[str, Any], path: Path) -> DomainFile:
    """The checked DomainFile of a loaded domain payload; NadaError naming the first fault."""
    meta = dict(obj["nada"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise NadaError(
            f"{path} is a domain file of format version {meta.get('format_version')}: "
            f"this nada reads version {FORMAT_VERSION}; update nada"
        )
    if not isinstance(meta.get("base_model"), str) or not isinstance(meta.get("base_fingerprint"), str):
        raise NadaError(f"{path}: the domain file names no base generator or fingerprint: the file is corrupt")
    layers = meta.get("layers")
    size = sum(int(c) for _, c in layers) if isinstance(layers, list) else -1
    vector = check_vector(obj.get("domain"), size, f"{path}: the domain vector")
    return DomainFile(path, vector.float().reshape(-1), meta)


def _base_candidates(domain: DomainFile) -> list[str]:
    """Where the base may be: the recorded name or path, its absolute path, the same name beside the domain file."""
    name = domain.base_model
    out = [name]
    if domain.meta.get("base_path"):
        out.append(str(domain.meta["base_path"]))
    out.append(str(domain.path.parent / Path(name).name))
    return list(dict.fromkeys(out))


def load_base(domain: DomainFile) -> "Generator":
    """The base generator of a domain file, checked against its fingerprint; NadaError when missing or different."""

    for source in _base_candidates(domain):
        is_name = source in known_generators() or source.startswith("random:")
        if not (is_name or Path(source).expanduser().is_file()):
            continue
        G = load_generator(source)
        check_base(domain, G, source)
        return G
    raise NadaError(
        f"{domain.path} is a domain vector for the base generator {domain.base_model!r}, which is not on this "
        "machine: put that file there (or beside the domain file), or apply it with nada.generator.domains.apply_domain"
    )


def check_base(domain: DomainFile, G: "Generator", source: str) -> None:
    """NadaError when G is not the exact base the domain file was trained on (by fingerprint)."""
    if base_fingerprint(G) != domain.meta["base_fingerprint"]:
        raise NadaError(
            f"{domain.path} was trained on other base weights than {source} "
            f"(fingerprint {domain.meta['base_fingerprint'][:12]}, this base {base_fingerprint(G)[:12]}): "
            f"load it with the base it was trained on ({domain.base_model})"
        )


def apply_domain(base: "Generator", domain: DomainFile | str | os.PathLike) -> "Generator":
    """A plain Generator: ``base`` (checked by fingerprint) with the domain folded into its style layers."""
    if not isinstance(domain, DomainFile):
        found = read_domain(domain)
        if found is None:
            raise NadaError(f"{domain} is not a domain file: pass a file written by `nada adapt --params domain`")
        domain = found
    check_base(domain, base, "the given base")
    return fold_domain(base, domain.vector.to(base.input.input.device))


def generator_from_domain_payload(obj: dict[str, Any], path: Path) -> "Generator":
    """What ``nada.load_generator`` returns for a domain file: its base with the vector folded in."""
    domain = domain_from_payload(obj, path)
    return fold_domain(load_base(domain), domain.vector).eval()


# ---------------------------------------------------------------- mixing and blending


_TERM = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*\*)?\s*([^*+]+?)\s*$")


def parse_blend(spec: str) -> list[tuple[float, str]]:
    """``"0.5*a+0.5*b"`` -> [(0.5, "a"), (0.5, "b")]; a bare name has weight 1. NadaError for a malformed term."""
    terms = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if not m or not m[2]:
            raise NadaError(f"bad blend {spec!r}: write terms like 0.5*ffhq-sketch+0.5*ffhq-pixar")
        terms.append((float(m[1]) if m[1] else 1.0, m[2]))
    return terms


def parse_domains(spec: str) -> list[list[tuple[float, str]]]:
    """``"a,0.5*b+0.5*c"`` -> one blend per comma-separated entry (a row each in `nada generate`)."""
    entries = [e for e in spec.split(",") if e.strip()]
    if not entries:
        raise NadaError("no preset given: name one or more presets, e.g. --preset ffhq-sketch,ffhq-pixar")
    return [parse_blend(e) for e in entries]


def blend_vectors(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i weights[i] * vectors[i] [D] (domain vectors of one base)."""
    return sum(w * v for w, v in zip(weights, vectors))  # type: ignore[return-value]


@torch.no_grad()
def blend_generators(generators: Sequence["Generator"], weights: Sequence[float]) -> "Generator":
    """A generator whose float weights are sum_i weights[i] * weights of generators[i] (same architecture)."""
    first = generators[0]
    if any(G.config != first.config for G in generators[1:]):
        raise NadaError(
            "the blended generators have different architectures: blend only generators adapted from one base"
        )
    states = [G.state_dict() for G in generators]
    out = deepcopy(first)
    blended = {
        k: (sum(w * s[k].float() for w, s in zip(weights, states)).to(v.dtype) if v.is_floating_point() else v)
        for k, v in states[0].items()
    }
    out.load_state_dict(blended)
    return out


@torch.no_grad()
def render_domains(
    G: "Generator",
    vectors: torch.Tensor,
    z: torch.Tensor,
    truncation_psi: float = 1.0,
    batch_size: int = 16,
) -> torch.Tensor:
    """Images [K, N, 3, H, W] of every latent z [N, style_dim] in each of K domains [K, D], in mixed batches."""
    k, n = vectors.shape[0], z.shape[0]
    zz = z.repeat(k, 1)  # sample i of domain j sits at j * n + i
    dd = vectors.repeat_interleave(n, dim=0)
    out = [
        G(zc, truncation_psi, noise_mode="const", domain=dc)
        for zc, dc in zip(zz.split(batch_size), dd.split(batch_size))
    ]
    return torch.cat(out).view(k, n, *out[0].shape[1:])


# ---------------------------------------------------------------- rows of domains (nada generate --preset a,b,c)


@dataclass(frozen=True)
class Term:
    """One named domain as loaded: a domain file, or a full adapted generator."""

    name: str
    domain: DomainFile | None
    generator: "Generator | None"


def load_term(name: str, device: str | torch.device = "cpu") -> Term:
    """A preset name (or a file path) as a Term: domain files stay vectors, anything else loads as a generator."""

    if name in known_presets():
        path = preset_file(name)
    elif Path(name).expanduser().is_file():
        path = Path(name).expanduser()
    else:
        raise NadaError(
            f"unknown preset {name!r}: use one of {', '.join(known_presets())} or the path of an adapted generator"
        )
    domain = read_domain(path)
    return Term(name, domain, None if domain is not None else load_preset_file(path, device))


class DomainRows:
    """Rows of `nada generate --preset a,0.5*b+0.5*c`: each entry a domain or a blend, rendered for the same seeds.

    When every term is a domain vector of one base, the rows are K vectors on one generator and render in
    mixed batches; otherwise every row becomes a generator of its own (domains folded onto their base,
    blends interpolating the weights).
    """

    def __init__(self, spec: str, device: str | torch.device = "cpu") -> None:
        self.entries = parse_domains(spec)
        self.device = torch.device(device)
        names = list(dict.fromkeys(name for entry in self.entries for _, name in entry))
        self.terms = {name: load_term(name, self.device) for name in names}
        self.labels = [spec_label(entry) for entry in self.entries]
        domains = [t.domain for t in self.terms.values()]
        prints = {d.meta["base_fingerprint"] for d in domains if d is not None}
        self.shared = all(d is not None for d in domains) and len(prints) == 1
        self._bases: dict[str, "Generator"] = {}

    def base_of(self, domain: DomainFile) -> "Generator":
        """The base generator of a domain file (loaded once per fingerprint)."""
        key = domain.meta["base_fingerprint"]
        if key not in self._bases:
            self._bases[key] = load_base(domain).to(self.device)
        return self._bases[key]

    def vectors(self) -> torch.Tensor:
        """[K, D]: one (blended) domain vector per row; only when every term is a domain of one base."""
        rows = [blend_vectors([self.terms[n].domain.vector for _, n in e], [w for w, _ in e]) for e in self.entries]
        return torch.stack(rows).to(self.device)

    def generator(self, entry: list[tuple[float, str]]) -> "Generator":
        """The generator of one row: a term's own, a domain folded onto its base, or a weight blend."""
        gens = []
        for _, name in entry:
            term = self.terms[name]
            gens.append(
                term.generator if term.domain is None else fold_domain(self.base_of(term.domain), term.domain.vector)
            )
        if len(entry) == 1 and entry[0][0] == 1.0:
            return gens[0]
        return blend_generators(gens, [w for w, _ in entry])

    @torch.no_grad()
    def render(
        self, seeds: Sequence[int], truncation_psi: float = 1.0, batch_size: int = 16, base_row: bool = False
    ) -> torch.Tensor:
        """Images [K (+1 with base_row, first), N, 3, H, W] in [-1, 1] for the seeds (z as in `nada generate`)."""

        if self.shared:
            G = self.base_of(next(iter(self.terms.values())).domain)
            vectors = self.vectors()
            if base_row:
                vectors = torch.cat([torch.zeros_like(vectors[:1]), vectors])
            z = z_from_seeds(list(seeds), G.style_dim).to(self.device)
            return render_domains(G, vectors, z, truncation_psi, batch_size).clamp(-1, 1).cpu()

        gens = [self.generator(e) for e in self.entries]
        if base_row:
            gens.insert(0, self.base_generator())
        return torch.stack([generate_images(G, list(seeds), truncation_psi, batch_size, self.device) for G in gens])

    def base_generator(self) -> "Generator":
        """The base of the first row's first term (a domain file's own base, or a preset's registered base)."""

        term = self.terms[self.entries[0][0][1]]
        if term.domain is not None:
            return self.base_of(term.domain)
        if "plain" not in self._bases:
            self._bases["plain"] = load_generator(self._recorded_base(term.name), device=self.device)
        return self._bases["plain"]

    @staticmethod
    def _recorded_base(name: str) -> str:
        """The base generator a preset names or a nada checkpoint records; NadaError when there is none."""

        if name in known_presets():
            return get_preset(name).base
        try:
            base = read_metadata(name).get("base_model")
        except NadaError:
            base = None
        if not isinstance(base, str):
            raise NadaError(
                f"{name} records no base generator, which the base row needs: "
                "use a preset or a checkpoint written by nada adapt"
            )
        return base


def spec_label(entry: list[tuple[float, str]]) -> str:
    """The text of one row: ``ffhq-sketch`` or ``0.5*ffhq-sketch+0.5*ffhq-pixar``."""
    return "+".join(name if w == 1.0 and len(entry) == 1 else f"{w:g}*{name}" for w, name in entry)


def is_multi_spec(spec: str) -> bool:
    """True when a --preset value names several domains or a blend (a comma, '*' or '+')."""
    return any(c in spec for c in ",*+")
