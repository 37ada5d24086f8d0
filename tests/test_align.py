"""FFHQ alignment: the quad math on synthetic landmarks, the resampling, and the detector's failure modes."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nada.errors import NadaError
from nada.photos.align import (
    FacePoints,
    align_face,
    alignment_for_base,
    center_square,
    ffhq_quad,
    load_detector,
    warp_quad,
)

SIZE = 64
# Landmarks in the aligned 64x64 frame whose FFHQ square is exactly that frame: eye distance 16
# (square side 4x16 = 64), eye-to-mouth 16, centre (31.5, 31.5) = eye midpoint + 0.1 * eye-to-mouth.
ALIGNED = FacePoints(eye_left=(23.5, 29.9), eye_right=(39.5, 29.9), mouth_left=(25.5, 45.9), mouth_right=(37.5, 45.9))
FRAME = np.array([[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])


def _similarity(angle: float, scale: float, shift: tuple[float, float]):
    """Map aligned-frame points to photo points: rotate by `angle` and scale about the frame centre, then shift."""
    c, s = math.cos(angle), math.sin(angle)
    R = scale * np.array([[c, -s], [s, c]])
    centre = np.array([31.5, 31.5])
    return lambda p: (np.asarray(p, dtype=np.float64) - centre) @ R.T + centre + np.array(shift)


def _map_points(points: FacePoints, f) -> FacePoints:
    return FacePoints(
        *(tuple(f(np.array(p))) for p in (points.eye_left, points.eye_right, points.mouth_left, points.mouth_right))
    )


def _landmarks_68(p: FacePoints) -> np.ndarray:
    lm = np.random.default_rng(0).uniform(0, 10, (68, 2))
    lm[36:42] = p.eye_left
    lm[42:48] = p.eye_right
    lm[48] = p.mouth_left
    lm[54] = p.mouth_right
    return lm


def _template() -> torch.Tensor:
    """A smooth aligned 'face' [1, 3, 64, 64] in [-1, 1] without symmetry, so a wrong rotation shows."""
    t = torch.linspace(0, 1, SIZE)
    y, x = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([torch.sin(3 * x + 1) * 0.8, torch.cos(2 * y - 0.5 * x) * 0.8, (x * y) * 1.6 - 0.8])
    return img[None]


def _photo_from_template(A: torch.Tensor, f_inv, shape: tuple[int, int]) -> torch.Tensor:
    """Render the template into a photo of `shape`: each photo pixel samples A at f_inv(pixel)."""
    h, w = shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = f_inv(np.stack([xs.numpy(), ys.numpy()], -1).reshape(-1, 2)).reshape(h, w, 2)
    grid = torch.from_numpy((pts + 0.5) / SIZE * 2 - 1).float()
    return F.grid_sample(A, grid[None], mode="bilinear", padding_mode="border", align_corners=False)


def test_quad_of_an_upright_face_is_exact():
    p = FacePoints(eye_left=(40, 50), eye_right=(60, 50), mouth_left=(42, 70), mouth_right=(58, 70))
    # x = eye-to-eye (20, 0) + turned eye-to-mouth (20, 0) -> direction (1, 0), length max(2*20, 1.8*20) = 40
    np.testing.assert_allclose(ffhq_quad(p), [[10, 12], [10, 92], [90, 92], [90, 12]], atol=1e-9)
    np.testing.assert_allclose(ffhq_quad(ALIGNED), FRAME, atol=1e-9)


def test_quad_size_follows_the_longer_face_dimension():
    # a long face: eye-to-mouth 40 dominates (1.8 * 40 = 72 > 2 * 20)
    p = FacePoints(eye_left=(40, 50), eye_right=(60, 50), mouth_left=(45, 90), mouth_right=(55, 90))
    quad = ffhq_quad(p)
    assert np.linalg.norm(quad[3] - quad[0]) == pytest.approx(2 * 72)
    assert np.linalg.norm(quad[1] - quad[0]) == pytest.approx(2 * 72)


@pytest.mark.parametrize(
    "angle, scale, shift", [(0.3, 1.0, (0, 0)), (-0.7, 2.5, (100, -40)), (math.pi / 2, 0.5, (3, 7))]
)
def test_quad_is_similarity_equivariant(angle, scale, shift):
    f = _similarity(angle, scale, shift)
    base = FacePoints(eye_left=(20, 31), eye_right=(44, 29), mouth_left=(24, 50), mouth_right=(41, 52))
    np.testing.assert_allclose(ffhq_quad(_map_points(base, f)), f(ffhq_quad(base)), atol=1e-9)


def test_quad_corners_form_a_square_with_the_face_upright():
    p = FacePoints(eye_left=(100, 80), eye_right=(140, 95), mouth_left=(95, 150), mouth_right=(125, 160))
    q = ffhq_quad(p)
    sides = [np.linalg.norm(q[(i + 1) % 4] - q[i]) for i in range(4)]
    np.testing.assert_allclose(sides, sides[0], rtol=1e-9)
    assert np.dot(q[1] - q[0], q[3] - q[0]) == pytest.approx(0, abs=1e-6)
    # the "down" side (top-left -> bottom-left) points from the eyes towards the mouth
    assert np.dot(q[1] - q[0], np.array(p.mouth_left) - np.array(p.eye_left)) > 0


def test_from_68_uses_eye_means_and_mouth_corners():
    lm = np.zeros((68, 2))
    lm[36:42] = [[0, 0], [2, 0], [4, 0], [0, 6], [2, 6], [4, 6]]
    lm[42:48] = 10
    lm[48], lm[54] = (1, 20), (9, 21)
    p = FacePoints.from_68(lm)
    assert p.eye_left == (2.0, 3.0) and p.eye_right == (10.0, 10.0)
    assert p.mouth_left == (1.0, 20.0) and p.mouth_right == (9.0, 21.0)


def test_degenerate_landmarks_are_refused():
    with pytest.raises(NadaError, match="degenerate"):
        ffhq_quad(FacePoints((5, 5), (5, 5), (5, 5), (5, 5)))


@pytest.mark.parametrize("angle, scale, shift", [(0.0, 1.0, (20, 30)), (0.35, 2.0, (60, 50)), (-1.2, 3.5, (120, 110))])
def test_align_recovers_a_rotated_scaled_face(angle, scale, shift):
    A = _template()
    f = _similarity(angle, scale, shift)
    c, s = math.cos(angle), math.sin(angle)
    R_inv = np.array([[c, s], [-s, c]]) / scale
    centre, t = np.array([31.5, 31.5]), np.array(shift)
    f_inv = lambda q: (q - centre - t) @ R_inv.T + centre  # noqa: E731
    photo = _photo_from_template(A, f_inv, (int(64 * scale + 2 * shift[1] + 40), int(64 * scale + 2 * shift[0] + 40)))
    lm = _landmarks_68(_map_points(ALIGNED, f))
    out = align_face(photo, SIZE, "ffhq", detector=lambda rgb: [lm])
    assert out.image.shape == (1, 3, SIZE, SIZE) and out.faces_found == 1
    np.testing.assert_allclose(out.quad, f(FRAME), atol=1e-6)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # resampling softens the outermost pixels
    mse = float((out.image[inner] - A[inner]).pow(2).mean())
    # 8-bit quantisation happens nowhere here, so only the double bilinear resampling remains
    assert mse < 1e-5, mse


def test_face_leaving_the_photo_is_padded_smoothly():
    A = _template()
    photo = A[:, :, :, :40]  # the right third of the face is missing
    out = warp_quad(photo, FRAME, SIZE)
    assert out.shape == (1, 3, SIZE, SIZE) and bool(torch.isfinite(out).all())
    np.testing.assert_allclose(out[..., 2:30].numpy(), A[..., 2:30].numpy(), atol=0.06)
    # the padded part is filled (no black), and without hard steps between columns
    assert float(out[..., 44:].abs().max()) <= 1.0
    steps = (out[..., 41:] - out[..., 40:-1]).abs().max()
    assert float(steps) < 0.2


def test_no_face_found_is_a_clear_error():
    with pytest.raises(NadaError, match="no face found in photo.jpg"):
        align_face(torch.zeros(1, 3, 80, 80), SIZE, "ffhq", detector=lambda rgb: [], name="photo.jpg")


def test_several_faces_use_the_largest_and_say_so():
    lm = _landmarks_68(ALIGNED)
    notes: list[str] = []
    out = align_face(_template(), SIZE, "ffhq", detector=lambda rgb: [lm, lm * 0.5], log=notes.append)
    assert out.faces_found == 2 and "2 faces" in notes[0]
    np.testing.assert_allclose(out.quad, FRAME, atol=1e-9)


def test_align_none_is_a_centre_square():
    img = torch.rand(1, 3, 80, 120) * 2 - 1
    out = align_face(img, 40, "none")
    assert out.quad is None and out.image.shape == (1, 3, 40, 40)
    ref = F.avg_pool2d(img[:, :, :, 20:100], 2)
    assert float((out.image - ref).abs().mean()) < 0.15
    assert torch.equal(center_square(img[:, :, :40, :40], 40), img[:, :, :40, :40])
    with pytest.raises(NadaError, match="unknown alignment"):
        align_face(img, 40, "dlib")


def test_alignment_for_base():
    assert alignment_for_base("toy") == "none"
    assert alignment_for_base("ffhq") == "ffhq"
    assert alignment_for_base("run/generator.pt", {"base_model": "toy"}) == "none"
    assert alignment_for_base("toy", {"alignment": "ffhq"}) == "ffhq"
    assert alignment_for_base("my.pt", {"alignment": "none"}) == "none"


def test_missing_dlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(NadaError, match=r"nada\[faces\]"):
        load_detector()


def test_real_detector_finds_no_face_in_noise():
    pytest.importorskip("dlib", reason="the faces extra (dlib-bin) is not installed")
    try:
        detector = load_detector()
    except NadaError as e:
        pytest.skip(str(e))
    noise = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(NadaError, match="no face found"):
        align_face(noise, SIZE, "ffhq", detector=detector)
