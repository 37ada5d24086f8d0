"""Weights registry and downloads, against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from nada.errors import NadaError
from nada.weights import download
from nada.weights.download import ResumingDownloader, WeightsSource, fetch, local_path

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB, every byte position distinguishable modulo 256
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------- a small file server with Range support


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 and records every request; behaviour switches for tests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.bytes_sent = 0
        self.ignore_range = False  # answer every request with the whole file (a server without Range support)
        self.cut_once: dict[str, int] = {}  # path -> bytes after which the next GET of it drops the connection
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a server thread for long

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        srv: FileServer = self.server.owner  # type: ignore[attr-defined]
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        rng = self.headers.get("Range")
        srv.requests.append((self.command, path, rng))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start, end, status = 0, len(data) - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not srv.ignore_range:
            start = int(m.group(1))
            end = min(int(m.group(2)), end) if m.group(2) else end
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        if "/resolve/" in path:  # what the Hugging Face hub says about a file
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", HUB_COMMIT)
        self.end_headers()
        if self.command != "GET":
            return
        cut = srv.cut_once.pop(path, None)
        body = body if cut is None else body[:cut]
        # Counted before the write: the client may finish reading before this thread resumes.
        srv.bytes_sent += len(body)
        self.wfile.write(body)
        if cut is not None:
            self.close_connection = True  # the client sees the stream end before Content-Length


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty nada cache; online unless a test says otherwise; no waiting between retries."""
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    return tmp_path / "cache"


def url_source(
    server: FileServer, name: str = "weights.bin", data: bytes = PAYLOAD, sha: str | None = PAYLOAD_SHA
) -> WeightsSource:
    server.files[f"/files/{name}"] = data
    return WeightsSource(name, url=server.url(f"/files/{name}"), sha256=sha, size=len(data))


# ---------------------------------------------------------------- plain URLs (pooch + resuming downloader)


