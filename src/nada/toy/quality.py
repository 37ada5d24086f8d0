"""Quality of a toy-world adaptation, judged by the independent evaluator (never by the guiding CLIP).

For the same latents z, the frozen generator G_frozen(z) and the adapted one G_train(z) are rendered
and the evaluator (`nada.toy.evaluator`) classifies both. Three numbers say how good the adaptation is:

- **target rate**: fraction of G_train(z) that the evaluator puts in the target (the target style, or
  the target value of an edited attribute such as ``mouth=smiling``). The same rate on G_frozen(z) is
  the baseline (a photo generator should almost never already be a sketch).
- **content kept**: fraction of z whose other properties survive the adaptation: per attribute, the
  evaluator's class for G_train(z) equals its class for G_frozen(z). "overall" requires every compared
  attribute to agree at once; "mean" averages the per-attribute rates. A style target compares every
  attribute; an attribute edit compares the other attributes and the style (an edit must not restyle).
- **diversity ratio**: mean pairwise distance of the evaluator's L2-normalised embeddings of
  G_train(z), over the same for G_frozen(z). Near 1: the adapted images are as varied as before;
  well below 1: mode collapse (every z gives nearly the same image).

Every function is pure (no cached state); images are [N, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from nada.errors import NadaError
from nada.toy.evaluator import Evaluator, class_names, embed_all, load_evaluator, predict_all
from nada.toy.judge import paired_fidelity

if TYPE_CHECKING:
    from nada.generator.networks import Generator

STYLE_KEY = "style"
REJECT = "none"  # nada.toy.evaluator.REJECT: the judge's style answer for images in no style


@dataclass(frozen=True)
class QualityTarget:
    """What an adaptation should produce: ``key`` "style" with a style name, or an attribute and its value."""

    key: str
    value: str

    @property
    def is_style(self) -> bool:
        return self.key == STYLE_KEY

    def __str__(self) -> str:
        return self.value if self.is_style else f"{self.key}={self.value}"


def parse_target(spec: str | QualityTarget) -> QualityTarget:
    """A target from "sketch", "pixel art" (styles) or "mouth=smiling" (attribute=value); NadaError if unknown."""
    if isinstance(spec, QualityTarget):
        target = spec
    else:
        key, sep, value = str(spec).partition("=")
        target = QualityTarget(key.strip(), value.strip()) if sep else QualityTarget(STYLE_KEY, key.strip())

    names = class_names()
    if target.key not in names:
        raise NadaError(
            f"unknown toy attribute {target.key!r} in target {spec!r}: use a style ({', '.join(names[STYLE_KEY])}) "
            f"or ATTRIBUTE=VALUE with one of {', '.join(k for k in names if k != STYLE_KEY)}"
        )
    if target.value not in names[target.key] or (target.is_style and target.value == REJECT):
        known = [v for v in names[target.key] if v != REJECT]
        raise NadaError(f"unknown value {target.value!r} for {target.key}: use one of {', '.join(known)}")
    return target


def compared_keys(target: QualityTarget, keys: list[str] | tuple[str, ...]) -> list[str]:
    """The evaluator keys whose agreement counts as content kept: every key except the one the target changes."""
    return [k for k in keys if k != target.key]


def target_rate(preds: dict[str, torch.Tensor], target: QualityTarget, classes: dict[str, tuple[str, ...]]) -> float:
    """Fraction of images whose predicted class for ``target.key`` is ``target.value`` (preds {key: [N]})."""
    wanted = classes[target.key].index(target.value)
    return float((preds[target.key] == wanted).float().mean())


def reject_rate(preds: dict[str, torch.Tensor], classes: dict[str, tuple[str, ...]]) -> float:
    """Share of images whose style the judge answers with "none" (0 for a judge without that answer)."""
    if REJECT not in classes[STYLE_KEY]:
        return 0.0
    return float((preds[STYLE_KEY] == classes[STYLE_KEY].index(REJECT)).float().mean())


def content_kept(
    preds_frozen: dict[str, torch.Tensor], preds_train: dict[str, torch.Tensor], keys: list[str]
) -> dict[str, float]:
    """Per key the fraction of images whose class did not change, plus "overall" (all keys at once) and "mean"."""
    assert keys, "content_kept needs at least one key to compare"
    same = {k: preds_frozen[k] == preds_train[k] for k in keys}
    out = {k: float(v.float().mean()) for k, v in same.items()}
    out["overall"] = float(torch.stack(list(same.values())).all(0).float().mean())
    out["mean"] = sum(out[k] for k in keys) / len(keys)
    return out


def mean_pairwise_distance(emb: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs i < j of embeddings [N, E] (N >= 2)."""
    assert emb.ndim == 2 and emb.shape[0] >= 2, f"need embeddings [N>=2, E], got {tuple(emb.shape)}"
    d = torch.cdist(emb.double(), emb.double())
    n = emb.shape[0]
    return float(d.sum() / (n * (n - 1)))  # the diagonal is 0; every pair is counted twice over n(n-1)


def diversity_ratio(emb_frozen: torch.Tensor, emb_train: torch.Tensor) -> float:
    """Mean pairwise distance of adapted embeddings over that of frozen ones (1: as diverse, near 0: collapsed)."""
    base = mean_pairwise_distance(emb_frozen)
    return mean_pairwise_distance(emb_train) / base if base > 0 else float("nan")


