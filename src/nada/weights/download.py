"""Weights files that nada fetches on first use: where they come from, where they are cached, how they are verified.

One `WeightsSource` describes one file: shipped inside the nada package (``package_path``), hosted on the
Hugging Face hub (``hf_repo`` + ``hf_revision`` + ``filename``) or at a plain HTTPS address (``url``), with
its SHA-256 where the publisher's records give it (``None`` means the file cannot be verified and the check
is skipped). `fetch` returns the local file, downloading it into the cache when it is missing:

- cache folder: ``cache_dir()`` = ``$NADA_CACHE``, default ``$XDG_CACHE_HOME/nada`` or ``~/.cache/nada``;
  downloaded weights live at ``cache_dir()/weights/<key>/<filename>`` (CLIP weights at
  ``clip_cache_dir()``, see `nada.guidance.clip_weights`), so a file can also be put there by hand (the error messages
  give that full path). `nada.weights.preflight` lists every missing file of a command at once.
- offline mode (``NADA_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, see `offline`) or no network: a
  `NadaError` names the address to fetch and the exact path to save the file as.
- verification: a file with a known SHA-256 is hashed every time it is used, a freshly downloaded one
  before it gets its final name; a mismatching download is deleted, a mismatching file that was already
  in the cache (e.g. put there by hand) is refused with a message, never deleted.
- a file already in the cache is used without any network request.

Libraries, and why:

- Hub files use ``huggingface_hub.hf_hub_download`` (already installed with open_clip): it resumes an
  interrupted download from its ``.incomplete`` file, shows a progress bar and checks the size.
- Plain URLs use ``pooch`` (fatiando/pooch, maintained, used by SciPy and scikit-image): it checks the
  SHA-256 of every download before moving it into place from a temporary file, so a bad file never sits
  under the final name, and it takes custom downloaders through a documented hook. None of the maintained
  downloaders resumes a plain-URL download (pooch, ``torch.hub.download_url_to_file`` and open_clip's
  helper all restart from zero; huggingface_hub resumes, but only through a private function), so
  `ResumingDownloader` plugs the missing piece into pooch: it keeps ``<file>.part`` next to the target
  and continues it with an HTTP ``Range`` request through ``requests`` (pooch's own HTTP library);
  a server that ignores the range gets a clean restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nada.errors import NadaError, one_line

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK_BYTES = 1 << 20  # hashing
NET_CHUNK_BYTES = 1 << 16  # network reads: a dropped connection loses at most this much of what arrived
HTTP_TIMEOUT_S = 30.0  # per socket read, not for the whole file
RESUME_ATTEMPTS = 3  # connection drops survived within one download, each resuming where the last stopped
OFFLINE_REASON = "offline mode is on (NADA_OFFLINE=1 or HF_HUB_OFFLINE=1)"


@dataclass(frozen=True)
class WeightsSource:
    """Where one weights file comes from: exactly one of ``package_path``, ``hf_repo`` or ``url``, plus its checksum."""

    filename: str  # file name in the cache (for the hub: the file's name in the repository)
    url: str = ""  # plain https address
    hf_repo: str = ""  # Hugging Face hub repository "owner/name"
    hf_revision: str = "main"  # branch or (better: stable) full commit hash
    sha256: str | None = None  # lower-case hex digest when documented by the publisher; None: not verified
    size: int | None = None  # bytes, when documented
    package_path: str = ""  # path inside the nada package, e.g. "assets/toy/generator.pt"

    def __post_init__(self) -> None:
        given = [k for k in ("url", "hf_repo", "package_path") if getattr(self, k)]
        assert len(given) == 1, (
            f"a weights source needs exactly one of url, hf_repo, package_path; got {given or 'none'}"
        )
        assert self.sha256 is None or _SHA256.fullmatch(self.sha256), (
            f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}"
        )
        assert self.filename and "/" not in self.filename, f"filename must be a bare file name, got {self.filename!r}"

    @property
    def kind(self) -> str:
        """'package', 'hub' or 'url'."""
        return "package" if self.package_path else "hub" if self.hf_repo else "url"

    @property
    def address(self) -> str:
        """Where a person gets the file: the download address, or the path inside the package."""
        if self.kind == "hub":
            return f"https://huggingface.co/{self.hf_repo}/resolve/{self.hf_revision}/{self.filename}"
        return self.url or f"nada/{self.package_path}"


# ---------------------------------------------------------------- places


def cache_dir() -> Path:
    """nada's cache folder: $NADA_CACHE, default $XDG_CACHE_HOME/nada or ~/.cache/nada."""
    if os.environ.get("NADA_CACHE"):
        return Path(os.environ["NADA_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "nada"


def package_file(package_path: str) -> Path:
    """Path of a file shipped inside the installed nada package (it may not exist)."""
    return Path(str(resources.files("nada").joinpath(package_path)))


def local_path(source: WeightsSource, key: str) -> Path:
    """Where the file of `source` is (package) or goes once downloaded: cache_dir()/weights/<key>/<filename>."""
    if source.kind == "package":
        return package_file(source.package_path)
    return cache_dir() / "weights" / key / source.filename


def clip_cache_dir() -> Path:
    """Folder of downloaded and hand-placed CLIP weights: $NADA_CLIP_CACHE, default cache_dir()/clip."""
    if os.environ.get("NADA_CLIP_CACHE"):
        return Path(os.environ["NADA_CLIP_CACHE"]).expanduser()
    return cache_dir() / "clip"


def offline() -> bool:
    """True when NADA_OFFLINE or HF_HUB_OFFLINE asks for no network access (every download of nada obeys it)."""
    flags = ("NADA_OFFLINE", "HF_HUB_OFFLINE")
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in flags)


def human_size(n: int | None) -> str:
    """Bytes as a short human string ('133 MB'); '? MB' when unknown."""
    if n is None:
        return "? MB"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- verification


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, source: WeightsSource) -> None:
    """NadaError when `path` does not have the size or SHA-256 that `source` records (checks skipped when unknown)."""
    if source.size is not None and path.stat().st_size != source.size:
        raise NadaError(
            f"{path} has {path.stat().st_size} bytes, expected {source.size} (truncated or a different file): "
            f"delete it and run again to download {source.address}"
        )
    if source.sha256 is not None:
        digest = sha256_file(path)
        if digest != source.sha256:
            raise NadaError(
                f"{path} has SHA-256 {digest}, expected {source.sha256} (corrupt or a different file): "
                f"delete it and run again to download {source.address}"
            )


