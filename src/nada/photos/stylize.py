"""Stylize real photos: align, invert into the base generator's W+, render the code with adapted generators.

An adapted generator (a preset or a checkpoint written by ``nada adapt``) keeps the latent space of
the base generator it was trained from, so one W+ code found by inverting a photo into the *base*
generator renders that same person in every style. `stylize` runs the whole job and writes, for each
input image ``DIR/<image>/``: ``aligned.png`` (the aligned input), ``reconstruction.png`` (the base
generator's redraw), ``<style>.png`` per style and ``wplus.pt`` (the code, reusable); plus
``DIR/grid.png`` with one row per image (aligned, reconstruction, styles).

Everything that can fail is done before anything is written: reading the images and the generators,
loading the losses, detecting faces, the inversion itself. The files are then written into a hidden
staging folder inside DIR and moved into place one rename each, so an error leaves no partial output;
existing files are never replaced without ``force``. DIR is held for the whole command (the lock file
``.nada-stylize.lock``, as run folders are), so a second stylize into it is refused in one line before any work,
and staging folders found there were left by a killed stylize and are removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nada.errors import NadaError
from nada.generator import checkpoints as generator_files  # looked up at call time: tests stand in for the loader
from nada.generator.checkpoints import read_metadata
from nada.io import check_writable_folder, claimed_folder, image_grid, write_error
from nada.photos import images as images_io  # looked up at call time: tests stand in for the image reader
from nada.photos.align import ALIGN_MODES, align_face, alignment_for_base, load_detector
from nada.photos.invert import InvertConfig, build_losses, invert, loss_kind_for_base, render_wplus
from nada.weights.presets import get_preset, load_preset

STAGING_PREFIX = ".nada-stylize-"
FOLDER_LOCK = ".nada-stylize.lock"


@dataclass
class Style:
    """One adapted generator to render with: display name, the generator, and the base it declares (None: unknown)."""

    name: str
    generator: torch.nn.Module
    base: str | None


@dataclass
class ImageResult:
    """Everything produced for one input image; tensors are [1, 3, S, S] in [-1, 1]
    (wplus: [1, n_latent, style_dim])."""

    source: Path
    folder: str
    aligned: torch.Tensor
    reconstruction: torch.Tensor
    wplus: torch.Tensor
    styled: dict[str, torch.Tensor]
    mse: float
    perceptual: float | None


@dataclass
class StylizeReport:
    """What `stylize` did: the files written, per-image results, and notes (dropped losses, alignment)."""

    written: list[Path]
    results: list[ImageResult]
    perceptual_name: str
    notes: list[str] = field(default_factory=list)


def _unique(names: Sequence[str]) -> list[str]:
    """Make names unique by appending -2, -3 ... to repeats (two photos both called photo.jpg)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _checkpoint_style_name(path: Path) -> str:
    """A style's display name from its file: the stem, or the run folder's name for adapt's 'generator.pt'."""
    if path.stem in ("generator", "final") and path.parent.name:
        return path.parent.name
    return path.stem


