"""The weights preflight: every file a command needs is known before any download or work, and a machine that
cannot download learns every missing file (address, size, target path) in one message, without retries.

No test touches the network: the downloaders, huggingface_hub and socket connections are replaced by functions
that fail the test when called (or, where a test says so, that record the call).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nada.errors import NadaError
from nada.frontends.cli import main
from nada.weights import download, preflight

FFHQ_URL = "https://huggingface.co/akhaliq/OneshotCLIP-stylegan2-ffhq/resolve/"
B32_URL = "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"
B16_URL = "https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors"
REAL_DOWNLOAD_HUB = download._download_hub


def _forbidden(*args, **kwargs):
    raise AssertionError("the network must not be touched")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty nada cache, no CLIP override, and every road to the network closed."""
    import huggingface_hub

    from nada.photos import perceptual

    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NADA_CLIP_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/clip of the machine's user
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _forbidden)
    monkeypatch.setattr(download, "_download_hub", _forbidden)
    monkeypatch.setattr(download, "_download_url", _forbidden)
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    monkeypatch.setattr(perceptual, "_elsewhere", lambda key: [])  # no torch hub files of the machine
    return tmp_path / "cache"


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_offline_adapt_lists_every_missing_file_at_once(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NADA_OFFLINE", "1")
    out = tmp_path / "run"
    rc = main(
        ["adapt", "--generator", "ffhq", "--clip", "ViT-B/32,ViT-B/16:0.5", "--target", "sketch", "--out", str(out)]
    )
    err = _error(capsys)
    assert rc == 2
    assert "3 weights files this command needs are not on this machine and offline mode is on (NADA_OFFLINE=1" in err
    assert FFHQ_URL in err and "(381 MB)" in err
    assert str(cache / "weights" / "ffhq" / "stylegan2-ffhq-config-f.pt") in err
    assert B32_URL in err and str(cache / "clip" / "ViT-B-32-quickgelu_openai.safetensors") in err
    assert B16_URL in err and str(cache / "clip" / "ViT-B-16-quickgelu_openai.safetensors") in err
    assert err.count("\n  - ") == 3
    assert not out.exists()  # refused before the run folder was made


def test_without_network_one_probe_per_host_and_no_download(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    probes = []

    def unreachable(host: str, port: int = 443) -> str:
        probes.append(host)
        return f"{host}:{port} does not answer ([Errno -3] Temporary failure in name resolution)"

    monkeypatch.setattr(preflight, "probe_host", unreachable)
    rc = main(
        ["adapt", "--generator", "ffhq", "--clip", "ViT-B/32", "--target", "sketch", "--out", str(tmp_path / "run")]
    )
    err = _error(capsys)
    assert rc == 2 and probes == ["huggingface.co"]  # both files live there: one connection attempt in all
    assert "2 weights files" in err and "the network cannot be reached" in err and "NADA_OFFLINE=1" in err
    assert FFHQ_URL in err and B32_URL in err


def test_probe_host_reports_a_closed_port(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        reason = preflight.probe_host("127.0.0.1", port)
    assert reason is not None and reason.startswith(f"127.0.0.1:{port} does not answer")


def test_online_the_missing_files_download_before_the_work(cache, monkeypatch):
    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "probe_host", lambda host, port=443: None)
    fetched = []

    def fake_fetch(source, key, *, progress=True, endpoint=None, dest=None):
        dest = dest if dest is not None else download.local_path(source, key)
        fetched.append(dest)
        return dest

    monkeypatch.setattr(download, "fetch", fake_fetch)
    needs = preflight.generator_needs("ffhq") + preflight.clip_needs("ViT-B/32") + preflight.generator_needs("toy")
    preflight.ensure(needs)
    assert fetched == [
        cache / "weights" / "ffhq" / "stylegan2-ffhq-config-f.pt",
        cache / "clip" / "ViT-B-32-quickgelu_openai.safetensors",
    ]


def test_generate_compare_lists_the_preset_and_its_base(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NADA_OFFLINE", "1")
    rc = main(["generate", "--preset", "ffhq-pixar", "--compare", "--out", str(tmp_path / "grid.png")])
    err = _error(capsys)
    assert rc == 2 and "2 weights files" in err
    assert "preset 'ffhq-pixar': https://huggingface.co/rinong/stylegan-nada-models/resolve/" in err
    assert "(133 MB)" in err
    assert str(cache / "weights" / "ffhq-pixar" / "pixar.pt") in err and "generator 'ffhq'" in err


def test_stylize_lists_generator_and_loss_weights(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NADA_OFFLINE", "1")
    args = ["stylize", "--image", str(tmp_path / "face.png"), "--preset", "ffhq-pixar", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = _error(capsys)
    assert "5 weights files" in err
    for name in ("pixar.pt", "stylegan2-ffhq-config-f.pt", "vgg16-397923af.pth", "vgg.pth", "model_ir_se50.pth"):
        assert name in err
    assert "download it by hand" in err  # ArcFace lives on Google Drive
    assert main([*args, "--allow-missing-losses"]) == 2  # the losses may be dropped: only the generators are listed
    err = _error(capsys)
    assert "2 weights files" in err and "vgg.pth" not in err


def test_placed_by_hand_only_files_are_listed_even_online(cache, monkeypatch):
    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "probe_host", _forbidden)  # nothing can download it, so nothing is probed
    from nada.photos.invert import InvertConfig

    needs = preflight.loss_needs(InvertConfig(lambda_lpips=0.0, lambda_id=0.1), "face")
    with pytest.raises(NadaError, match="cannot be downloaded automatically") as info:
        preflight.ensure(needs)
    assert "model_ir_se50.pth" in str(info.value)
    assert preflight.loss_needs(InvertConfig(lambda_id=0.1), "profile") == []  # the toy profile needs no download


def test_clip_cache_lives_under_nada_cache(cache, monkeypatch):
    from nada.guidance import clip_weights as clip

    assert clip.clip_cache_dir() == cache / "clip"
    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    written = []

    def hub(repo_id, filename, *, revision, local_dir, endpoint, **kwargs):  # writes where huggingface_hub would
        target = Path(local_dir) / filename
        target.write_bytes(b"weights")
        written.append(target)
        return str(target)

    import huggingface_hub

    monkeypatch.setattr(download, "_download_hub", REAL_DOWNLOAD_HUB)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    path = clip.fetch_pretrained_weights("ViT-B/32")
    assert path == cache / "clip" / "ViT-B-32-quickgelu_openai.safetensors" and path.read_bytes() == b"weights"
    assert written == [cache / "clip" / "open_clip_model.safetensors"]
    assert clip.pretrained_weights("ViT-B/32").found == path  # the next run finds it without the network


def test_web_adapt_job_is_refused_with_the_list_before_it_queues(cache, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'nada[web]'")
    from nada.frontends.web import WebBackend

    monkeypatch.setenv("NADA_OFFLINE", "1")
    backend = WebBackend(generator="ffhq", clip="ViT-B/32", device="cpu", work_dir=tmp_path / "work")
    with pytest.raises(NadaError) as info:
        backend.submit_adapt("photo", "sketch", "all", 5)
    message = str(info.value)
    assert "2 weights files" in message and FFHQ_URL in message and B32_URL in message
    assert backend.jobs == {}


def test_the_cli_prints_the_offline_message_once_and_its_first_line_says_what_to_do(
    cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("NADA_OFFLINE", "1")
    argv = ["adapt", "--generator", "ffhq", "--clip", "ViT-B/32,ViT-B/16", "--target", "sketch"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and err.count("weights files this command needs") == 1
    first, *rest = err.splitlines()
    assert first.startswith("nada adapt: error: 3 weights files this command needs are not on this machine")
    assert "NADA_OFFLINE=1" in first and "NADA_OFFLINE unset" in first  # the cause and the way out
    assert f"save it as the path after its arrow (under {cache})" in first  # where the files go
    assert [line[:4] for line in rest] == ["  - "] * 3 and all(str(cache) in line for line in rest)
    assert not (tmp_path / "run").exists()
