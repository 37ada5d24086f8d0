"""Videos of latent walks, domain walks and both, as side-by-side panels (the `nada video` command).

- latent walk: the latents of the given seeds (the same z as `nada generate`) joined by spherical
  interpolation with eased steps; every panel (the base, then each domain) shows the same latent.
- domain walk: one latent (the first seed) while the domain moves base -> a -> b ...; panels: the base
  and the walking domain. Domain vectors of one base are interpolated as vectors (each frame one sample
  of a mixed batch); other generators by their weights (one interpolated generator per frame).
- both: the latent walk and the domain walk at once.

The first frame shows exactly the first seed's images; frame i of n reaches the last keyframe at i = n - 1.
Frames stream to the writer: MP4 (H.264) through PyAV, whose wheel ships its own FFmpeg (``pip install
'nada[video]'``), or GIF through Pillow when PyAV is missing or a .gif is asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from nada.errors import NadaError
from nada.generator.domains import blend_generators
from nada.io import atomic_write, check_writable_file, to_uint8_image, z_from_seeds
from nada.limits import MAX_GRID_PIXELS

if TYPE_CHECKING:
    from nada.generator.domains import DomainRows
    from nada.generator.networks import Generator

WALKS = ("latent", "domain", "both")
VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_FRAMES = 100_000
PAD = 2  # white pixels between and around panels, as in the image grids


# ---------------------------------------------------------------- paths through latents and domains


def eased_positions(frames: int, keys: int) -> list[tuple[int, float]]:
    """For each frame, (segment index, position in it in [0, 1]) along keys-1 segments, eased at every keyframe."""
    if keys < 2 or frames < 2:
        return [(0, 0.0)] * frames
    out = []
    for i in range(frames):
        x = i * (keys - 1) / (frames - 1)
        seg = min(int(x), keys - 2)
        t = x - seg
        out.append((seg, t * t * (3 - 2 * t)))  # smoothstep: zero speed at each keyframe
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latents a and b [D] (Gaussian z keep their typical norm along the way)."""
    na, nb = a.norm(), b.norm()
    cos = torch.dot(a / na, b / nb).clamp(-1, 1)
    omega = torch.arccos(cos)
    if float(omega) < 1e-6:
        return a + t * (b - a)
    s = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / s) * a + (torch.sin(t * omega) / s) * b


def latent_walk(seeds: Sequence[int], frames: int, style_dim: int) -> torch.Tensor:
    """z [frames, style_dim] through the latents of `seeds` (drawn as `nada generate` draws them)."""

    keys = z_from_seeds(list(seeds), style_dim)
    return torch.stack(
        [slerp(keys[s], keys[min(s + 1, len(keys) - 1)], t) for s, t in eased_positions(frames, len(keys))]
    )


def vector_walk(vectors: torch.Tensor, frames: int) -> torch.Tensor:
    """Domain vectors [frames, D] through the keyframe vectors [K, D] (linear, eased at each keyframe)."""
    steps = eased_positions(frames, vectors.shape[0])
    return torch.stack([torch.lerp(vectors[s], vectors[min(s + 1, len(vectors) - 1)], t) for s, t in steps])


# ---------------------------------------------------------------- panels


@dataclass(frozen=True)
class Panel:
    """One column of the video: renders images [n, 3, H, W] in [-1, 1] for frame indices and latents z [n, D]."""

    label: str
    render: Callable[[list[int], torch.Tensor], torch.Tensor]


def static_panel(label: str, G: "Generator", vector: torch.Tensor | None, truncation: float) -> Panel:
    """A panel that shows one generator (with one domain vector or none) for every frame."""
    return Panel(label, lambda idx, z: G(z, truncation, noise_mode="const", domain=vector))


def vector_walk_panel(label: str, G: "Generator", keys: torch.Tensor, frames: int, truncation: float) -> Panel:
    """A panel walking through keyframe domain vectors [K, D] on one generator (per-sample domains)."""
    path = vector_walk(keys, frames).to(keys.device)
    return Panel(label, lambda idx, z: G(z, truncation, noise_mode="const", domain=path[idx]))


def weight_walk_panel(label: str, keys: Sequence["Generator"], frames: int, truncation: float) -> Panel:
    """A panel walking through keyframe generators by interpolating their weights (one generator per frame)."""

    steps = eased_positions(frames, len(keys))

    def render(idx: list[int], z: torch.Tensor) -> torch.Tensor:
        images = []
        for i, zi in zip(idx, z.split(1)):
            s, t = steps[i]
            G = blend_generators([keys[s], keys[min(s + 1, len(keys) - 1)]], [1 - t, t])
            images.append(G(zi, truncation, noise_mode="const"))
        return torch.cat(images)

    return Panel(label, render)


def build_panels(rows: "DomainRows", walk: str, frames: int, truncation: float) -> list[Panel]:
    """The panels of a video: the base, then each row's domain (latent walk) or the walk base -> rows (domain, both)."""
    base = rows.base_generator()
    panels = [static_panel("base", base, None, truncation)]
    if walk == "latent":
        if rows.shared:
            return panels + [static_panel(label, base, v, truncation) for label, v in zip(rows.labels, rows.vectors())]
        return panels + [
            static_panel(label, rows.generator(e), None, truncation) for label, e in zip(rows.labels, rows.entries)
        ]
    label = " -> ".join(["base", *rows.labels])
    if rows.shared:
        keys = torch.cat([torch.zeros_like(rows.vectors()[:1]), rows.vectors()])
        return panels + [vector_walk_panel(label, base, keys, frames, truncation)]
    return panels + [weight_walk_panel(label, [base, *(rows.generator(e) for e in rows.entries)], frames, truncation)]


