"""Train the toy world's tiny CLIP on rendered image-caption pairs of every style.

The model is an ordinary open_clip ``CLIP`` built from ``CLIP_CONFIG`` (a small ViT on 64x64 input, a
small text transformer, OpenAI's BPE tokenizer with a context of 32 tokens), so ``nada.guidance.clip`` loads it
like any open_clip model from ``clip_config.json`` + ``clip.pt``.

Every step renders fresh faces (``nada.toy.render``), never a fixed data set. Half the faces of a
batch are rendered twice in two different styles, the other half twice in one style with one
attribute changed; each image gets a random caption ("a sketch of a smiling face with glasses",
"sketch", "a face with red hair" ...). Because the world is known, the loss knows exactly which
captions are true of which image, so it is a *multi-positive* contrastive loss (no false
negatives: "a sketch" is true of every sketch in the batch). Two terms are added:
- zero-shot classification: for each attribute and for the style, cross-entropy of the image against
  the attribute's class prompts (``render.ATTRIBUTE_PROMPTS``; style prompts from ``render.TEMPLATES``),
  which is exactly how the zero-shot accuracy is measured;
- direction: for each pair, the change of the image embedding should point along the change of
  the text embedding (style A -> style B, or "a smiling face" -> "a frowning face"). This is the
  property StyleGAN-NADA's directional loss relies on.
Images are lightly augmented (blur, noise, brightness) so that generator outputs stay in distribution;
``--appearance-aug`` also washes out, desaturates or blurs a share of them, keeping their style label.
``--vision resnet`` builds open_clip's ModifiedResNet image tower instead of the ViT, and
``--text-from CLIP.pt`` loads another run's text tower and keeps it frozen (locked-text training):
the packaged ``toy-rn`` is such an image tower in the shipped toy CLIP's text space.

Run ``python -m nada.toy.clip_train --out DIR --steps N --seed S [--export src/nada/assets/toy]``.
The run is resumable: DIR/state.pt (atomic, every --ckpt-every steps) holds the weights, the
optimiser and the RNG state, and every step's data is a function of (seed, step), so rerunning the
same command continues exactly where it stopped. At the end it writes DIR/clip.pt (fp16 state dict)
and DIR/clip_config.json, prints the zero-shot accuracies and the direction check, and copies the
two files to --export when given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from nada.errors import NadaError
from nada.frontends.args import add_dataclass_arguments, dataclass_from_args, field_helps, option
from nada.io import atomic_torch_save, atomic_write
from nada.toy import filters as toy_filters
from nada.toy import render as R
from nada.toy import runs
from nada.toy import strokes as toy_strokes
from nada.toy.clips import full_state_dict, pack_token_table
from nada.toy.generator_train import face_params
from nada.weights.safe_load import read_state_dict

# The architecture, as open_clip reads it (plus the preprocessing that nada.guidance.clip applies).
CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
    "quick_gelu": False,
    # Images in [-1, 1] become (x + 1) / 2, then (x - 0.5) / 0.5: the network sees the [-1, 1] image itself.
    "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}
# Image towers a run may use, as open_clip's vision_cfg. "vit" is the shipped toy CLIP's; "resnet" is
# open_clip's ModifiedResNet (the RN50 family's layout: three-conv stem, one bottleneck per stage,
# attention pooling) at width 16, whose convolutions see 3x3 neighbourhoods instead of 8x8 patches.
VISION_TOWERS: dict[str, dict[str, Any]] = {
    "vit": CLIP_CONFIG["vision_cfg"],
    "resnet": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "resnet-strokes": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
}
# Towers that see the image through a weightless input stem (nada.toy.strokes), named in the exported config.
TOWER_STEMS: dict[str, str] = {"resnet-strokes": toy_strokes.STEM}
FACT_KEYS: tuple[str, ...] = ("style", *R.ATTRIBUTES)  # columns of the truth / fact tables
EVAL_SEED = 987_654_321  # held-out faces and textures; training draws from SeedSequence([seed, step]) instead
STATE_FILE, WEIGHTS_FILE, CONFIG_FILE = "state.pt", "clip.pt", "clip_config.json"
STATE_VERSION = 2
RESUME_FREE = (
    "steps",
    "ckpt_every",
    "eval_every",
    "threads",
    "eval_faces",
    "direction_faces",
)  # settings a resumed run may change

log = logging.getLogger("nada.toy.clip_train")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; a resumed run must match except for RESUME_FREE fields."""

    steps: int = option(3000, "total training steps")
    seed: int = option(0, "seed of the initialisation and of all data")
    faces: int = option(48, "faces per step, each rendered twice")  # so the image batch is 2 * faces
    lr: float = option(1e-3, "peak learning rate")
    warmup: int = option(150, "learning-rate warm-up steps")
    weight_decay: float = 0.05
    dir_weight: float = 0.5
    cls_weight: float = 1.0
    probe_weight: float = 2.0
    # Share of images whose overall look is changed without changing their style label: washed out
    # towards a flat colour, desaturated, or strongly blurred. Without it the only pale, colourless
    # images the model ever saw were sketches, and adaptation learnt to pass off a washed-out photo as
    # a sketch (toy README, "Tiny CLIP").
    appearance_aug: float = option(0.0, "share of images washed out, desaturated or blurred, style label kept")
    # 0.97 is almost a blank page, still labelled with its style
    appearance_max: float = option(0.8, "strongest wash-out or desaturation, 0.3-1")
    # Share of images passed through a random chain of the strict judge's training filters (nada.toy.filters),
    # style label kept: a grayscale, contrasted or posterized photo is still a photo for the guide.
    filter_aug: float = option(0.0, "share of images given a random photo filter (nada.toy.filters), style label kept")
    # Share of images given a smooth random colour field (a 4x4 grid of RGB offsets, up to colour_max, bilinearly
    # enlarged), label kept: the local tints (a green face, a magenta neck) an adaptation turns to once washes
    # no longer pay (docs/toy_quality.md, "Adaptations' exploits as negatives").
    colour_aug: float = option(0.0, "share of images given a smooth random colour field, style label kept")
    colour_max: float = option(0.5, "largest offset of --colour-aug per channel, images in [-1, 1]")
    # Share of images given strong Gaussian noise (std up to noise_max, not clipped), label kept: what an
    # adaptation's --clip-noise shows a guide; a stroke-seeing tower (nada.toy.strokes) sees it at full strength.
    noise_aug: float = option(0.0, "share of images given Gaussian noise of std up to --noise-max, label kept")
    noise_max: float = option(0.4, "strongest noise of --noise-aug, images in [-1, 1]")
    # Adaptations' exploits as photos: a share of the faces of a step are drawn by adapted generators (their
    # latents' faces known), captioned as photos and paired with a true render in another style, so the guide
    # learns that what it was talked into calling a sketch is a changed photo (docs/toy_quality.md).
    negatives_from: str = option("", "comma-separated generator checkpoints whose outputs are captioned as photos")
    negatives_share: float = option(0.0, "share of faces drawn by --negatives-from, paired with a true render")
    init_from: str = option("", "start from the weights of this clip.pt instead of a random init")
    vision: str = option("vit", "image tower", choices=tuple(VISION_TOWERS))
    # Locked-text training: a clip.pt whose text tower (token table, transformer, projection) is loaded
    # and frozen, so the image tower learns to embed into that CLIP's text space. A second guide trained
    # this way shares the first one's text features and token table, and only its image tower is new.
    text_from: str = option("", "load the text tower of this clip.pt and keep it frozen (locked-text training)")
    # Embedding stability (adversarial training): each step, projected gradient ascent finds a perturbation
    # of at most adv_eps per pixel (images in [-1, 1]) that moves each image's unit embedding furthest,
    # and adv_weight x that squared move is added to the loss. Without it small colour changes move the
    # embedding far, so adaptation follows such pixel-level directions (colour noise) instead of drawing a
    # style (docs/toy_quality.md has the measurement). 0 = off.
    adv_eps: float = option(0.0, "embedding-stability attack radius per pixel, images in [-1, 1]; 0 = off")
    adv_steps: int = option(3, "gradient-ascent steps of that attack")
    adv_weight: float = option(10.0, "weight of the embedding move under attack")
    # The way towards a style: for each pair of one face in two styles, a pixel blend a + t (b - a) with t drawn
    # from [blend_min, blend_max] should move the embedding along the text change as the full pair does. The
    # directional loss of an adaptation is blind to the size of a move, so a guide whose partial blends point
    # elsewhere offers no downhill way to the style (docs/toy_quality.md, "Diagnosis"). 0 = off.
    blend_weight: float = option(0.0, "weight of the direction term on partial blends of cross-style pairs; 0 = off")
    blend_min: float = option(0.1, "smallest blend share t of --blend-weight")
    blend_max: float = option(0.5, "largest blend share t of --blend-weight")
    # Gradients that point at the style: for each pair of one face in two styles (a, b), the pixel gradient of
    # unit(E(x)) . (text change) at x = a (plus noise of std up to align_noise, as an adaptation's --clip-noise
    # shows it) should point along b - a. An adaptation's first step follows exactly that gradient, and a guide
    # whose gradient is blind to where the strokes go leads the generator to a wash (docs/toy_quality.md,
    # "Which way the guides point"). Costs a second backward pass through the image tower. 0 = off.
    align_weight: float = option(0.0, "weight of the gradient-alignment term on cross-style pairs; 0 = off")
    align_noise: float = option(0.4, "strongest noise added to the pairs' first images for --align-weight")
    # "high": compare only what a Gaussian blur of sigma 3 px leaves out (outlines, strokes), where a guide's
    # gradient is blind even when its low band follows the pair (docs/toy_quality.md).
    align_band: str = option("whole", "band of the alignment term", choices=("whole", "high"))
    # Captions that say how an image was changed ("a photo of a face, washed out"): the guide gets words for
    # the washes, greys and blurs that adaptations drift into, a direction an adaptation could be kept away from
    # (docs/toy_quality.md, "Which way the guides point"). Share of the changed images whose caption names it; 0 = off.
    look_captions: float = option(0.0, "share of --appearance-aug images whose caption names the change; 0 = off")
    ckpt_every: int = option(100, "steps between state saves")
    eval_every: int = option(500, "steps between zero-shot checks")
    threads: int = option(1, "torch CPU threads")
    eval_faces: int = 600  # fresh faces for the final zero-shot accuracy
    direction_faces: int = 120  # faces for the final direction check

    def __post_init__(self) -> None:
        if self.negatives_share > 0 and not self.negatives_from.strip(" ,"):
            raise NadaError("--negatives-share needs generators to draw from: give --negatives-from G1,G2,...")
        if self.blend_weight > 0 and not 0 < self.blend_min <= self.blend_max <= 1:
            raise NadaError(
                f"blend shares from {self.blend_min} to {self.blend_max} are no range inside (0, 1]: give "
                "0 < --blend-min <= --blend-max <= 1 (a share of 0 is the pair's first image, with no direction)"
            )