# ---------------------------------------------------------------- fetching


def fetch(
    source: WeightsSource, key: str, *, progress: bool = True, endpoint: str | None = None, dest: Path | None = None
) -> Path:
    """The verified local file of `source` (downloaded into the cache on first use); `key` names its cache folder.

    `endpoint` replaces https://huggingface.co for hub files (a mirror; tests use a local server); `dest`
    replaces the default place ``local_path(source, key)`` (the CLIP cache names files its own way).
    """
    dest = dest if dest is not None else local_path(source, key)
    if source.kind == "package":
        if not dest.is_file():
            raise NadaError(f"{dest} is missing from the nada package: reinstall nada (pip install -e .)")
        verify(dest, source)
        return dest
    if dest.is_file():  # cached: no request at all
        verify(dest, source)
        return dest
    if offline():
        raise missing_file_error(source, dest, OFFLINE_REASON)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.kind == "hub":
        _download_hub(source, dest, progress, endpoint)
    else:
        _download_url(source, dest, progress)
    return dest


def missing_file_error(source: WeightsSource, dest: Path, reason: str) -> NadaError:
    """The error that says which file to fetch and the full path to save it as."""
    size = f" ({human_size(source.size)})" if source.size else ""
    return NadaError(
        f"the weights file {source.filename} is not on this machine and {reason}: download {source.address}{size} "
        f"and save it as {dest} (or run once with internet access, which caches it there)"
    )


def _download_hub(source: WeightsSource, dest: Path, progress: bool, endpoint: str | None) -> None:
    """hf_hub_download into dest's folder (it resumes by itself), then verify; a bad download is deleted."""
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {"revision": source.hf_revision, "local_dir": dest.parent, "endpoint": endpoint}
    if not progress:
        from tqdm import tqdm

        kwargs["tqdm_class"] = _silent_tqdm(tqdm)
    try:
        got = Path(hf_hub_download(source.hf_repo, source.filename, **kwargs))
    except Exception as e:  # network, missing file, permissions, hub errors: all end in the same advice
        raise missing_file_error(source, dest, f"the download failed ({one_line(e)})") from None
    if got.resolve() != dest.resolve():  # local_dir keeps the repository's file name, which is dest's
        os.replace(got, dest)
    try:
        verify(dest, source)
    except NadaError:
        dest.unlink(missing_ok=True)
        raise NadaError(
            f"the download of {source.address} does not match its recorded SHA-256 {source.sha256} (or size), "
            "so it was deleted: the hosted file changed or the transfer was corrupted; try again, and report it if it "
            "persists"
        ) from None


