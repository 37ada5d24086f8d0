"""nada video: eased paths, the requested frame count in MP4 and GIF, the same seeds as nada generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nada.errors import NadaError
from nada.generator.checkpoints import save_checkpoint
from nada.generator.domains import save_domain
from nada.generator.networks import Generator
from nada.generator.video import count_frames, eased_positions, latent_walk, side_by_side, write_video

CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


def make_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS).eval()
    G.compute_mean_latent(n=512, seed=0)
    return G


def distinct_frames(n: int, side: int = 20) -> list[torch.Tensor]:
    """n uint8 frames [side, side, 3], each different from the one before."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (side, side, 3), generator=gen, dtype=torch.uint8) for _ in range(n)]


def test_paths_start_and_end_on_the_keyframes() -> None:
    steps = eased_positions(9, 3)
    assert steps[0] == (0, 0.0) and steps[-1] == (1, 1.0) and steps[4] == (1, 0.0)
    from nada.io import z_from_seeds

    z = latent_walk([3, 5], 7, 32)
    keys = z_from_seeds([3, 5], 32)
    torch.testing.assert_close(z[0], keys[0])
    torch.testing.assert_close(z[-1], keys[1])
    assert float((z.norm(dim=1) - 32**0.5).abs().max()) < 2  # slerp keeps a Gaussian latent's typical norm


def test_frames_are_even_sided_panels() -> None:
    frame = side_by_side([torch.zeros(31, 31, 3, dtype=torch.uint8)] * 3)
    assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0 and frame[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_writer_writes_the_requested_frame_count(tmp_path: Path, suffix: str) -> None:
    if suffix == ".mp4":
        pytest.importorskip("av", reason="MP4 output needs PyAV (pip install 'nada[video]')")
    path, written = write_video(iter(distinct_frames(13)), tmp_path / f"v{suffix}", fps=12)
    assert written == 13 and count_frames(path) == 13
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_cli_video_same_seeds_as_generate(tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from nada.frontends.cli import main

    G = make_generator()
    base_path = save_checkpoint(tmp_path / "base.pt", G, {"base_model": "test"})
    a = save_domain(
        tmp_path / "a.pt",
        0.3 * torch.randn(G.domain_size, generator=torch.Generator().manual_seed(1)),
        G,
        str(base_path),
    )
    b = save_domain(
        tmp_path / "b.pt",
        0.3 * torch.randn(G.domain_size, generator=torch.Generator().manual_seed(2)),
        G,
        str(base_path),
    )
    out = tmp_path / "walk.gif"
    assert main(["video", "--preset", f"{a},{b}", "--seeds", "4,9", "--frames", "6", "--out", str(out), "--quiet"]) == 0
    assert "panels:      base | " in capsys.readouterr().out
    assert count_frames(out) == 6
    grid = tmp_path / "grid.png"
    assert main(["generate", "--preset", f"{a},{b}", "--seeds", "4", "--out", str(grid), "--compare"]) == 0
    from nada.generator.domains import DomainRows
    from nada.generator.video import build_panels, frame_latents, render_frames

    rows = DomainRows(f"{a},{b}")
    panels = build_panels(rows, "latent", 6, 1.0)
    first = next(render_frames(panels, frame_latents("latent", [4, 9], 6, G.style_dim), 32, progress=False)).numpy()
    grid_rows = np.asarray(Image.open(grid).convert("RGB"))
    with Image.open(out) as im:
        gif_first = np.asarray(im.convert("RGB")).astype(int)
    for j in range(3):  # frame 0 shows seed 4 in the base, a and b, as the rows of nada generate do
        tile = first[2:34, 2 + 34 * j : 34 + 34 * j].astype(int)
        expected = grid_rows[2 + 34 * j : 34 + 34 * j, 2:34].astype(int)
        assert np.abs(tile - expected).max() <= 1
        assert np.abs(gif_first[2:34, 2 + 34 * j : 34 + 34 * j] - tile).mean() < 8  # the GIF's 256-colour palette
    for walk in ("domain", "both"):
        assert (
            main(
                [
                    "video",
                    "--preset",
                    f"{a},0.5*{a}+0.5*{b}",
                    "--walk",
                    walk,
                    "--frames",
                    "5",
                    "--out",
                    str(tmp_path / f"{walk}.gif"),
                    "--quiet",
                ]
            )
            == 0
        )
        assert count_frames(tmp_path / f"{walk}.gif") == 5
    assert main(["video", "--preset", str(a), "--out", str(out), "--quiet"]) == 2  # never overwritten silently
    assert main(["video", "--preset", str(a), "--out", str(tmp_path / "v.avi")]) == 2
    with pytest.raises(NadaError, match="--frames 0"):
        from nada.generator.video import check_frames

        check_frames(0, 24, 64, 2, gif=True)