# ---------------------------------------------------------------- model


def model_config(vision: str = "vit") -> dict[str, Any]:
    """CLIP_CONFIG with the image tower ``vision`` (a key of VISION_TOWERS)."""
    if vision not in VISION_TOWERS:
        raise NadaError(f"unknown image tower {vision!r}: choose one of {', '.join(VISION_TOWERS)}")
    config = {**CLIP_CONFIG, "vision_cfg": dict(VISION_TOWERS[vision])}
    if vision in TOWER_STEMS:
        config[toy_strokes.CONFIG_KEY] = TOWER_STEMS[vision]
    return config


def is_text_key(key: str) -> bool:
    """True for the state-dict keys of the text tower (what ``TrainConfig.text_from`` loads and freezes)."""
    return not key.startswith("visual.") and key != "logit_scale"


def model_kwargs(config: dict[str, Any] = CLIP_CONFIG) -> dict[str, Any]:
    """The constructor arguments of ``open_clip.CLIP`` from a config dict (drops the preprocessing)."""
    return {k: v for k, v in config.items() if k not in ("preprocess_cfg", toy_strokes.CONFIG_KEY)}


def build_model(seed: int, config: dict[str, Any] = CLIP_CONFIG) -> torch.nn.Module:
    """A freshly initialised open_clip CLIP (random weights from ``seed``, caller's RNG untouched)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return with_stem(open_clip.CLIP(**model_kwargs(config)), config)


def with_stem(model: torch.nn.Module, config: dict[str, Any]) -> torch.nn.Module:
    """``model`` with the input stem its config names (``nada.toy.strokes``) in front of its image tower."""
    stem = config.get(toy_strokes.CONFIG_KEY)
    if stem is None:
        return model
    if stem not in toy_strokes.INPUT_STEMS:
        raise NadaError(f"unknown input stem {stem!r}: choose one of {', '.join(toy_strokes.INPUT_STEMS)}")
    return toy_strokes.INPUT_STEMS[stem](model)


class Trainee(torch.nn.Module):
    """What training optimises: the CLIP plus linear probes on its image embedding (one per fact key).

    The probes are discarded at export. They break a symmetric plateau: for attributes that need
    fine detail (the mouth's curve, the face outline) a randomly initialised CLIP gives every class
    prompt the same text embedding and no image feature separates the classes, so the contrastive
    and zero-shot gradients on both towers vanish together; a probe's labels move the image tower
    off that point, and the text tower follows.
    """

    def __init__(self, clip: torch.nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.clip = clip
        self.probes = torch.nn.ModuleDict({k: torch.nn.Linear(embed_dim, len(v)) for k, v in fact_values().items()})


def fact_values() -> dict[str, tuple[str, ...]]:
    """Fact key -> its value names ("style" first, then the attributes)."""
    return {"style": R.STYLES, **R.ATTRIBUTES}


def build_trainee(cfg: "TrainConfig") -> Trainee:
    """The CLIP (random from cfg.seed, or cfg.init_from's weights; cfg.text_from's text tower, frozen) with fresh
    probes."""
    clip = build_model(cfg.seed, model_config(cfg.vision))
    if cfg.init_from:
        sd = _read_weights(cfg.init_from, base=cfg.text_from)  # a locked-text guide shares that tower's token table
        try:
            clip.load_state_dict(sd)
        except RuntimeError as e:
            raise NadaError(
                f"--init-from {cfg.init_from} does not fit the {cfg.vision!r} image tower (give --vision to match it): "
                f"{e}"
            ) from None
    if cfg.text_from:
        text = {k: v for k, v in _read_weights(cfg.text_from).items() if is_text_key(k)}
        own = {k: v for k, v in clip.state_dict().items() if is_text_key(k)}
        if text.keys() != own.keys() or any(text[k].shape != own[k].shape for k in own):
            raise NadaError(f"--text-from {cfg.text_from} has no text tower of this config (keys or shapes differ)")
        clip.load_state_dict(text, strict=False)
        for name, p in clip.named_parameters():
            p.requires_grad_(not is_text_key(name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        return Trainee(clip, CLIP_CONFIG["embed_dim"])


def _read_weights(path: str, base: str = "") -> dict[str, torch.Tensor]:
    """An exported clip.pt as an fp32 state dict (tensors only: nothing in the file is executed); ``base`` is the
    clip.pt whose token table it shares, if it was exported with ``--share-tokens-with``."""
    for p in (path, base):
        if p and not Path(p).is_file():
            raise NadaError(f"no CLIP weights at {p}: give the clip.pt written by a clip_train run")
    base_sd = full_state_dict(read_state_dict(base, "CLIP weights")) if base else None
    return {k: v.float() for k, v in full_state_dict(read_state_dict(path, "CLIP weights"), base_sd).items()}


def tokenizer(config: dict[str, Any] = CLIP_CONFIG):
    """OpenAI's BPE tokenizer with the config's context length: list[str] -> LongTensor [T, context]."""
    import open_clip

    return open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])


def to_clip_input(img: torch.Tensor, config: dict[str, Any] = CLIP_CONFIG) -> torch.Tensor:
    """[N,3,64,64] in [-1,1] -> normalised network input, exactly as nada.guidance.clip preprocesses at 64x64."""
    pp = config["preprocess_cfg"]
    mean = torch.tensor(pp["mean"], device=img.device).view(1, 3, 1, 1)
    std = torch.tensor(pp["std"], device=img.device).view(1, 3, 1, 1)
    return ((img + 1) / 2 - mean) / std


def encode_images(model: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
    """L2-normalised image features [N, D] of images [N,3,64,64] in [-1,1]."""
    return F.normalize(model.encode_image(to_clip_input(img)), dim=-1)


def encode_texts(model: torch.nn.Module, tok, texts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """L2-normalised text features [T, D]."""
    return F.normalize(model.encode_text(tok(list(texts)).to(device)), dim=-1)


# ---------------------------------------------------------------- data


@dataclass
class Batch:
    """One training step's data: images, their truth table, captions with their fact tables, pairs."""

    images: torch.Tensor  # [2F, 3, 64, 64] in [-1, 1]; image i and i + F form a pair
    truth: np.ndarray  # [2F, len(FACT_KEYS)] value indices (style index in column 0)
    texts: list[str]  # captions of every image, then the class prompts
    facts: np.ndarray  # [T, len(FACT_KEYS)] value index, or -1 where the text says nothing
    class_text: dict[str, np.ndarray]  # fact key -> indices into texts of its class prompts, in value order
    pair_key: np.ndarray  # [F] which fact key differs inside each pair (0 = style)
    attack_seed: int = 0  # random start of the embedding-stability attack
    blend_t: np.ndarray | None = None  # [F] blend share of each pair for the blend term (None when it is off)
    clean: torch.Tensor | None = None  # the images before any augmentation, for the alignment term (None when off)
    align_sigma: np.ndarray | None = None  # [F] noise std of each pair's first image for the alignment term


def truth_table(params: R.FaceParams, styles: Sequence[str]) -> np.ndarray:
    """[N, len(FACT_KEYS)] int64: the style index then every attribute's value index."""
    cols = [np.array([R.STYLES.index(s) for s in styles], np.int64)] + [getattr(params, k) for k in R.ATTRIBUTES]
    return np.stack(cols, 1)


def facts_row(facts: dict[str, str]) -> list[int]:
    """A caption's facts as one row of value indices (-1 = not stated)."""
    values = {"style": R.STYLES, **R.ATTRIBUTES}
    return [values[k].index(facts[k]) if k in facts else -1 for k in FACT_KEYS]


def class_prompts(rng: np.random.Generator) -> tuple[list[str], list[list[int]], dict[str, list[int]]]:
    """Prompts for every class of every fact key (style prompts through a random template): texts, facts, index."""
    texts: list[str] = []
    facts: list[list[int]] = []
    index: dict[str, list[int]] = {}
    template = R.TEMPLATES[int(rng.integers(len(R.TEMPLATES)))]
    for key in FACT_KEYS:
        prompts = [template.format(s) for s in R.STYLES] if key == "style" else list(R.ATTRIBUTE_PROMPTS[key])
        index[key] = []
        for v, prompt in enumerate(prompts):
            row = [-1] * len(FACT_KEYS)
            row[FACT_KEYS.index(key)] = v
            index[key].append(len(texts))
            texts.append(prompt)
            facts.append(row)
    return texts, facts, index


def _change_one(params: R.FaceParams, key_idx: np.ndarray, rng: np.random.Generator) -> R.FaceParams:
    """Copy of params where face i has attribute FACT_KEYS[key_idx[i]] moved to another random value (0 = keep)."""
    values = {k: getattr(params, k).copy() for k in params.__dataclass_fields__}
    for i, k in enumerate(key_idx):
        if k == 0:
            continue
        name = FACT_KEYS[k]
        n = len(R.ATTRIBUTES[name])
        values[name][i] = (values[name][i] + rng.integers(1, n)) % n
    return R.FaceParams(**values)


def make_batch(cfg: TrainConfig, step: int) -> Batch:
    """The data of one step, a pure function of (cfg.seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    n = cfg.faces
    params = R.sample_params(n, seed=int(rng.integers(2**62)))
    style_a = rng.integers(len(R.STYLES), size=n)
    # Pair kind: 0 = same face in another style; k >= 1 = same style, attribute FACT_KEYS[k] changed.
    pair_key = np.where(rng.random(n) < 0.5, 0, rng.integers(1, len(FACT_KEYS), size=n))
    style_b = np.where(pair_key == 0, (style_a + rng.integers(1, len(R.STYLES), size=n)) % len(R.STYLES), style_a)
    params_b = _change_one(params, pair_key, rng)
    all_params = R.FaceParams.concat([params, params_b])
    styles = [R.STYLES[s] for s in np.concatenate([style_a, style_b])]
    images = R.to_tensor(R.render_mixed(all_params, styles, seed=int(rng.integers(2**62))))
    if cfg.negatives_share > 0:  # drawn only when enabled, so runs without it keep their data
        all_params, styles, images = exploit_pairs(cfg, rng, all_params, styles, images, pair_key)
    caption_seed = int(rng.integers(2**62))
    parts = R.caption_parts(all_params, styles, seed=caption_seed)
    cap_rng = np.random.default_rng([caption_seed, 1])
    texts = [R.caption_from_parts(f, cap_rng) for f in parts]
    facts = [facts_row(f) for f in parts]
    c_texts, c_facts, c_index = class_prompts(rng)
    offset = len(texts)
    clean = images
    filtered = filter_change(images, rng, cfg.filter_aug)
    images, looks = augment_with_looks(filtered, rng, cfg.appearance_aug, cfg.appearance_max)
    images = colour_change(images, rng, cfg.colour_aug, cfg.colour_max)
    truth, facts_table = truth_table(all_params, styles), np.array(facts + c_facts, np.int64)
    if cfg.look_captions > 0:
        texts, truth, facts_table = name_looks(texts, truth, facts_table, looks, cfg.look_captions, [cfg.seed, step, 3])
    return Batch(
        images=noise_change(images, rng, cfg.noise_aug, cfg.noise_max),
        truth=truth,
        texts=texts + c_texts,
        facts=facts_table,
        class_text={k: np.array(v) + offset for k, v in c_index.items()},
        pair_key=pair_key,
        attack_seed=int(rng.integers(2**62)),
        # drawn last and only when enabled, so runs without it keep their data
        blend_t=rng.uniform(cfg.blend_min, cfg.blend_max, len(pair_key)) if cfg.blend_weight > 0 else None,
        clean=clean if cfg.align_weight > 0 else None,
        align_sigma=rng.uniform(0.0, cfg.align_noise, len(pair_key)) if cfg.align_weight > 0 else None,
    )


def name_looks(
    texts: list[str], truth: np.ndarray, facts: np.ndarray, looks: np.ndarray, share: float, seed: list[int]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Captions that name a share of the changed images' looks ("a photo of a face, washed out"), with a look
    column added to the truth table [N, K + 1] (0 = unchanged) and to the captions' facts [T, K + 1] (-1 = not
    stated; captions that name no look fit every look). A separate generator leaves the step's other data as it was.
    """
    rng = np.random.default_rng(seed)
    named = (looks > 0) & (rng.random(len(looks)) < share)
    texts = [f"{t}, {LOOKS[k - 1]}" if say else t for t, k, say in zip(texts, looks, named)]
    stated = np.full(len(facts), -1, np.int64)
    stated[: len(looks)] = np.where(named, looks, -1)
    return texts, np.column_stack([truth, looks]), np.column_stack([facts, stated])


@torch.no_grad()
def exploit_pairs(
    cfg: TrainConfig,
    rng: np.random.Generator,
    params: R.FaceParams,
    styles: list[str],
    images: torch.Tensor,
    pair_key: np.ndarray,
) -> tuple[R.FaceParams, list[str], torch.Tensor]:
    """Replace a share of the step's pairs (in place for ``pair_key``) by (an adapted generator's output for a
    latent, labelled photo; the true render of that latent's face in another style); images [2F,3,64,64]."""
    n = len(pair_key)
    pick = np.flatnonzero(rng.random(n) < cfg.negatives_share)
    runs.frozen_generators(cfg.negatives_from)  # a bad path fails at the first step, not at the first pick
    if not len(pick):
        return params, styles, images
    drawn, z, _ = runs.draw_outputs(cfg.negatives_from, len(pick), rng)
    faces = face_params(z)
    other = [R.STYLES[s] for s in rng.integers(1, len(R.STYLES), size=len(pick))]  # STYLES[0] is the photo
    values = {k: getattr(params, k).copy() for k in params.__dataclass_fields__}
    for k, v in values.items():
        v[pick] = v[pick + n] = getattr(faces, k)
    images = images.clone()
    images[pick] = drawn
    images[pick + n] = R.to_tensor(R.render_mixed(faces, other, seed=int(rng.integers(2**62))))
    styles = list(styles)
    for j, i in enumerate(pick):
        styles[i], styles[i + n] = R.STYLES[0], other[j]
    pair_key[pick] = 0
    return R.FaceParams(**values), styles, images


def filter_change(img: torch.Tensor, rng: np.random.Generator, share: float) -> torch.Tensor:
    """A random training filter chain (nada.toy.filters) on a share of images [N,3,64,64] in [-1,1]; none when 0."""
    if share <= 0:  # drawn only when enabled, so runs without it keep their data
        return img

    img = img.clone()
    for i in np.flatnonzero(rng.random(img.shape[0]) < share):
        chain = toy_filters.random_chain(rng)
        img[i : i + 1] = toy_filters.apply_chain(img[i : i + 1], chain, seed=int(rng.integers(2**31)))
    return img


def colour_change(img: torch.Tensor, rng: np.random.Generator, share: float, strongest: float) -> torch.Tensor:
    """A smooth random colour field (4x4 RGB offsets up to ``strongest``, bilinear) added to a share of images
    [N,3,64,64] in [-1,1], clipped; none when 0."""
    if share <= 0:  # drawn only when enabled, so runs without it keep their data
        return img
    n = img.shape[0]
    amount = (rng.random(n) < share) * rng.uniform(0.0, strongest, n)
    grid = torch.from_numpy(rng.uniform(-1.0, 1.0, (n, 3, 4, 4)).astype(np.float32))
    field = F.interpolate(grid, size=img.shape[-2:], mode="bilinear", align_corners=True)
    return (img + torch.from_numpy(amount).float().view(n, 1, 1, 1) * field).clamp(-1, 1)


def noise_change(img: torch.Tensor, rng: np.random.Generator, share: float, strongest: float) -> torch.Tensor:
    """Gaussian noise of std U(0, strongest) on a share of images [N,3,64,64] in [-1,1], unclipped; none when 0."""
    if share <= 0:  # drawn only when enabled, so runs without it keep their data
        return img
    n = img.shape[0]
    sigma = (rng.random(n) < share) * rng.uniform(0.0, strongest, n)
    noise = torch.from_numpy(rng.standard_normal(img.shape).astype(np.float32))
    return img + torch.from_numpy(sigma).float().view(n, 1, 1, 1) * noise


# The looks of `appearance_change`, in the order of its kinds; `--look-captions` names them in captions.
LOOKS = ("washed out", "desaturated", "blurry")


def appearance_change(
    img: torch.Tensor, rng: np.random.Generator, strongest: float = 0.8, kind: np.ndarray | None = None
) -> torch.Tensor:
    """Change the overall look of each image [N,3,64,64] in [-1,1] but not its style: wash out, desaturate or blur
    (``kind`` [N] indexes LOOKS; drawn from ``rng`` when not given)."""
    n = img.shape[0]
    kind = rng.integers(3, size=n) if kind is None else kind
    grey = img.mean(1, keepdim=True).expand_as(img)
    amount = torch.from_numpy(rng.uniform(0.3, max(0.3, strongest), n)).float().view(n, 1, 1, 1)
    flat = torch.from_numpy(rng.uniform(0.4, 1.0, (n, 3))).float().view(n, 3, 1, 1)  # light, random tint
    washed = img + amount * (flat - img)
    desaturated = img + amount * (grey - img)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 256).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    blurred = F.conv2d(F.pad(blurred, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    pick = torch.from_numpy(kind).view(n, 1, 1, 1)
    return torch.where(pick == 0, washed, torch.where(pick == 1, desaturated, blurred))


def augment(
    img: torch.Tensor, rng: np.random.Generator, appearance_aug: float = 0.0, appearance_max: float = 0.8
) -> torch.Tensor:
    """Content-preserving changes of [N,3,64,64] in [-1,1]: blur, noise, brightness/contrast, and for a share
    `appearance_aug` of the images an `appearance_change`."""
    return augment_with_looks(img, rng, appearance_aug, appearance_max)[0]


def augment_with_looks(
    img: torch.Tensor, rng: np.random.Generator, appearance_aug: float = 0.0, appearance_max: float = 0.8
) -> tuple[torch.Tensor, np.ndarray]:
    """`augment`, and each image's look [N]: 0 unchanged, k >= 1 given the appearance change LOOKS[k - 1]."""
    n = img.shape[0]
    looks = np.zeros(n, np.int64)
    if appearance_aug > 0:  # drawn first and only when enabled, so runs without it keep their data
        picked = rng.random(n) < appearance_aug
        change = torch.from_numpy(picked).view(n, 1, 1, 1)
        kind = rng.integers(3, size=n)
        img = torch.where(change, appearance_change(img, rng, appearance_max, kind), img)
        looks = np.where(picked, kind + 1, 0)
    blur = torch.from_numpy(rng.random(n) < 0.25).view(n, 1, 1, 1)
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    img = torch.where(blur, blurred, img)
    sigma = torch.from_numpy((rng.random(n) < 0.25) * rng.uniform(0.0, 0.06, n)).float().view(n, 1, 1, 1)
    noise = torch.from_numpy(rng.standard_normal(img.shape).astype(np.float32))
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, n)).float().view(n, 1, 1, 1)
    shift = torch.from_numpy(rng.uniform(-0.06, 0.06, n)).float().view(n, 1, 1, 1)
    return (img * gain + shift + sigma * noise).clamp(-1, 1), looks


