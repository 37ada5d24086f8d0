"""Small I/O helpers shared by every module: atomic writes, seeds, devices, images."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nada.errors import NadaError, one_line
from nada.limits import MAX_SEEDS

# Every temporary file nada writes ends so: a kill during a save leaves only names that are recognisably nada's.
TMP_SUFFIX = ".nada-tmp"
# errno values that mean "this place takes no new data", with the fix each one needs.
_WRITE_FIXES = {
    errno.ENOSPC: ("the disk is full", "free some space or choose another output folder"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or choose another output folder"),
    errno.EACCES: ("permission denied", "choose another output or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose another output or fix its permissions"),
    errno.EROFS: ("the file system is read-only", "choose an output on a writable disk"),
}


def write_error(path: str | os.PathLike, e: BaseException) -> NadaError | None:
    """The one-line NadaError for an OS or torch write failure at ``path``; None when ``e`` is no write failure."""
    if isinstance(e, NadaError):
        return e
    if isinstance(e, OSError):
        what, fix = _WRITE_FIXES.get(e.errno or 0, (e.strerror or one_line(e), "check the output path"))
        return NadaError(f"cannot write {path}: {what}: {fix}")
    torch_write = any(m in str(e) for m in ("inline_container", "PytorchStreamWriter")) and "Reader" not in str(e)
    if isinstance(e, RuntimeError) and torch_write:
        fix = _WRITE_FIXES[errno.ENOSPC][1]
        return NadaError(f"cannot write {path}: torch could not finish the file (usually a full disk): {fix}")
    return None


def temp_file_for(path: Path) -> Path:
    """Create an empty, uniquely named temporary file beside ``path`` (mode 0666 less the umask, as ``open`` gives)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename, so readers never see half a file.

    An OS or torch write error (full disk, no permission) becomes a NadaError naming ``path``, and the
    temporary file is removed: nothing half-written stays behind.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file_for(path)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        error = write_error(path, e)
        if error is None:
            raise
        raise error from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return path