def test_download_verifies_and_shows_progress(
    server: FileServer, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = url_source(server)
    path = fetch(src, "demo")
    assert path == cache / "weights" / "demo" / "weights.bin"
    assert path.read_bytes() == PAYLOAD
    assert len(server.gets()) == 1 and server.bytes_sent == len(PAYLOAD)
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.bin"]  # no .part, no temporary file left
    err = capsys.readouterr().err
    assert "weights.bin" in err and "100%" in err  # the progress bar ran to the end


def test_progress_can_be_silenced(server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    fetch(url_source(server), "demo", progress=False)
    assert "100%" not in capsys.readouterr().err


def test_partial_file_is_resumed_not_restarted(server: FileServer, cache: Path) -> None:
    src = url_source(server)
    dest = local_path(src, "demo")
    dest.parent.mkdir(parents=True)
    half = len(PAYLOAD) // 2 + 123
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD[:half])  # left behind by an interrupted run
    assert fetch(src, "demo").read_bytes() == PAYLOAD
    assert server.gets() == [("GET", "/files/weights.bin", f"bytes={half}-")]
    assert server.bytes_sent == len(PAYLOAD) - half  # only the missing bytes travelled


def test_dropped_connection_resumes_within_one_download(server: FileServer) -> None:
    src = url_source(server)
    server.cut_once["/files/weights.bin"] = 100_000
    assert fetch(src, "demo").read_bytes() == PAYLOAD
    first, second = [r[2] for r in server.gets()]
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and 0 < resumed_at <= 100_000  # the bytes received before the drop were kept
    assert server.bytes_sent == 100_000 + len(PAYLOAD) - resumed_at


def test_interrupted_download_keeps_part_for_next_run(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    src = url_source(server)
    server.cut_once["/files/weights.bin"] = 150_000
    monkeypatch.setattr(download, "RESUME_ATTEMPTS", 1)  # give up at the first drop
    with pytest.raises(NadaError, match="partial file is kept"):
        fetch(src, "demo")
    part = local_path(src, "demo").with_name("weights.bin.part")
    kept = part.stat().st_size
    assert 0 < kept <= 150_000 and not local_path(src, "demo").exists()
    assert fetch(src, "demo").read_bytes() == PAYLOAD  # the next run continues where the first stopped
    assert server.gets()[-1][2] == f"bytes={kept}-"


def test_server_without_range_support_restarts_cleanly(server: FileServer) -> None:
    server.ignore_range = True
    src = url_source(server)
    dest = local_path(src, "demo")
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(b"x" * 1000)  # stale bytes that must not be kept
    assert fetch(src, "demo").read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_body(server: FileServer) -> None:
    src = url_source(server)
    dest = local_path(src, "demo")
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(PAYLOAD)  # crashed between the last byte and the rename
    assert fetch(src, "demo").read_bytes() == PAYLOAD
    assert server.bytes_sent == 0


def test_wrong_checksum_is_refused_and_not_kept(server: FileServer) -> None:
    src = url_source(server, sha=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(NadaError, match="does not match its recorded SHA-256"):
        fetch(src, "demo")
    folder = local_path(src, "demo").parent
    assert list(folder.iterdir()) == []  # neither the final name nor a temporary or partial file


def test_offline_mode_names_the_full_path(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    src = url_source(server)
    for var in ("NADA_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        with pytest.raises(NadaError) as err:
            fetch(src, "demo")
        msg = str(err.value)
        assert str(local_path(src, "demo")) in msg and src.url in msg and "offline" in msg
        monkeypatch.delenv(var)
    assert server.requests == []


def test_no_network_names_the_full_path(server: FileServer) -> None:
    src = url_source(server)
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens on that port any more
    with pytest.raises(NadaError) as err:
        fetch(src, "demo")
    assert str(local_path(src, "demo")) in str(err.value) and "download failed" in str(err.value)


def test_prefilled_cache_is_used_without_request(server: FileServer) -> None:
    src = url_source(server)
    dest = local_path(src, "demo")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)  # placed by hand, as the offline message says
    assert fetch(src, "demo") == dest
    assert server.requests == []


def test_prefilled_corrupt_file_is_refused_but_not_deleted(server: FileServer) -> None:
    src = url_source(server)
    dest = local_path(src, "demo")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(NadaError, match="SHA-256"):
        fetch(src, "demo")
    assert dest.exists() and server.requests == []


def test_unknown_checksum_skips_verification(server: FileServer) -> None:
    src = url_source(server, sha=None)
    assert fetch(src, "demo").read_bytes() == PAYLOAD


def test_downloader_records_its_ranges(server: FileServer, tmp_path: Path) -> None:
    server.files["/f"] = PAYLOAD
    part = tmp_path / "f.part"
    part.write_bytes(PAYLOAD[:10])
    d = ResumingDownloader(part, progress=False, expected_size=len(PAYLOAD))
    out = tmp_path / "out"
    d(server.url("/f"), str(out), None)
    assert out.read_bytes() == PAYLOAD and not part.exists()
    assert d.requests_made[0]["Range"] == "bytes=10-"


# ---------------------------------------------------------------- Hugging Face hub files (local stand-in for the hub)


def hub_source(server: FileServer, data: bytes = PAYLOAD, sha: str | None = PAYLOAD_SHA) -> WeightsSource:
    server.files[f"/owner/repo/resolve/{HUB_COMMIT}/model.pt"] = data
    return WeightsSource("model.pt", hf_repo="owner/repo", hf_revision=HUB_COMMIT, sha256=sha, size=len(data))


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read by huggingface_hub when it was imported


def test_hub_download(server: FileServer, cache: Path, hub_online: None) -> None:
    src = hub_source(server)
    path = fetch(src, "hubdemo", progress=False, endpoint=server.base)
    assert path == cache / "weights" / "hubdemo" / "model.pt" and path.read_bytes() == PAYLOAD
    assert any(r[0] == "GET" for r in server.requests)
    n = len(server.requests)
    assert fetch(src, "hubdemo", endpoint=server.base) == path and len(server.requests) == n  # cached: no request


def test_hub_download_with_wrong_checksum_is_deleted(server: FileServer, hub_online: None) -> None:
    src = hub_source(server, sha=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(NadaError, match="does not match"):
        fetch(src, "hubdemo", progress=False, endpoint=server.base)
    assert not local_path(src, "hubdemo").exists()


def test_hub_offline_names_the_full_path(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    src = hub_source(server)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NadaError) as err:
        fetch(src, "hubdemo", endpoint=server.base)
    assert str(local_path(src, "hubdemo")) in str(err.value) and "huggingface.co/owner/repo" in str(err.value)
    assert server.requests == []


# ---------------------------------------------------------------- the registry table


def test_registry_table_is_well_formed() -> None:
    from nada.weights.registry import GENERATORS, known_generators

    names = known_generators()
    assert {"toy", "ffhq", "afhqcat", "afhqdog", "afhqwild", "metfaces", "ffhq256", "ffhq512", "ffhq1024"} <= set(names)
    for entry in GENERATORS.values():
        src = entry.weights
        assert entry.resolution in (64, 256, 512, 1024)
        assert src.kind == "package" or src.address.startswith("https://"), entry.name
    ffhq = GENERATORS["ffhq"].weights
    assert ffhq.kind == "hub" and len(ffhq.hf_revision) == 40 and ffhq.sha256 is not None  # pinned and verified


def test_registered_download_location_and_offline_message(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nada.weights.registry import generator_file, is_local, resolve_generator

    monkeypatch.setenv("NADA_OFFLINE", "1")
    path = generator_file("afhqdog")
    assert path == cache / "weights" / "afhqdog" / "afhqdog.pkl" and not is_local("afhqdog")
    with pytest.raises(NadaError) as err:
        resolve_generator("afhqdog")
    assert str(path) in str(
        err.value
    ) and "nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl" in str(err.value)


def test_load_generator_resolves_registered_names_through_the_cache(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file put where the offline message says is loaded by name, with no network."""
    import torch

    from nada.generator.checkpoints import load_generator, save_checkpoint
    from nada.generator.networks import Generator
    from nada.weights.registry import generator_file

    monkeypatch.setenv("NADA_OFFLINE", "1")
    torch.manual_seed(0)
    G = Generator(16, style_dim=8, n_mlp=2, channels={4: 8, 8: 8, 16: 8})
    G.mean_latent.normal_()
    target = generator_file("afhqcat")  # NVlabs entries are not checksummed, so any checkpoint placed there loads
    save_checkpoint(target, G, {})
    loaded = load_generator("afhqcat")
    assert loaded.size == 16 and torch.equal(loaded.style[1].weight, G.style[1].weight)
    assert torch.equal(loaded.mean_latent, G.mean_latent)


def test_unknown_name_lists_the_registered_ones() -> None:
    from nada.weights.registry import resolve_generator

    with pytest.raises(NadaError, match=r"registered generator name.*ffhq.*toy"):
        resolve_generator("no-such-model")
