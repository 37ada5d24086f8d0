"""nada.photos.images.load_image on every kind of awkward file, each built with PIL in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nada.errors import NadaError
from nada.photos.images import MIN_SIDE, load_image, tensor_to_pil


def _gradient(w: int = 48, h: int = 40) -> np.ndarray:
    """A uint8 [h, w, 3] image whose red grows left to right and green top to bottom (orientation is visible)."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 64)], -1).round().astype(np.uint8)


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.int32)


def test_rgb_png_round_trip(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 40, 48) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.abs(_as_uint8(x) - arr).max() <= 1


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is text, not a JPEG")
    with pytest.raises(NadaError, match="not an image"):
        load_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(NadaError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(NadaError, match="folder"):
        load_image(tmp_path)


def test_truncated_file(tmp_path):
    p = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(NadaError, match="truncated or corrupt"):
        load_image(p)


def test_tiny_image_names_the_minimum(tmp_path):
    Image.fromarray(_gradient(20, 40)).save(tmp_path / "tiny.png")
    with pytest.raises(NadaError, match=f"at least {MIN_SIDE} pixels") as e:
        load_image(tmp_path / "tiny.png")
    assert "20x40" in str(e.value)


def test_huge_image_is_downscaled_with_a_message(tmp_path):
    Image.fromarray(_gradient(5000, 40)).save(tmp_path / "wide.png")
    notes: list[str] = []
    x = load_image(tmp_path / "wide.png", log=notes.append)
    assert x.shape == (1, 3, 33, 4096)
    assert len(notes) == 1 and "downscaled to 4096x33" in notes[0]
    # the default reports through warnings
    with pytest.warns(UserWarning, match="downscaled"):
        load_image(tmp_path / "wide.png", max_side=1000)


def test_huge_jpeg_is_downscaled(tmp_path):
    Image.fromarray(_gradient(600, 300)).save(tmp_path / "big.jpg", quality=95)
    x = load_image(tmp_path / "big.jpg", max_side=128, log=lambda m: None)
    assert x.shape == (1, 3, 64, 128)
    # red still grows left to right after the reduced decode
    assert float(x[0, 0, :, -4:].mean()) > float(x[0, 0, :, :4].mean()) + 1


def test_grayscale_gives_three_equal_channels(tmp_path):
    gray = _gradient()[..., 1]
    Image.fromarray(gray).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (1, 3, 40, 48)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])
    assert np.abs(_as_uint8(x)[..., 0] - gray).max() <= 1


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = load_image(tmp_path / "g16.png")
    assert x.shape == (1, 3, 40, 48)
    assert float(x.min()) == pytest.approx(-1, abs=1e-4) and float(x.max()) == pytest.approx(1, abs=1e-4)
    # the midpoint stays in the middle: the 16 bits were divided by 65535, not cut at 255
    assert float(x[0, 0].mean()) == pytest.approx(0, abs=0.02)


def test_cmyk_jpeg(tmp_path):
    rgb = Image.fromarray(_gradient())
    rgb.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    x = load_image(tmp_path / "c.jpg")
    assert x.shape == (1, 3, 40, 48)
    assert np.abs(_as_uint8(x) - np.asarray(rgb).astype(np.int32)).mean() < 6


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((40, 48, 4), np.uint8)
    arr[..., 0] = 255  # red ...
    arr[:, :24, 3] = 255  # ... opaque on the left, fully transparent on the right
    arr[:, 24:, 3] = 0
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert torch.allclose(x[0, :, :, :24], torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1))
    assert torch.allclose(x[0, :, :, 24:], torch.ones(3, 40, 24))


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    img.paste(1, (0, 0, 20, 40))
    img.info["transparency"] = 0  # palette entry 0 (blue) is transparent
    img.save(tmp_path / "p.png", transparency=0)
    x = load_image(tmp_path / "p.png")
    assert torch.allclose(x[0, :, :, :20], torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1))
    assert torch.allclose(x[0, :, :, 20:], torch.ones(3, 40, 20))


@pytest.mark.parametrize("orientation, expected_shape", [(3, (40, 48)), (6, (48, 40)), (8, (48, 40))])
def test_exif_rotation_is_applied(tmp_path, orientation, expected_shape):
    arr = _gradient()  # 48 wide, 40 high: red grows to the right
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "r.jpg")
    assert x.shape[2:] == expected_shape
    upright = np.asarray(img.transpose({3: Image.ROTATE_180, 6: Image.ROTATE_270, 8: Image.ROTATE_90}[orientation]))
    assert np.abs(_as_uint8(x) - upright.astype(np.int32)).mean() < 4


def test_tensor_to_pil_round_trip():
    x = torch.rand(1, 3, 8, 10) * 2 - 1
    img = tensor_to_pil(x)
    assert img.size == (10, 8) and img.mode == "RGB"
    assert (
        np.abs(np.asarray(img).astype(np.float32) / 127.5 - 1 - x[0].permute(1, 2, 0).numpy()).max() < 1 / 127.5 + 1e-6
    )