@dataclass(frozen=True)
class QualityReport:
    """Evaluator-measured quality of one adaptation on n latents (rates in [0, 1])."""

    target: str
    n: int
    target_rate: float
    frozen_target_rate: float
    content_kept: float  # every compared key agrees at once
    content_kept_mean: float  # mean of the per-key rates
    content_per_key: dict[str, float]
    diversity_ratio: float
    reject_rate: float = 0.0  # adapted images the judge puts in no style ("none")
    fidelity: dict[str, Any] | None = None  # stroke distance to the true renders: adapted, unadapted, best filter

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def quality_from_images(
    evaluator: "Evaluator",
    img_frozen: torch.Tensor,
    img_train: torch.Tensor,
    target: str | QualityTarget,
    batch_size: int = 128,
) -> QualityReport:
    """Quality report from paired images [N, 3, H, W] in [-1, 1]: row i of both comes from the same latent."""
    assert img_frozen.shape == img_train.shape and img_frozen.shape[0] >= 2, (
        "need paired image batches of the same shape, N >= 2"
    )
    target = parse_target(target)
    classes = evaluator.classes
    p_f, p_t = predict_all(evaluator, img_frozen, batch_size), predict_all(evaluator, img_train, batch_size)
    kept = content_kept(p_f, p_t, compared_keys(target, list(classes)))
    return QualityReport(
        target=str(target),
        n=int(img_frozen.shape[0]),
        target_rate=target_rate(p_t, target, classes),
        frozen_target_rate=target_rate(p_f, target, classes),
        content_kept=kept.pop("overall"),
        content_kept_mean=kept.pop("mean"),
        content_per_key=kept,
        diversity_ratio=diversity_ratio(
            embed_all(evaluator, img_frozen, batch_size), embed_all(evaluator, img_train, batch_size)
        ),
        reject_rate=reject_rate(p_t, classes),
    )


def latents(G: "Generator", n: int, seed: int = 0) -> torch.Tensor:
    """The n seeded latents [n, style_dim] every quality measure uses (CPU)."""
    return torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def render_pairs(
    G_frozen: "Generator", G_train: "Generator", n: int, seed: int = 0, truncation: float = 1.0, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [n, 3, H, W] in [-1, 1] (CPU) of both generators for the same n latents (seeded), stored noise."""
    z = latents(G_frozen, n, seed)
    device = next(G_frozen.parameters()).device

    def render(G: "Generator") -> torch.Tensor:
        return torch.cat(
            [G(c.to(device), truncation_psi=truncation, noise_mode="const").cpu() for c in z.split(batch_size)]
        )

    return render(G_frozen), render(G_train)


def measure_quality(
    G_frozen: "Generator",
    G_train: "Generator",
    evaluator: "Evaluator",
    target: str | QualityTarget,
    n: int = 256,
    seed: int = 0,
    truncation: float = 1.0,
    batch_size: int = 64,
    fidelity: bool = False,
) -> QualityReport:
    """Render n seeded latents through both generators (same z, same noise) and judge them with the evaluator.

    ``fidelity`` (toy-world generators, style targets, truncation 1): also compare each image with the true
    render of its face in the target style (``nada.toy.judge.paired_fidelity``).
    """
    target = parse_target(target)  # fail on a bad target before rendering anything
    img_f, img_t = render_pairs(G_frozen, G_train, n, seed, truncation, batch_size)
    report = quality_from_images(evaluator, img_f, img_t, target, batch_size)
    if fidelity and target.is_style:
        fid = paired_fidelity(img_f, img_t, latents(G_frozen, n, seed), target.value, evaluator)
        report = replace(report, fidelity=fid)
    return report


# Words that name an attribute value in a prompt, for the values a text edit can ask for.
_VALUE_WORDS: dict[str, dict[str, str]] = {
    "face_shape": {"round": "round", "oval": "oval", "square": "square"},
    "hair_color": {"black": "black", "brown": "brown", "blond": "blond", "blonde": "blond", "red": "red"},
    "hair_style": {"short": "short", "long": "long", "curly": "curly"},
    "eyes": {"closed": "closed", "open": "open"},
    "mouth": {
        "smiling": "smiling",
        "smile": "smiling",
        "neutral": "neutral",
        "frowning": "frowning",
        "frown": "frowning",
    },
    "glasses": {"glasses": "yes", "without glasses": "no", "no glasses": "no"},
}


def _has(text: str, phrase: str) -> bool:
    """Whether `phrase` stands in `text` as whole words."""
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


def infer_target(source: str, target: str) -> QualityTarget | None:
    """What the evaluator should look for after adapting `source` -> `target` text: a style the target names
    and the source does not ("photo" -> "a sketch"), else the one attribute value only the target names
    ("face" -> "smiling face"); None when the texts name neither or several."""
    src, tgt = source.lower(), target.lower()

    named = [s for s in class_names()[STYLE_KEY] if s != REJECT]
    styles = [s for s in sorted(named, key=len, reverse=True) if _has(tgt, s) and not _has(src, s)]
    if styles:
        return QualityTarget(STYLE_KEY, styles[0])
    found = set()
    for key, words in _VALUE_WORDS.items():
        for phrase in sorted(words, key=len, reverse=True):  # "without glasses" before "glasses"
            if _has(tgt, phrase) and not _has(src, phrase):
                found.add((key, words[phrase]))
                break
    return QualityTarget(*found.pop()) if len(found) == 1 else None


def run_metrics(
    G_frozen: "Generator", G_train: "Generator", source: str, target: str, n: int = 128, seed: int = 0
) -> QualityReport | None:
    """Evaluator metrics of a toy-world run on n seeded latents, or None when the texts name no toy style or
    attribute."""
    what = infer_target(source, target)
    if what is None:
        return None

    device = next(G_train.parameters()).device
    return measure_quality(G_frozen, G_train, load_evaluator(device=device), what, n=n, seed=seed, fidelity=True)