def _silent_tqdm(base: type) -> type:
    class Silent(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _download_url(source: WeightsSource, dest: Path, progress: bool) -> None:
    """pooch.retrieve with a resuming downloader: temporary file, SHA-256 check, then the final name."""

    import pooch
    import requests

    known_hash = f"sha256:{source.sha256}" if source.sha256 else None
    downloader = ResumingDownloader(dest.with_name(dest.name + ".part"), progress=progress, expected_size=source.size)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # our own progress bar and messages say what happens
    try:
        pooch.retrieve(source.url, known_hash=known_hash, fname=dest.name, path=dest.parent, downloader=downloader)
    except ValueError as e:  # pooch's hash mismatch; it has already deleted the temporary file
        if "hash" not in str(e).lower():
            raise
        raise NadaError(
            f"the download of {source.address} does not match its recorded SHA-256 {source.sha256}, so it was deleted: "
            "the hosted file changed or the transfer was corrupted; try again, and report it if it persists"
        ) from None
    except (requests.RequestException, OSError) as e:
        raise missing_file_error(
            source, dest, f"the download failed ({one_line(e)}; a partial file is kept and resumed next time)"
        ) from None
    finally:
        logger.setLevel(level)


class ResumingDownloader:
    """A pooch downloader that resumes: bytes go to ``part`` (kept across failures), continued with HTTP Range.

    Called by pooch as ``downloader(url, output_file, pooch)``; when ``part`` is complete it is renamed to
    ``output_file`` (pooch's temporary file in the same folder), which pooch then hashes and moves into place.
    """

    def __init__(
        self, part: Path, progress: bool = True, expected_size: int | None = None, attempts: int | None = None
    ) -> None:
        self.part = Path(part)
        self.progress = progress
        self.expected_size = expected_size
        self.attempts = attempts if attempts is not None else RESUME_ATTEMPTS
        self.requests_made: list[dict[str, str]] = []  # headers of each request, for the record (tests read it)

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> bool | None:
        if check_only:
            return True
        import requests

        for attempt in range(self.attempts):
            try:
                if self._fetch_rest(url):
                    break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                if attempt == self.attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))  # the bytes so far stay in self.part; the next attempt resumes
        os.replace(self.part, output_file)
        return None

    def _fetch_rest(self, url: str) -> bool:
        """Append the missing bytes to self.part; True once it is complete (size known and reached, or stream ended)."""
        import requests

        start = self.part.stat().st_size if self.part.exists() else 0
        if self.expected_size is not None and start >= self.expected_size:
            if start == self.expected_size:
                return True
            self.part.unlink()  # longer than the file can be: not ours to continue
            start = 0
        # identity: a compressed response would make Content-Length and byte offsets disagree with the file
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        self.requests_made.append(dict(headers))
        with requests.get(url, headers=headers, stream=True, timeout=HTTP_TIMEOUT_S) as r:
            if start and r.status_code == 416:  # nothing after `start`: the part is already the whole file
                total = _content_range_total(r.headers.get("Content-Range", ""))
                if total == start:
                    return True
                self.part.unlink()
                return False
            r.raise_for_status()
            resumed = (
                start > 0 and r.status_code == 206 and _content_range_start(r.headers.get("Content-Range", "")) == start
            )
            if not resumed:
                start = 0  # a full response (the server ignored or refused the range): start over
            length = r.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else self.expected_size
            with (
                open(self.part, "ab" if resumed else "wb") as f,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=self.part.name.removesuffix(".part"),
                    disable=not self.progress,
                    file=sys.stderr,
                ) as bar,
            ):
                for chunk in r.iter_content(chunk_size=NET_CHUNK_BYTES):
                    f.write(chunk)
                    bar.update(len(chunk))
        size = self.part.stat().st_size
        if total is not None and size < total:
            raise requests.exceptions.ChunkedEncodingError(f"connection closed after {size} of {total} bytes")
        return True


def _content_range_start(value: str) -> int | None:
    m = _CONTENT_RANGE.fullmatch(value.strip())
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> int | None:
    m = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", value.strip())
    return int(m.group(1)) if m else None