# ---------------------------------------------------------------- loss


def stability_attack(
    model: torch.nn.Module, images: torch.Tensor, eps: float, steps: int, seed: int, clean: torch.Tensor | None = None
) -> torch.Tensor:
    """Images [N,3,64,64] in [-1,1] moved by at most ``eps`` per pixel so that their unit embeddings move furthest.

    Projected gradient ascent on the squared embedding change, from a random start in the L-inf ball;
    the model's parameters receive no gradient (``torch.autograd.grad`` on the perturbation only).
    ``clean`` may pass the images' unit embeddings [N, D] when the caller has them already.
    """
    gen = torch.Generator(device=images.device).manual_seed(seed)
    clean = (encode_images(model, images) if clean is None else clean).detach()
    delta = (torch.rand(images.shape, generator=gen, device=images.device) * 2 - 1) * eps
    step_size = 2.5 * eps / max(1, steps)
    for _ in range(steps):
        delta.requires_grad_(True)
        moved = (encode_images(model, (images + delta).clamp(-1, 1)) - clean).pow(2).sum(-1).sum()
        (grad,) = torch.autograd.grad(moved, delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
    return (images + delta).clamp(-1, 1).detach()


def compatibility(truth: np.ndarray, facts: np.ndarray) -> torch.Tensor:
    """[N, T] bool: text j is true of image i (every fact it states matches the image)."""
    ok = (facts[None, :, :] == -1) | (facts[None, :, :] == truth[:, None, :])
    return torch.from_numpy(ok.all(-1))


def multi_positive_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Supervised-contrastive loss: mean over rows, and over each row's positives, of -log softmax; rows
    without a positive or without a negative carry no information and are skipped."""
    useful = positive.any(1) & ~positive.all(1)
    if not useful.any():
        return logits.sum() * 0.0
    lg, pos = logits[useful], positive[useful].float()
    log_p = lg - torch.logsumexp(lg, 1, keepdim=True)
    return (-(log_p * pos).sum(1) / pos.sum(1)).mean()


def losses(trainee: Trainee, tok, batch: Batch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The loss terms of one step (see the module docstring and ``Trainee``)."""
    model = trainee.clip
    fi = encode_images(model, batch.images)
    ft = encode_texts(model, tok, batch.texts)
    scale = model.logit_scale.exp().clamp(max=100.0)
    logits = scale * fi @ ft.T
    pos = compatibility(batch.truth, batch.facts)
    out = {"i2t": multi_positive_loss(logits, pos), "t2i": multi_positive_loss(logits.T, pos.T)}
    truth = torch.from_numpy(batch.truth)
    ce = [F.cross_entropy(logits[:, idx], truth[:, FACT_KEYS.index(key)]) for key, idx in batch.class_text.items()]
    out["cls"] = torch.stack(ce).mean()
    # Direction: the pair's image change against the text change between the classes that differ.
    n = len(batch.pair_key)
    d_img = F.normalize(fi[n:] - fi[:n], dim=-1)
    d_txt = []
    for i, k in enumerate(batch.pair_key):
        idx = batch.class_text[FACT_KEYS[k]]
        d_txt.append(ft[idx[batch.truth[n + i, k]]] - ft[idx[batch.truth[i, k]]])
    d_txt = F.normalize(torch.stack(d_txt), dim=-1)
    out["dir"] = (1 - (d_img * d_txt).sum(-1)).mean()
    out["probe"] = torch.stack(
        [F.cross_entropy(head(fi) * 10.0, truth[:, FACT_KEYS.index(k)]) for k, head in trainee.probes.items()]
    ).mean()
    out["total"] = (
        out["i2t"]
        + out["t2i"]
        + cfg.cls_weight * out["cls"]
        + cfg.dir_weight * out["dir"]
        + cfg.probe_weight * out["probe"]
    )
    if cfg.blend_weight > 0:
        out["blend"] = blend_direction_loss(model, batch, fi[:n], d_txt)
        out["total"] = out["total"] + cfg.blend_weight * out["blend"]
    if cfg.align_weight > 0:
        out["align"] = gradient_alignment_loss(model, batch, d_txt.detach(), cfg.align_band)
        out["total"] = out["total"] + cfg.align_weight * out["align"]
    if cfg.adv_eps > 0:
        attacked = stability_attack(model, batch.images, cfg.adv_eps, cfg.adv_steps, batch.attack_seed, clean=fi)
        out["adv"] = (encode_images(model, attacked) - fi.detach()).pow(2).sum(-1).mean()
        out["total"] = out["total"] + cfg.adv_weight * out["adv"]
    return out


def blend_direction_loss(model: torch.nn.Module, batch: Batch, f_a: torch.Tensor, d_txt: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(E(a + t (b - a)) - E(a), text change) over the cross-style pairs (a, b) of ``batch``.

    ``f_a`` [F, D] are the first images' unit embeddings, ``d_txt`` [F, D] the pairs' unit text changes; images in
    [-1, 1]. A pair whose blend equals its first image (t = 0) has no direction and is not drawn (t >= blend_min).
    """
    assert batch.blend_t is not None, "the batch was made without blend shares (blend_weight 0)"
    n = len(batch.pair_key)
    cross = torch.from_numpy(np.flatnonzero(batch.pair_key == 0))
    if not len(cross):
        return f_a.sum() * 0.0
    t = torch.from_numpy(batch.blend_t).float()[cross].view(-1, 1, 1, 1)
    a, b = batch.images[cross], batch.images[cross + n]
    f_blend = encode_images(model, a + t * (b - a))
    d_img = F.normalize(f_blend - f_a[cross], dim=-1)
    return (1 - (d_img * d_txt[cross]).sum(-1)).mean()


def gradient_alignment_loss(
    model: torch.nn.Module, batch: Batch, d_txt: torch.Tensor, band: str = "whole"
) -> torch.Tensor:
    """Mean 1 - cos(grad_x [unit(E(x)) . d], b - a) over the cross-style pairs (a, b) of ``batch``'s clean images
    (``band`` "high": of both, what a blur of sigma 3 px leaves out).

    x is a plus Gaussian noise of the pair's std (``batch.align_sigma``), images [F, 3, 64, 64] in [-1, 1];
    ``d_txt`` [F, D] are the pairs' unit text changes. The gradient is taken with ``create_graph`` so that the
    loss trains the image tower through it (double backward).
    """
    assert batch.clean is not None and batch.align_sigma is not None, "the batch was made without align_weight"
    n = len(batch.pair_key)
    cross = torch.from_numpy(np.flatnonzero(batch.pair_key == 0))
    if not len(cross):
        return d_txt.sum() * 0.0
    a, b = batch.clean[cross], batch.clean[cross + n]
    gen = torch.Generator().manual_seed(batch.attack_seed)
    sigma = torch.from_numpy(batch.align_sigma).float()[cross].view(-1, 1, 1, 1)
    x = (a + sigma * torch.randn(a.shape, generator=gen)).requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention has no double backward
        score = (encode_images(model, x) * d_txt[cross]).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    goal = b - a
    if band == "high":
        low = [toy_filters.gaussian_blur(t, 3.0, border="reflect") for t in (grad, goal)]
        grad, goal = grad - low[0], goal - low[1]
    return (1 - F.cosine_similarity(grad.flatten(1), goal.flatten(1), dim=1)).mean()


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def style_text_features(model: torch.nn.Module, tok, templates: Sequence[str] = R.TEMPLATES) -> torch.Tensor:
    """[S, D] normalised, template-averaged text features of every style (the ImageNet-template recipe)."""
    feats = [encode_texts(model, tok, [t.format(s) for t in templates]).mean(0) for s in R.STYLES]
    return F.normalize(torch.stack(feats), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module, tok, n: int = 600, seed: int = EVAL_SEED, batch_size: int = 200
) -> dict[str, Any]:
    """Zero-shot accuracy on n fresh faces (face i in style i mod 6): overall per fact key, and per style."""
    model.eval()
    params = R.sample_params(n, seed=seed)
    styles = [R.STYLES[i % len(R.STYLES)] for i in range(n)]
    images = R.to_tensor(R.render_mixed(params, styles, seed=seed))
    fi = torch.cat([encode_images(model, images[i : i + batch_size]) for i in range(0, n, batch_size)])
    truth = torch.from_numpy(truth_table(params, styles))
    classes = {"style": style_text_features(model, tok)}
    classes.update({k: encode_texts(model, tok, R.ATTRIBUTE_PROMPTS[k]) for k in R.ATTRIBUTES})
    acc: dict[str, Any] = {}
    per_style: dict[str, dict[str, float]] = {s: {} for s in R.STYLES}
    for key, feats in classes.items():
        correct = (fi @ feats.T).argmax(1) == truth[:, FACT_KEYS.index(key)]
        acc[key] = correct.float().mean().item()
        for s_idx, s in enumerate(R.STYLES):
            per_style[s][key] = correct[truth[:, 0] == s_idx].float().mean().item()
    acc["per_style"] = per_style
    return acc


@torch.no_grad()
def direction_check(
    model: torch.nn.Module, tok, source: str = "photo", n: int = 120, seed: int = EVAL_SEED + 1
) -> dict[str, float]:
    """Mean cosine between CLIP(target render) - CLIP(source render) of the same faces and the template-averaged
    text direction source -> target (NADA's recipe), for every target style."""
    model.eval()
    params = R.sample_params(n, seed=seed)
    f_src = encode_images(model, R.render_tensor(params, source, seed=seed))
    out = {}
    for target in R.STYLES:
        if target == source:
            continue
        f_tgt = encode_images(model, R.render_tensor(params, target, seed=seed))
        t_src, t_tgt = [encode_texts(model, tok, [t.format(s) for t in R.TEMPLATES]) for s in (source, target)]
        text_dir = F.normalize((t_tgt - t_src).mean(0, keepdim=True), dim=-1)
        out[target] = F.cosine_similarity(f_tgt - f_src, text_dir).mean().item()
    return out


def format_accuracy(acc: dict[str, Any]) -> str:
    """One line of overall accuracies in percent."""
    return "  ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items() if k != "per_style")


# ---------------------------------------------------------------- optimiser, state, export


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embedding" not in name and "token" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then a cosine down to 5 % of the peak at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def export(
    model: torch.nn.Module,
    out_dir: Path,
    share_tokens_with: str | Path | None = None,
    config: dict[str, Any] = CLIP_CONFIG,
) -> tuple[Path, Path]:
    """Write clip.pt (fp16 state dict) and clip_config.json (``config``, the model's architecture) into out_dir,
    atomically.

    With ``share_tokens_with`` (another exported clip.pt) the token table is stored as the rows that
    differ from that file's (``nada.toy.clips.pack_token_table``), as the packaged ``toy-robust`` is.
    """

    half = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    if share_tokens_with:
        half = pack_token_table(half, full_state_dict(read_state_dict(share_tokens_with, "CLIP weights")))
    weights = atomic_torch_save(half, out_dir / WEIGHTS_FILE)
    config = atomic_write(
        out_dir / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    )
    return weights, config


def load_exported(folder: str | Path, tokens_from: str | Path | None = None) -> torch.nn.Module:
    """Rebuild a model written by ``export`` with plain open_clip (fp32, eval mode); ``tokens_from`` is the
    folder whose token table an export with ``share_tokens_with`` shares."""
    import open_clip

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    model = with_stem(open_clip.CLIP(**model_kwargs(config)), config)
    sd = read_state_dict(folder / WEIGHTS_FILE, "CLIP weights")
    base = None
    if tokens_from is not None:
        base = full_state_dict(read_state_dict(Path(tokens_from) / WEIGHTS_FILE, "CLIP weights"))
    sd = full_state_dict(sd, base)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval()


# ---------------------------------------------------------------- training loop


def train(
    cfg: TrainConfig, out: Path, export_to: Path | None = None, share_tokens_with: str | Path | None = None
) -> dict[str, Any]:
    """Run (or continue) training in ``out`` with ``cfg.threads`` CPU threads; returns the final metrics.

    The export to ``export_to`` stores its token table as rows that differ from ``share_tokens_with``'s when given.
    """
    with runs.torch_threads(cfg.threads):
        return _train(cfg, out, export_to, share_tokens_with)


def _train(
    cfg: TrainConfig, out: Path, export_to: Path | None, share_tokens_with: str | Path | None = None
) -> dict[str, Any]:

    runs.make_run_dir(out)
    runs.setup_logging(log, out / "train.log")
    state_path = out / STATE_FILE
    trainee = build_trainee(cfg)
    model = trainee.clip
    opt = make_optimizer(trainee, cfg)
    tok = tokenizer()
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = runs.load_state(state_path, STATE_VERSION)
        # Settings added after a run was saved read as their defaults, which is what that run used.
        runs.check_resume({**asdict(TrainConfig()), **state["config"]}, asdict(cfg), RESUME_FREE, state_path)
        trainee.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        log.info("resuming at step %d (%.0f s trained so far)", start, elapsed)
    else:
        n_params = sum(p.numel() for p in model.parameters())  # the probes are not counted: they are not shipped
        n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("new run: %s, %d parameters (%d trained)", json.dumps(asdict(cfg)), n_params, n_trained)
    trainee.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="toy CLIP", dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = make_batch(cfg, step)
        terms = losses(trainee, tok, batch, cfg)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        values = {k: f"{v.item():.3f}" for k, v in terms.items()}
        bar.set_postfix(values)
        done = step + 1
        if done % 20 == 0:
            log.info(
                "step %d %s lr %.2e scale %.1f",
                done,
                " ".join(f"{k} {v}" for k, v in values.items()),
                lr_at(step, cfg),
                model.logit_scale.exp().item(),
            )
        if done % cfg.eval_every == 0 and done < cfg.steps:
            log.info("step %d zero-shot (300 faces): %s", done, format_accuracy(zero_shot_accuracy(model, tok, n=300)))
            trainee.train()
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            runs.save_state(state_path, STATE_VERSION, asdict(cfg), done, elapsed + time.time() - t0, trainee, opt)
    bar.close()
    total_s = elapsed + time.time() - t0
    model.eval()
    acc = zero_shot_accuracy(model, tok, n=cfg.eval_faces)
    dirs = direction_check(model, tok, n=cfg.direction_faces)
    weights, config = export(model, out, config=model_config(cfg.vision))
    log.info("training time %.0f s (%.1f min) for %d steps", total_s, total_s / 60, cfg.steps)
    log.info("zero-shot accuracy on %d fresh renders: %s", cfg.eval_faces, format_accuracy(acc))
    for s, a in acc["per_style"].items():
        log.info("  %-10s %s", s, "  ".join(f"{k} {100 * v:.0f}%" for k, v in a.items()))
    log.info(
        "direction check cos(CLIP(style) - CLIP(photo), text(style) - text(photo)): %s",
        "  ".join(f"{k} {v:.3f}" for k, v in dirs.items()),
    )
    log.info("wrote %s and %s", weights, config)
    if export_to is not None:
        export_to.mkdir(parents=True, exist_ok=True)
        if share_tokens_with:
            export(model, export_to, share_tokens_with, config=model_config(cfg.vision))
            log.info(
                "exported them to %s, the token table as the rows that differ from %s", export_to, share_tokens_with
            )
        else:
            for f in (weights, config):
                shutil.copyfile(f, export_to / f.name)
            log.info("copied them to %s", export_to)
    return {"accuracy": acc, "direction": dirs, "train_seconds": total_s}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; the TrainConfig flags, their defaults and help come from TrainConfig's fields."""
    ap = argparse.ArgumentParser(
        prog="python -m nada.toy.clip_train", description="Train the toy world's tiny CLIP (resumable)."
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="run folder: state.pt, train.log, clip.pt, clip_config.json"
    )
    add_dataclass_arguments(ap, TrainConfig, keep_defaults=True)
    ap.add_argument(
        "--export",
        type=Path,
        default=None,
        help="also copy clip.pt and clip_config.json here, e.g. src/nada/assets/toy",
    )
    ap.add_argument(
        "--share-tokens-with",
        type=Path,
        default=None,
        help="with --export: store the token table as the rows that differ from this clip.pt's (how toy-robust ships)",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: python -m nada.toy.clip_train --out DIR --steps N --seed S [--export DIR]."""
    args = parse_args(argv)
    try:
        cfg = dataclass_from_args(TrainConfig, args, list(field_helps(TrainConfig)))
        if args.share_tokens_with is not None and args.export is None:
            raise NadaError("--share-tokens-with applies to the --export copy: give --export as well")
        train(cfg, args.out, args.export, args.share_tokens_with)
    except NadaError as e:
        print(f"clip_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
