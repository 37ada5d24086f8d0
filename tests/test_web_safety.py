"""Hostile input to `nada web`: paths that try to leave the operator's folder, one visitor's styles seen by another,
jobs larger than the server's limits, uploads whose header announces too many pixels.

The backend is called directly, the way every page callback calls it; the last test goes through the Gradio
client against a running server. The base is a tiny random 16px generator saved next to the allowed folder.
"""

from __future__ import annotations

import copy
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch

gr = pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'nada[web]'")

from nada.config import WebLimits  # noqa: E402
from nada.errors import NadaError  # noqa: E402
from nada.frontends.web import NOT_AVAILABLE, Session, WebBackend  # noqa: E402
from nada.generator.checkpoints import save_checkpoint  # noqa: E402
from nada.generator.networks import Generator  # noqa: E402


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict[str, Path]:
    """allowed/ holds good.pt (a style of base.pt) and a torch file of other keys; outside/ holds another good style."""
    root = tmp_path_factory.mktemp("safety")
    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()
    G.compute_mean_latent(64)
    base = save_checkpoint(root / "base.pt", G, {"alignment": "none"})
    styled = copy.deepcopy(G)
    with torch.no_grad():
        styled.to_rgbs[-1].conv.weight.mul_(-1)
    allowed, outside = root / "allowed", root / "outside"
    good = save_checkpoint(allowed / "good.pt", styled, {"base_model": str(base)})
    secret = save_checkpoint(outside / "secret.pt", styled, {"base_model": str(base)})
    torch.save({"private_key_material": torch.zeros(3)}, allowed / "keys.pt")
    (allowed / "notes.pt").write_text("not a checkpoint\n")
    (allowed / "link.pt").symlink_to(secret)
    (allowed / "sub").mkdir()
    (allowed / "sub" / "up").symlink_to(outside, target_is_directory=True)
    return {"root": root, "base": base, "allowed": allowed, "good": good, "secret": secret}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NADA_OFFLINE", "1")
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))


def _backend(place, tmp_path, **options) -> WebBackend:
    options.setdefault("checkpoints_dir", place["allowed"])
    return WebBackend(generator=str(place["base"]), clip="toy", device="cpu", work_dir=tmp_path / "work", **options)


def _refusal(backend: WebBackend, text: str, session: Session) -> str:
    with pytest.raises(NadaError) as info:
        backend.generate("", checkpoint=text, seeds="0", session=session)
    return str(info.value)


def test_only_files_inside_the_folder_open_and_everything_else_gets_one_answer(place, tmp_path, offline_cache):
    backend = _backend(place, tmp_path)
    visitor = Session()
    hostile = [
        str(place["secret"]),  # an existing generator outside the folder, absolute
        "../outside/secret.pt",  # the same through '..'
        "sub/../../outside/secret.pt",
        "link.pt",  # a symlink inside pointing out
        "sub/up/secret.pt",  # a symlinked folder pointing out
        "missing.pt",  # nothing there
        str(place["root"] / "nowhere.pt"),
        "/etc/passwd",  # a readable file of the server
        "keys.pt",  # a torch file inside that holds no generator
        "notes.pt",  # not a torch file at all
        "sub",  # a folder
        ".",  # the folder itself
    ]
    answers = {text: _refusal(backend, text, visitor) for text in hostile}
    assert set(answers.values()) == {NOT_AVAILABLE}, answers
    assert visitor.styles == {}
    pairs, _ = backend.generate("", checkpoint="good.pt", seeds="0", session=visitor)
    assert len(pairs) == 1 and list(visitor.styles) == ["file:good.pt"]
    pairs, _ = backend.generate("", checkpoint=str(place["good"]), seeds="1", session=visitor)  # absolute, inside
    assert len(pairs) == 1