def _safe_name(name: str) -> str:
    """A file-name-safe version of a style or image name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".")
    return keep or "style"


def load_styles(
    presets: Sequence[str], checkpoints: Sequence[str], device: torch.device, progress: bool = True
) -> list[Style]:
    """Load every preset (through nada.weights.presets) and checkpoint; each Style records the base
    it was adapted from."""
    styles: list[Style] = []
    for name in presets:
        preset = get_preset(name)
        styles.append(Style(name, load_preset(name, device=device, progress=progress), preset.base))
    for ckpt in checkpoints:
        G = generator_files.load_generator(ckpt, device=device)
        try:
            base = read_metadata(ckpt).get("base_model")
        except NadaError:  # a rosinality/NVlabs file: no metadata, the base must come from --base
            base = None
        styles.append(Style(_checkpoint_style_name(Path(ckpt)), G, str(base) if base else None))
    names = _unique([_safe_name(s.name) for s in styles])
    for s, n in zip(styles, names):
        s.name = n
    return styles


def resolve_base(styles: Sequence[Style], base: str | None) -> str:
    """The base generator to invert into: `base` if given, else the one every style declares."""
    if base:
        return base
    if not styles:
        raise NadaError(
            "nothing to stylize with: give at least one --preset or --checkpoint (or --base to only invert)"
        )
    unknown = [s.name for s in styles if s.base is None]
    if unknown:
        raise NadaError(
            f"cannot tell which base generator {unknown[0]!r} was adapted from (its file does not record it): "
            "pass --base with the base checkpoint or name"
        )
    bases = sorted({str(s.base) for s in styles})
    if len(bases) > 1:
        listing = ", ".join(f"{s.name}: {s.base}" for s in styles)
        raise NadaError(
            f"the styles come from different base generators ({listing}): "
            "stylize with styles of one base at a time, or pass --base"
        )
    return bases[0]


def _check_compatible(base_G: torch.nn.Module, styles: Sequence[Style], base: str) -> None:
    """Every style must share the base's latent layout and resolution, or a W+ code means nothing to it."""
    want = (base_G.size, base_G.n_latent, base_G.style_dim)
    for s in styles:
        got = (s.generator.size, s.generator.n_latent, s.generator.style_dim)
        if got != want:
            raise NadaError(
                f"style {s.name!r} is a {got[0]}px generator with W+ {got[1]}x{got[2]}, but the base {base!r} is "
                f"{want[0]}px with W+ {want[1]}x{want[2]}: use styles adapted from that base (or the right --base)"
            )


def _base_metadata(base: str) -> dict[str, Any]:
    """The base checkpoint's nada metadata, or {} when it has none."""
    try:
        return read_metadata(base)
    except NadaError:
        return {}


def plan_outputs(out_dir: Path, folders: Sequence[str], styles: Sequence[str]) -> list[Path]:
    """Every file `stylize` will write, relative to out_dir, in writing order."""
    files = [Path("grid.png")]
    for f in folders:
        files += [Path(f) / "aligned.png", Path(f) / "reconstruction.png", Path(f) / "wplus.pt"]
        files += [Path(f) / f"{s}.png" for s in styles]
    return files