def check_writable_folder(folder: str | os.PathLike, flag: str) -> None:
    """NadaError unless files can be created in ``folder`` (or, if it is not there yet, in its nearest parent)."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NadaError(f"cannot write into {folder}: {existing} is a file, not a folder: choose another {flag}")
    try:
        temp_file_for(existing / ".nada-write-test").unlink()
    except OSError as e:
        what, _ = _WRITE_FIXES.get(e.errno or 0, (e.strerror or type(e).__name__, ""))
        raise NadaError(f"cannot write into {folder}: {what}: choose another {flag} or fix its permissions") from None


def lock_folder(root: Path, lock_name: str, flag: str) -> int:
    """Create ``root``, take the exclusive lock of ``root/lock_name`` without waiting, write the holder; its descriptor.

    Another process holding the lock gets one NadaError line naming it (pid, host, start time); the kernel drops
    the lock when the holder exits, also after ``kill -9``.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / lock_name, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise NadaError(
            f"cannot write to the output folder {root} ({e.strerror or e}): "
            f"choose another {flag} or fix its permissions"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise NadaError(
            f"{root} is in use by another nada run ({holder}): wait for it to end, or choose another {flag}"
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    """The holder line a running process wrote into its lock file (it may not have written it yet)."""
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return text or "its holder has not written its name yet"


@contextlib.contextmanager
def claimed_folder(root: Path, lock_name: str, flag: str) -> Iterator[Path]:
    """Hold ``root`` for one command (see `lock_folder`); a folder this claim created and left empty is removed."""
    created = not root.exists()
    fd = lock_folder(root, lock_name, flag)
    try:
        yield root
    finally:
        lock = root / lock_name
        if created and [p.name for p in root.iterdir()] == [lock_name]:
            lock.unlink(missing_ok=True)  # a failed first command leaves no folder behind
            root.rmdir()
        os.close(fd)


def check_writable_file(path: str | os.PathLike, flag: str) -> None:
    """NadaError unless a file can be written at ``path``: no folder there, and its folder accepts new files."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise NadaError(f"{path} is a folder: give {flag} a file name such as grid.png")
    check_writable_folder(path.parent, flag)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_image(img: Image.Image, path: str | os.PathLike, compress_level: int | None = None) -> Path:
    """Save a PIL image atomically; the format follows the file extension of ``path``.

    ``compress_level`` (PNG only, 0-9; None: Pillow's 6) trades file size for encoding time, never pixels.
    """
    fmt = Path(path).suffix.lstrip(".").upper() or "PNG"
    fmt = {"JPG": "JPEG"}.get(fmt, fmt)
    options = {"compress_level": compress_level} if fmt == "PNG" and compress_level is not None else {}
    return atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **options))


class BackgroundWriter:
    """Run file writes one after another on a worker thread; a failed write raises at the next `submit` or `wait`.

    Encoding a large PNG takes seconds of CPU time (zlib releases the GIL), which a training loop on a
    GPU need not wait for. Each write should itself be atomic (`atomic_write`), so a reader sees whole files.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nada-writer")
        self.pending: list[Any] = []

    def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``write(*args, **kwargs)``; first raises the error of any earlier write that has failed."""
        self._collect(wait=False)
        self.pending.append(self.pool.submit(write, *args, **kwargs))

    def wait(self) -> None:
        """Block until every queued write is done; raise the first error among them."""
        self._collect(wait=True)

    def close(self) -> None:
        """Finish the queued writes (errors are the caller's to collect with `wait` first) and stop the thread."""
        self.pool.shutdown(wait=True)

    def _collect(self, wait: bool) -> None:
        done = [f for f in self.pending if wait or f.done()]
        self.pending = [f for f in self.pending if f not in done]
        for f in done:
            f.result()


def parse_seeds(spec: str) -> list[int]:
    """Parse ``"0-15"``, ``"1,5,9"`` or ``"0-3,10"`` into a list of non-negative seeds."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise NadaError(f"bad seed range {part!r}: the end is smaller than the start (write e.g. '0-15')")
            else:
                lo = hi = int(part)
        except ValueError:
            raise NadaError(f"bad seed list {spec!r}: use non-negative integers like '0-15' or '1,5,9'") from None
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:  # checked before the list grows
            raise NadaError(f"{spec!r} names more than {MAX_SEEDS:,} seeds: split the job into several commands")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise NadaError(f"bad seed list {spec!r}: it names no seed (write e.g. '0-15')")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise NadaError(f"bad seed list {spec!r}: seeds must lie in 0 .. 2**32-1")
    return seeds


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, with a clear error when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NadaError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NadaError(f"device {name!r} asked for, but no CUDA device is available: use --device cpu")
    return device


def z_from_seeds(seeds: list[int], dim: int) -> torch.Tensor:
    """Latents [N, dim] drawn on the CPU from each seed, so a seed gives the same image on any device."""
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def to_uint8_image(img: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] on the CPU."""
    return _uint8_nchw(img).permute(0, 2, 3, 1).cpu()


def _uint8_nchw(img: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, 3, H, W] on the same device: round((x + 1) * 127.5)."""
    # clamp makes the copy; the in-place steps after it save a full-size temporary each.
    return img.detach().float().clamp(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> Image.Image:
    """Make a PIL grid from rows of images, each [N, 3, H, W] in [-1, 1]; every row must have the same N, H, W."""

    return Image.fromarray(grid_pixels(rows, pad).numpy())


def grid_pixels(rows: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """The uint8 canvas [H', W', 3] (CPU) of `image_grid`: rows of images [N, 3, H, W] in [-1, 1], gaps of ``pad``.

    Laid out on the images' device, so only the finished canvas crosses to the host.
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    n, _, h, w = rows[0].shape
    for r in rows:
        assert r.shape[0] == n and r.shape[2:] == (h, w), "every row of a grid needs the same count and size"
    shape = (len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3)
    canvas = torch.full(shape, 255, dtype=torch.uint8, device=rows[0].device)
    # A view of the canvas as [row, y, column, x, rgb]: each row of images lands there in one strided copy.
    tiles = canvas[pad:, pad:].unflatten(0, (len(rows), h + pad)).unflatten(2, (n, w + pad))[:, :h, :, :w]
    for i, r in enumerate(rows):
        tiles[i].copy_(_uint8_nchw(r).permute(2, 0, 3, 1))
    return canvas.cpu()
