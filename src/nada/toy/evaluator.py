"""An independent judge of toy-world images: a small CNN that classifies the style and every attribute.

It is used for metrics only, never by adaptation, and deliberately differs from the toy CLIP (a
ViT trained contrastively on captions): a plain convolutional network trained with labels, so
that an adapted generator cannot score well by exploiting the CLIP that guided it.

``load_evaluator()`` loads the shipped weights (``nada/assets/toy/evaluator.pt``). Then
``predict(img)`` gives class indices per key ("style" and every key of ``render.ATTRIBUTES``; the
names are in ``evaluator.classes``; the style answer may be ``REJECT``, "none": the judge was trained
to put global filters of photos, blends of two styles and nothing-like images there, see
``nada.toy.filters``) and ``embed(img)`` gives L2-normalised features for diversity
measures. Images are [N, 3, 64, 64] in [-1, 1] (other sizes are resized to 64x64).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nada.dataclass_dict import strict_from_dict
from nada.errors import NadaError, one_line
from nada.io import atomic_torch_save
from nada.toy import render as R
from nada.weights.safe_load import torch_load

WEIGHTS_FILE = "evaluator.pt"
IMAGE_SIZE = 64
REJECT = "none"  # the style answer for images in no style: filtered photos, blends of two styles


def class_names() -> dict[str, tuple[str, ...]]:
    """Key -> class names: "style" first (every toy style, then the reject answer), then every attribute."""

    return {"style": (*R.STYLES, REJECT), **R.ATTRIBUTES}


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture of the evaluator CNN."""

    channels: tuple[int, ...] = (16, 32, 64, 128)  # stem width, then one stride-2 stage per further entry
    embed_dim: int = 128

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvaluatorConfig":
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        cfg = strict_from_dict(cls, d, "evaluator config keys", "the weights come from another version of nada")
        return cls(channels=tuple(int(c) for c in cfg.channels), embed_dim=int(cfg.embed_dim))

    def to_dict(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "embed_dim": self.embed_dim}


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Evaluator(nn.Module):
    """CNN: a stem at 64x64, stride-2 stages, global average pooling, an embedding and one linear head per key."""

    def __init__(
        self, config: EvaluatorConfig = EvaluatorConfig(), classes: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.classes = dict(classes) if classes is not None else class_names()
        c = config.channels
        layers: list[nn.Module] = [_conv_bn(3, c[0])]
        for c_in, c_out in zip(c[:-1], c[1:]):
            layers += [_conv_bn(c_in, c_out, stride=2), _conv_bn(c_out, c_out)]
        self.body = nn.Sequential(*layers)
        self.embedding = nn.Linear(c[-1], config.embed_dim)
        self.heads = nn.ModuleDict({k: nn.Linear(config.embed_dim, len(v)) for k, v in self.classes.items()})

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding [N, E] of images [N, 3, H, W] in [-1, 1]."""
        assert img.ndim == 4 and img.shape[1] == 3, f"expected images [N,3,H,W], got {tuple(img.shape)}"
        # Judge what is shown: generators overshoot [-1, 1], and every saved image clips those pixels.
        img = img.clamp(-1, 1)
        if img.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            img = F.interpolate(
                img, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True
            )
        x = self.body(img.float())
        return self.embedding(x.mean((2, 3)))

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per key: {key: [N, n_classes]} for images [N, 3, H, W] in [-1, 1]."""
        h = F.relu(self.features(img))
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted class index per key: {key: LongTensor [N]} (names in ``self.classes[key]``)."""
        was = self.training
        self.eval()
        out = {k: v.argmax(1) for k, v in self(img).items()}
        self.train(was)
        return out

    @torch.no_grad()
    def style_probabilities(self, img: torch.Tensor) -> torch.Tensor:
        """Softmax over ``self.classes["style"]`` [N, S] for images [N, 3, H, W] in [-1, 1]."""
        was = self.training
        self.eval()
        out = self(img)["style"].softmax(1)
        self.train(was)
        return out

    @torch.no_grad()
    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding [N, E] of images [N, 3, H, W] in [-1, 1], for diversity measures."""
        was = self.training
        self.eval()
        out = F.normalize(self.features(img), dim=-1)
        self.train(was)
        return out


def default_weights_path() -> Path:
    """Where the shipped evaluator weights live inside the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "toy" / WEIGHTS_FILE


def save_evaluator(path: str | os.PathLike, model: Evaluator, metadata: dict[str, Any]) -> Path:
    """Atomically write config, class names, weights and metadata (plain types and tensors only)."""

    payload = {
        "config": model.config.to_dict(),
        "classes": {k: list(v) for k, v in model.classes.items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    return atomic_torch_save(payload, path)


def load_evaluator(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Evaluator:
    """The trained evaluator in eval mode (default: the weights shipped with nada)."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise NadaError(
            f"evaluator weights {path} not found: train them with `python -m nada.toy.evaluator_train` "
            "or reinstall nada"
        )
    payload = torch_load(path, what="evaluator weights")
    try:
        model = Evaluator(
            EvaluatorConfig.from_dict(payload["config"]), {k: tuple(v) for k, v in payload["classes"].items()}
        )
        model.load_state_dict(payload["state_dict"])
    except Exception as e:
        raise NadaError(
            f"evaluator weights {path} do not fit the architecture ({one_line(e, typed=True)}): "
            "train them again or reinstall nada"
        ) from None
    model.metadata = payload.get("metadata", {})
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def accuracy(
    model: Evaluator, images: torch.Tensor, labels: dict[str, torch.Tensor], batch_size: int = 256
) -> dict[str, float]:
    """Fraction of correct predictions per key, for images [N,3,64,64] in [-1,1] and true indices {key: [N]}."""
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in labels}
    for i in range(0, len(images), batch_size):
        out = model.predict(images[i : i + batch_size])
        for k in labels:
            preds[k].append(out[k].cpu())
    return {k: (torch.cat(preds[k]) == labels[k].cpu()).float().mean().item() for k in labels}


@torch.no_grad()
def predict_all(evaluator: Evaluator, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Evaluator class indices {key: LongTensor [N]} (CPU) for images [N, 3, H, W] in [-1, 1]."""
    chunks = [evaluator.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([c[k].cpu() for c in chunks]) for k in chunks[0]}


@torch.no_grad()
def embed_all(evaluator: Evaluator, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """L2-normalised evaluator embeddings [N, E] (CPU) of images [N, 3, H, W] in [-1, 1]."""
    return torch.cat([evaluator.embed(images[i : i + batch_size]).cpu() for i in range(0, len(images), batch_size)])


def fresh_renders(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n faces in every style in turn (face i in style i mod S): images [n,3,64,64] in [-1,1] and labels per key."""

    params = R.sample_params(n, seed=seed)
    styles = [R.STYLES[i % len(R.STYLES)] for i in range(n)]
    images = R.to_tensor(R.render_mixed(params, styles, seed=seed))
    labels = {"style": torch.tensor([R.STYLES.index(s) for s in styles])}
    labels.update({k: torch.from_numpy(v) for k, v in params.labels().items()})
    return images, labels
