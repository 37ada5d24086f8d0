"""notebooks/quickstart.ipynb runs top to bottom (toy world when installed, else a tiny stand-in)
and is committed without outputs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

import nada

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
TOY = ROOT / "src" / "nada" / "assets" / "toy"

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat: pip install -e '.[dev]'")


def test_notebook_is_committed_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        "clear the notebook's outputs before committing"
    )
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []) and first.source.startswith('WORLD = "toy"')


def _stand_in(tmp_path: Path) -> str:
    """Parameters for WORLD="custom": a tiny random base generator, one adapted copy, the golden tiny CLIP."""
    from conftest import golden_dir
    from nada.generator.checkpoints import save_checkpoint
    from nada.generator.networks import Generator

    clip = golden_dir() / "tiny_clip_openai.pt"
    if not clip.is_file():
        pytest.skip(f"neither the toy world nor the golden tiny CLIP ({clip}) is available")
    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()
    G.compute_mean_latent(256)
    base = save_checkpoint(tmp_path / "base.pt", G, {"alignment": "none"})
    styled = copy.deepcopy(G)
    with torch.no_grad():
        styled.to_rgbs[-1].conv.weight.mul_(-1)
    style = save_checkpoint(tmp_path / "negative" / "generator.pt", styled, {"base_model": str(base)})
    return f'WORLD = "custom"\nCUSTOM = dict(generator={str(base)!r}, clip={str(clip)!r}, styles=[{str(style)!r}])\n'


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    """Execute every cell with a few iterations (parameters injected after the parameters cell, as papermill does)."""
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient: pip install -e '.[dev]'")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel: pip install -e '.[dev]'")
    monkeypatch.setenv("NADA_OFFLINE", "1")
    # The kernel runs in another folder: give it the nada this test imports (a relative PYTHONPATH would miss it).
    here = str(Path(nada.__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    toy = all((TOY / f).is_file() for f in ("generator.pt", "clip.pt", "clip_config.json"))
    world = "" if toy else _stand_in(tmp_path)
    injected = world + "ITERATIONS = 2\nINVERSION_STEPS = 2\nimport torch\ntorch.set_num_threads(1)\n"

    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(injected)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    work = tmp_path / "run"
    work.mkdir()
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()

    out = work / "nada-quickstart"
    assert (out / "adapt" / "generator.pt").is_file()
    assert (out / "stylize" / "grid.png").is_file()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # two sample grids, the preset rows, the stylized grid
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "columns: aligned input, reconstruction, " in text