def test_refusals_tell_nothing_about_the_files(place, tmp_path, offline_cache):
    backend = _backend(place, tmp_path)
    message = _refusal(backend, "keys.pt", Session())
    assert "private_key_material" not in message and "keys.pt" not in message


def test_without_a_folder_only_presets_and_registered_names_open(place, tmp_path, offline_cache, monkeypatch):
    from nada.weights import download

    def no_download(*args, **kwargs):
        raise AssertionError("a visitor must never start a download")

    monkeypatch.setattr(download, "fetch", no_download)
    backend = _backend(place, tmp_path, checkpoints_dir=None)
    visitor = Session()
    for text in ("good.pt", str(place["good"]), "ffhq"):  # ffhq: registered, not on this machine
        assert _refusal(backend, text, visitor) == NOT_AVAILABLE
    entry = backend.open_checkpoint("toy", visitor)  # the packaged toy generator is on every machine
    assert entry.generator == "toy" and "generator:toy" in visitor.styles


def test_a_visitors_styles_stay_in_their_session(place, tmp_path, offline_cache):
    backend = _backend(place, tmp_path)
    everyone = backend.style_choices()
    alice, bob = Session(), Session()
    backend.generate("", checkpoint="good.pt", seeds="0", session=alice)
    assert ("good.pt", "file:good.pt") in backend.style_choices(alice)
    assert backend.style_choices(bob) == everyone == backend.style_choices()
    with pytest.raises(NadaError, match="unknown style"):
        backend.generate("file:good.pt", seeds="0", session=bob)
    with pytest.raises(NadaError, match="unknown style"):  # a key typed through the API opens nothing either
        backend.generate(f"checkpoint:{place['secret']}", seeds="0", session=bob)


def test_a_visitor_cannot_cancel_another_visitors_job(place, tmp_path, offline_cache):
    backend = _backend(place, tmp_path)
    alice, bob = Session(), Session()
    job = backend.submit_adapt("photo", "sketch", "all", 2, session=alice)
    with pytest.raises(NadaError, match="no adaptation"):
        backend.cancel(job.id, bob)
    if not job.finished:
        backend.cancel(job.id, alice)
    import time

    end = time.monotonic() + 120
    while not job.finished and time.monotonic() < end:
        time.sleep(0.05)
    assert job.finished and job.state in ("done", "cancelled"), job.message
    if job.state == "done":
        assert f"run:{job.name}" in alice.styles and not bob.styles


def test_jobs_over_the_limits_are_refused(place, tmp_path, offline_cache):
    limits = WebLimits(max_iterations=5, max_seeds=3, max_steps=2, max_views=2)
    backend = _backend(place, tmp_path, limits=limits)
    with pytest.raises(NadaError, match="6 iterations asked for: this server runs at most 5"):
        backend.submit_adapt("photo", "sketch", "all", 6)
    with pytest.raises(NadaError, match="1000000000000 seeds asked for: this server renders at most 3"):
        backend.generate("", checkpoint="good.pt", seeds="0-999999999999")  # counted, never listed
    with pytest.raises(NadaError, match="4 seeds asked for"):
        backend.generate("", checkpoint="good.pt", seeds="0-1,5,9")
    with pytest.raises(NadaError, match="4 seeds asked for"):
        backend.generate("", checkpoint="good.pt", count=4)
    with pytest.raises(NadaError, match="truncation"):
        backend.generate("", checkpoint="good.pt", seeds="0", truncation=1e30)
    with pytest.raises(NadaError, match="3 inversion steps asked for: give 1 to 2"):
        backend.stylize(str(place["good"]), ["x"], steps=3)
    assert backend.jobs == {}
    toy = WebBackend(generator="toy", clip="toy", device="cpu", work_dir=tmp_path / "toy", limits=limits)
    with pytest.raises(NadaError, match="8 CLIP views asked for"):  # the toy recipe's views, over this server's 2
        toy.submit_adapt("photo", "sketch", "all", 2)
    with pytest.raises(NadaError, match="at least 1"):
        WebLimits(max_seeds=0).validate()


