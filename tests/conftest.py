"""Shared fixtures: the golden reference folder and markers for GPU and network tests."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """The folder of reference outputs: $NADA_GOLDEN, else ../shared/golden beside the checkout."""
    return Path(os.environ.get("NADA_GOLDEN", ROOT.parent / "shared" / "golden"))


@pytest.fixture
def golden() -> Path:
    """Path of the golden folder; the test is skipped, with the reason shown, when it is missing."""
    path = golden_dir()
    if not path.is_dir():
        pytest.skip(f"golden reference folder not found at {path} (set NADA_GOLDEN to its location)")
    return path


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_net = pytest.mark.skip(reason="needs network access: set NADA_TEST_NETWORK=1")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "network" in item.keywords and os.environ.get("NADA_TEST_NETWORK") != "1":
            item.add_marker(skip_net)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch on one thread: the tiny models of the suite are fastest so, above all on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def load_tiny_clip(path: str, antialias: bool = True):
    """A CLIP loaded once per test session (they are read-only in every test)."""
    from nada.guidance.clip import load_clip

    return load_clip(path, antialias=antialias)


@pytest.fixture
def tiny(golden: Path):
    """The golden tiny CLIP (OpenAI state-dict layout)."""
    return load_tiny_clip(str(golden / "tiny_clip_openai.pt"))


@pytest.fixture
def ref(golden: Path) -> dict:
    """The official StyleGAN-NADA loss values on the tiny CLIP."""
    import torch

    return torch.load(golden / "nada_clip_loss.pt", weights_only=True)


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No downloads and empty caches (NADA_OFFLINE, NADA_CACHE, TORCH_HOME): every pretrained weights file
    is missing."""
    monkeypatch.setenv("NADA_OFFLINE", "1")
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "cache"
