"""Face detection and FFHQ-style alignment: find the eyes and mouth, cut the oriented square FFHQ was cut with.

StyleGAN2's FFHQ models only produce faces at one position, size and roll angle: the one fixed by
the FFHQ dataset script, which takes dlib's 68 facial landmarks, builds an oriented square from the
eye centres and mouth corners (`ffhq_quad`) and resamples it to the model's resolution, filling
whatever lies outside the photo with blurred reflections (`warp_quad`). A photo must be aligned the
same way before it can be inverted; this module reimplements those steps in PyTorch.

Landmark detector: dlib (package ``dlib-bin``, prebuilt wheels of dlib for Linux, macOS and Windows,
released regularly) with its HOG face detector and the 68-point shape predictor from the package
``face-recognition-models``, which ships the predictor file inside the wheel, so nothing is
downloaded at run time. This is the very detector and landmark model the FFHQ dataset was aligned
with, so aligned photos match the training distribution as closely as possible. MediaPipe was
considered first, but its current releases no longer bundle the face landmark model (it must be
downloaded at run time) and the last release that did needs numpy < 2. Both packages form the
optional extra ``nada[faces]``; without them, `load_detector` says how to install them, and
``--align none`` works for images that are already aligned (a base's profile can say its photos are).

Coordinates: landmarks and quads are (x, y) in pixels of the input image, with pixel k's centre at k.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nada.errors import NadaError
from nada.io import to_uint8_image
from nada.profiles import profile_for
from nada.weights.download import cache_dir

ALIGN_MODES = ("auto", "ffhq", "none")
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DETECT_MAX_SIDE = 1024  # face detection runs on a copy at most this large (HOG is slow on big photos)
FACES_EXTRA_HINT = "pip install 'nada[faces]' (installs dlib-bin and face-recognition-models)"


# ---------------------------------------------------------------- landmarks and the FFHQ quad


@dataclass(frozen=True)
class FacePoints:
    """The four points the FFHQ alignment needs, (x, y) in image pixels; 'left' means left in the image."""

    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]

    @classmethod
    def from_68(cls, lm: np.ndarray) -> "FacePoints":
        """From dlib's 68 landmarks [68, 2]: eye centres are the means of points 36-41 and 42-47, mouth corners 48 and
        54."""
        lm = np.asarray(lm, dtype=np.float64)
        assert lm.shape == (68, 2), f"expected 68 landmarks [68, 2], got {lm.shape}"
        pt = lambda v: (float(v[0]), float(v[1]))  # noqa: E731
        return cls(pt(lm[36:42].mean(0)), pt(lm[42:48].mean(0)), pt(lm[48]), pt(lm[54]))


def ffhq_quad(p: FacePoints) -> np.ndarray:
    """The oriented crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) the FFHQ script derives from
    `p`."""
    eye_l, eye_r = np.array(p.eye_left), np.array(p.eye_right)
    mouth_l, mouth_r = np.array(p.mouth_left), np.array(p.mouth_right)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    # The horizontal axis blends the eye line with the eye-to-mouth line turned by -90 degrees (both
    # point right on an upright face), so a tilted head is straightened using both cues; its length
    # follows the larger face dimension.
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = math.hypot(*x)
    if not norm > 1e-6:
        raise NadaError(
            "the detected landmarks are degenerate (eyes and mouth coincide): use a clearer photo of the face"
        )
    x = x / norm * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # x turned by +90 degrees: "down" in image coordinates
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


# ---------------------------------------------------------------- resampling the quad


def _reflect_index(n: int, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    """Indices lo .. hi-1 folded into 0 .. n-1 by mirror reflection (numpy's 'reflect'), for any amount of padding."""
    i = torch.arange(lo, hi, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = torch.remainder(i, period)
    return torch.where(m < n, m, period - m)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflected borders."""
    if sigma < 0.3:
        return x
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _pad_and_blend(img: torch.Tensor, pad: tuple[int, int, int, int], qsize: float) -> torch.Tensor:
    """Mirror-pad [1, 3, H, W] by (left, top, right, bottom) and fade the padding to a blur, then to the median colour.

    As in the FFHQ script: reflected pixels near the photo stay sharp-ish, further out they blur and
    finally become the image's median colour, so the generator never sees hard mirrored edges.
    """
    left, top, right, bottom = pad
    assert min(pad) >= 1, f"every side needs padding, got {pad}"
    _, _, h, w = img.shape
    rows = _reflect_index(h, -top, h + bottom, img.device)
    cols = _reflect_index(w, -left, w + right, img.device)
    out = img.index_select(2, rows).index_select(3, cols)
    H, W = out.shape[-2:]
    y = torch.arange(H, dtype=img.dtype, device=img.device).view(H, 1)
    x = torch.arange(W, dtype=img.dtype, device=img.device).view(1, W)
    fx = torch.minimum(x / left, (W - 1 - x) / right)  # distance into the photo, in units of the padding
    fy = torch.minimum(y / top, (H - 1 - y) / bottom)
    mask = torch.maximum(1 - fx, 1 - fy)  # 1 at the outer border, <= 0 inside the photo
    out = out + (_gaussian_blur(out, qsize * 0.02) - out) * (mask * 3 + 1).clamp(0, 1)
    median = out.flatten(2).median(dim=2).values.view(1, -1, 1, 1)
    return out + (median - out) * mask.clamp(0, 1)


def warp_quad(img: torch.Tensor, quad: np.ndarray, size: int) -> torch.Tensor:
    """Resample the oriented square `quad` [4, 2] of img [1, 3, H, W] in [-1, 1] to [1, 3, size, size] (antialiased).

    Follows the FFHQ script: shrink the photo when the face is much larger than the output, pad with
    blended reflections where the square leaves the photo, then sample the square (here bilinearly at
    up to 4x the output resolution, averaged down, instead of the script's 4096-pixel detour).
    """
    assert img.ndim == 4 and img.shape[:2] == (1, 3), f"expected one image [1, 3, H, W], got {tuple(img.shape)}"
    quad = np.asarray(quad, dtype=np.float64).copy()
    assert quad.shape == (4, 2), f"quad must be [4, 2], got {quad.shape}"
    img = img.float()
    qsize = float(np.linalg.norm(quad[3] - quad[0]))  # side length of the square

    # 1. Shrink: resampling a huge face straight to a small output would alias.
    shrink = int(math.floor(qsize / size * 0.5))
    if shrink > 1:
        h, w = img.shape[-2:]
        new_h, new_w = max(1, round(h / shrink)), max(1, round(w / shrink))
        img = F.interpolate(img, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        quad = (quad + 0.5) * np.array([new_w / w, new_h / h]) - 0.5
        qsize /= shrink

    # 2. Crop to the square's bounding box plus a border, 3. pad where that box leaves the photo.
    border = max(int(round(qsize * 0.1)), 3)
    h, w = img.shape[-2:]
    x0, y0 = int(math.floor(quad[:, 0].min())) - border, int(math.floor(quad[:, 1].min())) - border
    x1, y1 = int(math.ceil(quad[:, 0].max())) + border, int(math.ceil(quad[:, 1].max())) + border
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        raise NadaError("the face square lies outside the image: the landmarks do not belong to this image")
    img = img[:, :, cy0:cy1, cx0:cx1]
    quad -= np.array([cx0, cy0])
    pad = [max(cx0 - x0, 0), max(cy0 - y0, 0), max(x1 - cx1, 0), max(y1 - cy1, 0)]
    if max(pad) > border - 4:
        pad = [max(p, int(round(qsize * 0.3)), 1) for p in pad]  # like FFHQ: all four sides
        img = _pad_and_blend(img, (pad[0], pad[1], pad[2], pad[3]), qsize)
        quad += np.array([pad[0], pad[1]])

    # 4. Sample the square: output pixel centres (u, v) in (0, 1) map bilinearly onto the quad.
    ss = int(min(4, max(1, math.ceil(qsize / size))))
    n = size * ss
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    v, u = torch.meshgrid(t, t, indexing="ij")
    q = torch.from_numpy(quad)
    pts = (
        q[0] * ((1 - u) * (1 - v))[..., None]
        + q[1] * ((1 - u) * v)[..., None]
        + q[2] * (u * v)[..., None]
        + q[3] * (u * (1 - v))[..., None]
    )  # [n, n, 2] pixel-index coordinates
    h, w = img.shape[-2:]
    grid = torch.stack([(pts[..., 0] + 0.5) / w * 2 - 1, (pts[..., 1] + 0.5) / h * 2 - 1], dim=-1)
    out = F.grid_sample(img, grid[None].to(img), mode="bilinear", padding_mode="border", align_corners=False)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    return out.clamp(-1, 1)


def center_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centred square crop of img [1, 3, H, W] resized (antialiased) to [1, 3, size, size]: alignment 'none'."""
    assert img.ndim == 4 and img.shape[1] == 3, f"expected images [N, 3, H, W], got {tuple(img.shape)}"
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[:, :, top : top + s, left : left + s].float()
    if s != size:
        img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return img.clamp(-1, 1)


# ---------------------------------------------------------------- the landmark detector


def _predictor_path() -> Path | None:
    """The 68-point predictor file: hand-placed in the nada cache, else inside face-recognition-models."""
    placed = cache_dir() / "weights" / PREDICTOR_FILE
    if placed.is_file():
        return placed
    # find_spec locates the package without importing it: its __init__ needs pkg_resources,
    # which recent setuptools no longer provides, while the data files are all nada needs.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "models" / PREDICTOR_FILE
            if candidate.is_file():
                return candidate
    return None


class LandmarkDetector:
    """dlib's HOG face detector plus its 68-point shape predictor: uint8 [H, W, 3] -> landmarks [68, 2] per face."""

    def __init__(self, dlib: Any, predictor_path: Path, upsample: int = 1) -> None:
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self.upsample = upsample

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks [68, 2] (x, y pixels of `rgb`) of every face found, largest face first."""
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, "expected uint8 [H, W, 3]"
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = rgb if scale == 1.0 else _resize_uint8(rgb, scale)
        rects = sorted(self.detector(small, self.upsample), key=lambda r: -r.area())
        faces = []
        for r in rects:
            # Landmarks are predicted on the full-resolution photo for precision.
            full = self.dlib.rectangle(
                int(r.left() / scale), int(r.top() / scale), int(r.right() / scale), int(r.bottom() / scale)
            )
            shape = self.predictor(rgb, full)
            faces.append(np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64))
        return faces


def _resize_uint8(rgb: np.ndarray, scale: float) -> np.ndarray:

    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))


def load_detector(upsample: int = 1) -> LandmarkDetector:
    """The dlib landmark detector; NadaError naming the install command when the `faces` extra is missing."""
    try:
        import dlib
    except ImportError:
        raise NadaError(
            f"face alignment needs dlib, which is not installed: {FACES_EXTRA_HINT}; "
            "or pass --align none for images that are already aligned"
        ) from None
    path = _predictor_path()
    if path is None:
        raise NadaError(
            f"face alignment needs dlib's landmark model {PREDICTOR_FILE}, which is not installed: {FACES_EXTRA_HINT}"
        )
    try:
        return LandmarkDetector(dlib, path, upsample)
    except RuntimeError as e:
        raise NadaError(
            f"dlib could not read the landmark model {path} ({e}): reinstall face-recognition-models"
        ) from None


# ---------------------------------------------------------------- public entry points


@dataclass(frozen=True)
class AlignedFace:
    """An aligned image [1, 3, size, size] in [-1, 1] with the quad it was cut from (None for alignment 'none')."""

    image: torch.Tensor
    quad: np.ndarray | None
    faces_found: int


def align_face(
    img: torch.Tensor,
    size: int,
    mode: str = "ffhq",
    detector: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    log: Callable[[str], None] | None = None,
    name: str = "the image",
) -> AlignedFace:
    """Align img [1, 3, H, W] in [-1, 1] to [1, 3, size, size]: 'ffhq' (detect + FFHQ crop) or 'none' (centre
    square)."""
    if mode == "none":
        return AlignedFace(center_square(img, size), None, 0)
    if mode != "ffhq":
        raise NadaError(f"unknown alignment {mode!r}: use ffhq or none")
    detector = detector if detector is not None else load_detector()

    faces = detector(np.ascontiguousarray(to_uint8_image(img)[0].numpy()))
    if not faces:
        raise NadaError(
            f"no face found in {name}: use a photo with a clearly visible, roughly frontal face, "
            "or pass --align none if the image is already an aligned face crop"
        )
    if len(faces) > 1 and log is not None:
        log(f"{len(faces)} faces found in {name}; using the largest")
    quad = ffhq_quad(FacePoints.from_68(faces[0]))
    return AlignedFace(warp_quad(img, quad, size), quad, len(faces))


def alignment_for_base(base: str, metadata: Mapping[str, Any] | None = None) -> str:
    """'ffhq' or 'none' for images inverted into `base`: metadata 'alignment' if given, else the base profile's."""
    metadata = metadata or {}
    declared = metadata.get("alignment")
    if declared in ("ffhq", "none"):
        return str(declared)
    profile = profile_for(str(base))
    for key in ("base", "base_model"):
        if profile is None and metadata.get(key):
            profile = profile_for(str(metadata[key]))
    return profile.alignment if profile is not None else "ffhq"