def frame_latents(walk: str, seeds: Sequence[int], frames: int, style_dim: int) -> torch.Tensor:
    """z [frames, style_dim]: the latent walk through the seeds, or the first seed held (domain walk)."""
    if walk == "domain":
        return latent_walk(seeds[:1], 1, style_dim).expand(frames, -1)
    return latent_walk(seeds, frames, style_dim)


@torch.no_grad()
def render_frames(
    panels: Sequence[Panel],
    z: torch.Tensor,
    size: int,
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """uint8 frames [H, W, 3]: the panels side by side, each resized to size x size, frame by frame."""
    from tqdm.auto import tqdm

    device = z.device
    with tqdm(total=z.shape[0], disable=not progress, desc="video", unit="frame", dynamic_ncols=True) as bar:
        for start in range(0, z.shape[0], batch_size):
            idx = list(range(start, min(start + batch_size, z.shape[0])))
            images = [p.render(idx, z[idx].to(device)).float().clamp(-1, 1) for p in panels]
            if images[0].shape[-1] != size:
                images = [
                    F.interpolate(im, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                    for im in images
                ]
            tiles = [to_uint8_image(im.cpu()) for im in images]  # [n, size, size, 3] each
            for i in range(len(idx)):
                yield side_by_side([t[i] for t in tiles])
                bar.update(1)


def side_by_side(tiles: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 [S, S, 3] tiles -> one uint8 frame with white padding around and between them (even height and width)."""
    s = tiles[0].shape[0]
    h, w = s + 2 * PAD, len(tiles) * (s + PAD) + PAD
    frame = torch.full((h + h % 2, w + w % 2, 3), 255, dtype=torch.uint8)  # H.264 in yuv420p needs even sides
    for j, tile in enumerate(tiles):
        x = PAD + j * (s + PAD)
        frame[PAD : PAD + s, x : x + s] = tile
    return frame


# ---------------------------------------------------------------- writers


def have_pyav() -> bool:
    """Whether PyAV (MP4 output) is installed."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def default_output() -> Path:
    """video.mp4 when PyAV is installed, else video.gif."""
    return Path("video.mp4" if have_pyav() else "video.gif")


def check_output(path: str | os.PathLike, force: bool) -> Path:
    """The video file to write: a known suffix, MP4 only with PyAV, writable, not existing unless `force`."""

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise NadaError(f"cannot write video {path}: use a file name ending in {' or '.join(VIDEO_SUFFIXES)}")
    if path.suffix.lower() == ".mp4" and not have_pyav():
        raise NadaError(
            f"writing {path} needs PyAV, which is not installed: pip install 'nada[video]', or write a .gif"
        )
    if path.exists() and not force:
        raise NadaError(f"{path} already exists: choose another --out or pass --force to overwrite")
    check_writable_file(path, "--out")
    return path


def check_frames(frames: int, fps: float, size: int, panels: int, gif: bool) -> None:
    """NadaError for a frame count, rate or size that cannot work (a GIF holds every frame in memory)."""
    if not 1 <= frames <= MAX_FRAMES:
        raise NadaError(f"--frames {frames} is outside 1 .. {MAX_FRAMES}: use e.g. 60")
    if not (math.isfinite(fps) and 0 < fps <= 240):
        raise NadaError(f"--fps {fps} is outside (0, 240]: use e.g. 24")
    if not 16 <= size <= 4096:
        raise NadaError(f"--size {size} is outside 16 .. 4096 pixels: use e.g. 256")
    if gif and frames * size * size * panels > MAX_GRID_PIXELS:
        raise NadaError(
            f"a GIF of {frames} frames of {panels} panels of {size}px exceeds the {MAX_GRID_PIXELS:,} pixels "
            "nada holds in memory: write an .mp4, or use fewer --frames or a smaller --size"
        )


def write_video(frames: Iterable[torch.Tensor], path: str | os.PathLike, fps: float) -> tuple[Path, int]:
    """Write uint8 frames [H, W, 3] atomically as MP4 (PyAV, H.264) or GIF (Pillow), by suffix; (path, frame count)."""

    path = Path(path)
    count = [0]

    def counted() -> Iterator[torch.Tensor]:
        for frame in frames:
            count[0] += 1
            yield frame

    write = _write_mp4 if path.suffix.lower() == ".mp4" else _write_gif
    atomic_write(path, lambda tmp: write(counted(), tmp, fps))
    return path, count[0]


def _write_mp4(frames: Iterator[torch.Tensor], path: Path, fps: float) -> None:
    """H.264 (yuv420p, constant quality) through PyAV; `path` may have any suffix."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[0], frame.shape[1]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.numpy(), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise NadaError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(frames: Iterator[torch.Tensor], path: Path, fps: float) -> None:
    """An endlessly looping GIF through Pillow (every frame kept, none merged as duplicates)."""
    from PIL import Image

    images = [Image.fromarray(f.numpy()) for f in frames]
    if not images:
        raise NadaError(f"no frames to write to {path}")
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
        optimize=False,
        disposal=1,
    )


def count_frames(path: str | os.PathLike) -> int:
    """Frames in an MP4 (decoded with PyAV) or GIF (Pillow) file."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            return im.n_frames
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