def test_the_operator_sets_folder_and_limits_on_the_command_line(place, tmp_path, offline_cache, monkeypatch, capsys):
    from nada.frontends import web
    from nada.frontends.cli import main

    seen = {}
    monkeypatch.setattr(web, "serve", lambda app, host, port, block: seen.update(app=app) or "")
    common = ["web", "--generator", str(place["base"]), "--clip", "toy", "--device", "cpu", "--work-dir", str(tmp_path)]
    assert main([*common, "--checkpoints", str(place["allowed"] / "sub" / ".."), "--max-iterations", "7"]) == 0
    backend = seen["app"].nada_backend
    assert backend.checkpoints_dir == place["allowed"].resolve() and backend.limits.max_iterations == 7
    assert main([*common, "--checkpoints", str(tmp_path / "none")]) == 2
    assert "is not a folder: pass an existing folder to --checkpoints" in capsys.readouterr().err
    assert main([*common, "--max-seeds", "0"]) == 2
    assert "max_seeds must be a whole number of at least 1" in capsys.readouterr().err
    assert main(common) == 0 and seen["app"].nada_backend.checkpoints_dir is None  # no folder unless named


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """An RGBA PNG that announces the given size and holds no pixel data (an empty IDAT chunk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")


def test_uploads_are_measured_before_anything_is_decoded(place, tmp_path, offline_cache, monkeypatch):
    import nada.photos.images

    def no_decode(*args, **kwargs):
        raise AssertionError("an over-limit upload must be refused before it is decoded")

    monkeypatch.setattr(nada.photos.images, "load_image", no_decode)
    backend = _backend(place, tmp_path, limits=WebLimits(max_upload_pixels=1000 * 1000, max_upload_mb=1))
    key = backend.add_checkpoint(place["good"]).key
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(12000, 12000))
    limit = "huge.png has 12000x12000 pixels: this server reads photos of at most 1.0 megapixels"
    with pytest.raises(NadaError, match=limit):
        backend.stylize(str(huge), [key], steps=1)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))  # past Pillow's own decompression-bomb bound
    with pytest.raises(NadaError, match="bomb.png has too many pixels"):
        backend.stylize(str(bomb), [key], steps=1)
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(_png_header(20, 20) + os.urandom(1_200_000))
    with pytest.raises(NadaError, match="heavy.png is larger than 1 MB"):
        backend.stylize(str(heavy), [key], steps=1)


@pytest.mark.slow
def test_hostile_inputs_through_the_gradio_client(place, tmp_path, offline_cache):
    """Two clients of a running server: the same refusal for every hostile path, and separate style lists."""
    from gradio_client import Client

    from nada.frontends.web import build_app, serve

    app = build_app(_backend(place, tmp_path, limits=WebLimits(max_seeds=4)))
    url = serve(app, port=_free_port(), block=False)
    try:
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        messages = set()
        for text in ("../outside/secret.pt", str(place["secret"]), "link.pt", "missing.pt", "keys.pt"):
            with pytest.raises(Exception) as info:
                bob.predict(None, text, "0", 1, 0.7, api_name="/on_generate")
            messages.add(str(info.value))
        assert len(messages) == 1 and NOT_AVAILABLE in messages.pop()
        with pytest.raises(Exception, match="seeds asked for: this server renders at most 4"):
            bob.predict(None, "good.pt", "0-99", 1, 0.7, api_name="/on_generate")
        gallery, files, choices = alice.predict(None, "good.pt", "0", 1, 0.7, api_name="/on_generate")
        assert len(gallery) == 1 and "file:good.pt" in str(choices)
        bob_choices = bob.predict(api_name="/refresh")
        assert "file:good.pt" not in str(bob_choices)
        assert "file:good.pt" in str(alice.predict(api_name="/refresh"))
    finally:
        app.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
