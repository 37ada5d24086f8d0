"""`nada generate` and the functions behind it: image sizes, files written, determinism, and clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nada.errors import NadaError
from nada.frontends.cli import main
from nada.generator.generate import generate_images, save_outputs
from nada.generator.networks import Generator

SIZE, PAD = 32, 2  # generator resolution; image_grid's padding


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    G = Generator(SIZE, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    G.compute_mean_latent(n=256)
    return G.eval()


@pytest.fixture(scope="module")
def checkpoint(generator: Generator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    torch.save({"g_ema": generator.state_dict(), "latent_avg": generator.mean_latent.clone()}, path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- library functions


def test_generate_images_shape_range_determinism(generator: Generator) -> None:
    imgs = generate_images(generator, [0, 1, 2, 3, 4], truncation_psi=1.0, batch_size=2, device="cpu")
    assert imgs.shape == (5, 3, SIZE, SIZE) and imgs.dtype == torch.float32 and imgs.device.type == "cpu"
    assert imgs.min() >= -1 and imgs.max() <= 1 and imgs.std() > 0.01
    alone = generate_images(generator, [3], batch_size=1)
    assert torch.allclose(alone[0], imgs[3], atol=1e-5), "a seed's image must not depend on its batch"
    assert not torch.allclose(imgs[0], imgs[1], atol=1e-3)
    truncated = generate_images(generator, [0], truncation_psi=0.0, batch_size=1)
    centre = generate_images(generator, [1], truncation_psi=0.0, batch_size=1)
    assert torch.allclose(truncated, centre, atol=1e-5), "psi 0 renders the mean latent for every seed"


def test_generate_images_rejects_bad_arguments(generator: Generator) -> None:
    with pytest.raises(NadaError, match="batch size"):
        generate_images(generator, [0], batch_size=0)
    with pytest.raises(NadaError, match="truncation"):
        generate_images(generator, [0], truncation_psi=float("nan"))


def test_save_outputs_refuses_existing_without_force(tmp_path: Path) -> None:
    imgs = torch.zeros(2, 3, 8, 8)
    out = tmp_path / "g.png"
    assert save_outputs(imgs, [0, 1], out=out) == [out]
    before = out.read_bytes()
    with pytest.raises(NadaError, match="already exists.*--force"):
        save_outputs(imgs.fill_(1), [0, 1], out=out)
    assert out.read_bytes() == before
    save_outputs(imgs, [0, 1], out=out, force=True)
    assert out.read_bytes() != before
    with pytest.raises(NadaError, match="ending in"):
        save_outputs(imgs, [0, 1], out=tmp_path / "grid.txt")


def test_save_outputs_grid_layout(tmp_path: Path) -> None:
    values = torch.linspace(-1, 1, 10)
    imgs = values[:, None, None, None].expand(10, 3, 4, 4)
    path = save_outputs(imgs, list(range(10)), out=tmp_path / "grid.png")[0]
    px = pixels(path)
    assert px.shape == (2 * (4 + PAD) + PAD, 8 * (4 + PAD) + PAD, 3)  # 8 per row, 2 rows
    for i, v in enumerate(values.tolist()):  # images fill the rows left to right, in seed order
        row, col = divmod(i, 8)
        assert px[PAD + row * (4 + PAD), PAD + col * (4 + PAD), 0] == round((v + 1) * 127.5)
    assert (px[-PAD - 1, -PAD - 1] == 255).all(), "the padding tiles of the last row are white"


# ---------------------------------------------------------------- command line (in process)


def test_cli_grid(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid.png"
    rc = main(["generate", "--checkpoint", str(checkpoint), "--seeds", "0-4", "--out", str(out), "--device", "cpu"])
    assert rc == 0 and out.is_file()
    assert pixels(out).shape == (SIZE + 2 * PAD, 5 * (SIZE + PAD) + PAD, 3)
    assert str(out) in capsys.readouterr().out


def test_cli_out_dir_matches_grid_and_is_deterministic(checkpoint: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    assert (
        main(["generate", "--checkpoint", str(checkpoint), "--seeds", "2,7,9", "--out", str(grid), "--device", "cpu"])
        == 0
    )
    out_dir = tmp_path / "per_seed"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(checkpoint),
                "--seeds",
                "7-9",
                "--out-dir",
                str(out_dir),
                "--batch-size",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out_dir.iterdir()) == ["seed0007.png", "seed0008.png", "seed0009.png"]
    seven = pixels(out_dir / "seed0007.png")
    assert seven.shape == (SIZE, SIZE, 3)
    tile = pixels(grid)[PAD : PAD + SIZE, PAD + (SIZE + PAD) : PAD + (SIZE + PAD) + SIZE]
    assert np.abs(seven.astype(int) - tile.astype(int)).max() <= 1, "seed 7 renders the same alone and in another batch"
    assert not np.array_equal(seven, pixels(out_dir / "seed0008.png"))


def test_cli_refuses_overwrite_then_force(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid.png"
    args = ["generate", "--checkpoint", str(checkpoint), "--seeds", "0", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "5-2"], "bad seed range"),
        (["--seeds", "a-b"], "bad seed list"),
        (["--checkpoint", "missing/model.pt"], "not found"),
        (["--batch-size", "0"], "batch size"),
    ],
)
def test_cli_errors_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = [
        "generate",
        "--checkpoint",
        str(checkpoint),
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "g.png"),
        "--device",
        "cpu",
    ]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("nada generate: error:")
    assert not (tmp_path / "g.png").exists()


# ---------------------------------------------------------------- command line (subprocess)


def test_cli_subprocess_missing_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nada.frontends.cli",
            "generate",
            "--checkpoint",
            str(tmp_path / "nope.pt"),
            "--out",
            str(tmp_path / "g.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "g.png").exists()


def test_cli_precision_bf16_renders_close_to_fp32_and_leaves_the_generator(
    checkpoint: Path, generator: Generator, tmp_path: Path
) -> None:
    paths = {}
    for precision in ("fp32", "bf16"):
        paths[precision] = tmp_path / f"{precision}.png"
        out = ["--out", str(paths[precision])]
        args = ["generate", "--checkpoint", str(checkpoint), "--seeds", "0-3", *out, "--device", "cpu"]
        assert main(args + ["--precision", precision]) == 0
    levels = np.abs(pixels(paths["fp32"]).astype(int) - pixels(paths["bf16"]).astype(int))
    assert 0 < levels.mean() < 2.0, "bf16 rounding shows but stays within two levels on average"
    images = generate_images(generator, [0, 1], precision="bf16")
    assert images.dtype == torch.float32 and next(generator.parameters()).dtype == torch.float32
    with pytest.raises(NadaError, match="unknown precision"):
        generate_images(generator, [0], precision="fp16")