def stylize(
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    presets: Sequence[str] = (),
    checkpoints: Sequence[str] = (),
    base: str | None = None,
    align: str = "auto",
    config: InvertConfig = InvertConfig(),
    device: str | torch.device = "cpu",
    allow_missing_losses: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> StylizeReport:
    """Align, invert and restyle each image; write the results under out_dir (see the module docstring)."""
    if not images:
        raise NadaError("no image given: pass at least one --image PATH")
    if align not in ALIGN_MODES:
        raise NadaError(f"unknown alignment {align!r}: use one of {', '.join(ALIGN_MODES)}")
    device = torch.device(device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NadaError(f"{out_dir} exists and is not a folder: choose another --out")
    check_writable_folder(out_dir, "--out")
    with claimed_folder(out_dir, FOLDER_LOCK, "--out"):
        remove_stale_staging(out_dir)
        return _stylize(
            images,
            out_dir,
            presets,
            checkpoints,
            base,
            align,
            config,
            device,
            allow_missing_losses,
            force,
            progress,
            log,
        )


def _stylize(
    images: Sequence[str | os.PathLike],
    out_dir: Path,
    presets: Sequence[str],
    checkpoints: Sequence[str],
    base: str | None,
    align: str,
    config: InvertConfig,
    device: torch.device,
    allow_missing_losses: bool,
    force: bool,
    progress: bool,
    log: Callable[[str], None],
) -> StylizeReport:
    """`stylize` in a folder this process holds."""
    paths = [Path(p).expanduser() for p in images]
    folders = _unique([_safe_name(p.stem) for p in paths])

    # 1. Inputs: every image, every generator, the losses. Cheap checks before expensive loads.
    pixels = [images_io.load_image(p, log=log) for p in paths]
    styles = load_styles(presets, checkpoints, device, progress)
    planned = plan_outputs(out_dir, folders, [s.name for s in styles])
    existing = [out_dir / p for p in planned if (out_dir / p).exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more files" if len(existing) > 1 else ""
        verb = "exist" if len(existing) > 1 else "exists"
        raise NadaError(f"{existing[0]}{more} already {verb}: choose another --out or pass --force to overwrite")
    base = resolve_base(styles, base)
    base_G = generator_files.load_generator(base, device=device)
    _check_compatible(base_G, styles, base)
    meta = _base_metadata(base)
    mode = alignment_for_base(base, meta) if align == "auto" else align
    kind = loss_kind_for_base(base, meta)
    losses = build_losses(
        config, kind, device, allow_missing=allow_missing_losses, progress=progress, base=base, metadata=meta
    )
    notes = [f"dropped loss {d}" for d in losses.dropped]
    for n in notes:
        log(n)

    # 2. Alignment (may find no face), then inversion into the base generator.
    detector = load_detector() if mode == "ffhq" else None
    aligned = [
        align_face(x, base_G.size, mode, detector=detector, log=log, name=str(p)).image for x, p in zip(pixels, paths)
    ]
    log(f"inverting {len(aligned)} image(s) into {base} ({base_G.size}px, alignment {mode}, {config.steps} steps)")
    target = torch.cat(aligned)
    results: list[ImageResult] = []
    noise = base_G.noise_buffers()
    for start in range(0, len(aligned), 4):  # a few images per optimisation keeps memory bounded
        chunk = target[start : start + 4]
        inv = invert(base_G, chunk, config, losses, progress=progress)
        styled = {s.name: render_wplus(s.generator, inv.wplus, noise=noise) for s in styles}
        for i in range(chunk.shape[0]):
            k = start + i
            results.append(
                ImageResult(
                    source=paths[k],
                    folder=folders[k],
                    aligned=chunk[i : i + 1].cpu(),
                    reconstruction=inv.reconstruction[i : i + 1].cpu(),
                    wplus=inv.wplus[i : i + 1].cpu(),
                    styled={n: t[i : i + 1] for n, t in styled.items()},
                    mse=inv.mse[i],
                    perceptual=None if inv.perceptual is None else inv.perceptual[i],
                )
            )

    # 3. Write: stage everything, then move into place.
    written = _write_all(out_dir, results, [s.name for s in styles])
    return StylizeReport(written, results, losses.perceptual_name, notes)


def _write_all(out_dir: Path, results: Sequence[ImageResult], style_names: Sequence[str]) -> list[Path]:
    """Write every output into a staging folder inside out_dir, then rename each into place; on error nothing stays."""
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        rel: list[Path] = []

        def save(img: torch.Tensor, name: Path) -> None:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            images_io.tensor_to_pil(img).save(stage / name, format="PNG")
            rel.append(name)

        for r in results:
            save(r.aligned, Path(r.folder) / "aligned.png")
            save(r.reconstruction, Path(r.folder) / "reconstruction.png")
            torch.save({"wplus": r.wplus, "source": str(r.source)}, stage / r.folder / "wplus.pt")
            rel.append(Path(r.folder) / "wplus.pt")
            for n in style_names:
                save(r.styled[n], Path(r.folder) / f"{n}.png")
        rows = [torch.cat([r.aligned, r.reconstruction, *(r.styled[n] for n in style_names)]) for r in results]
        image_grid(rows).save(stage / "grid.png", format="PNG")
        rel.insert(0, Path("grid.png"))
        for name in rel:  # os.replace is atomic per file, and staging is on the same file system
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, out_dir / name)
        return [out_dir / name for name in rel]
    except (OSError, RuntimeError) as e:  # a full disk or lost rights while writing: one line, nothing left
        error = write_error(getattr(e, "filename", None) or out_dir, e)
        if error is None:
            raise
        raise error from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging folders in out_dir, which the caller holds: a killed stylize left them; those removed."""
    stale = sorted(out_dir.glob(f"{STAGING_PREFIX}*"))
    for stage in stale:
        if stage.is_dir():
            shutil.rmtree(stage, ignore_errors=True)
        else:
            stage.unlink(missing_ok=True)  # an owner lock file of an earlier version's staging
    return stale
