"""The toy world's packaged CLIPs (``TOY_CLIPS``), registered with nada like any other named CLIP.

Each lives in a folder under ``nada/assets`` with ``clip_config.json`` + ``clip.pt``. Fine-tuning leaves
almost every row of the 49408 x 64 token table untouched, so a fine-tuned copy stores only the rows that
differ from its base's table (`pack_token_table`) and the full table is rebuilt when it loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nada.errors import NadaError
from nada.guidance.clip import ClipModel
from nada.guidance.clip_specs import register_clip
from nada.guidance.clip_weights import load_clip_from_config, read_clip_weights
from nada.toy.strokes import INPUT_STEMS

TOY_NAME = "toy"
# name -> (folder under nada/assets, the packaged CLIP whose token table it shares, or None)
TOY_CLIPS: dict[str, tuple[str, str | None]] = {
    TOY_NAME: ("toy", None),
    "toy-robust": ("toy/clip_robust", TOY_NAME),
    "toy-rn": ("toy/clip_rn", TOY_NAME),
    "toy-strokes": ("toy/clip_strokes", TOY_NAME),
}
_DESCRIPTIONS = {
    TOY_NAME: "the toy world's tiny ViT CLIP",
    "toy-robust": "the toy CLIP after embedding-stability training",
    "toy-rn": "a ResNet image tower trained into the toy CLIP's text space",
    "toy-strokes": "a ResNet image tower that sees only the luma's strokes, in the toy CLIP's text space",
}
TOKEN_TABLE = "token_embedding.weight"
TABLE_ROWS, TABLE_VALUES = "token_embedding.changed_rows", "token_embedding.changed_values"


def register_toy_clips() -> None:
    """Register every packaged toy CLIP with `nada.guidance.clip_specs.register_clip` (idempotent)."""
    for name in TOY_CLIPS:
        register_clip(name, load_toy_clip, _DESCRIPTIONS[name], replace=True)


def toy_clip_dir(name: str = TOY_NAME) -> Path:
    """Folder of one of the project's tiny CLIPs (``TOY_CLIPS``) inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets" / TOY_CLIPS[name][0]


def _toy_files(name: str) -> tuple[Path, Path]:
    """(clip_config.json, clip.pt) of a packaged toy CLIP; a clear error when the package lacks them."""
    folder = toy_clip_dir(name)
    config, weights = folder / "clip_config.json", folder / "clip.pt"
    if not (config.is_file() and weights.is_file()):
        raise NadaError(
            f"the toy CLIP files are missing from the installed package (expected {config} and {weights}): "
            "reinstall nada from a complete checkout (pip install -e .)"
        )
    return config, weights


def load_toy_clip(name: str, device: str | torch.device, antialias: bool, precision: str) -> ClipModel:
    """A packaged toy CLIP (see `TOY_CLIPS`); one that shares another's token table gets the full table rebuilt."""
    config, weights = _toy_files(name)
    base = TOY_CLIPS[name][1]
    sd = None
    if base is not None:
        sd = unpack_token_table(read_clip_weights(weights), read_clip_weights(_toy_files(base)[1]))
    return load_clip_from_config(
        config, weights, device, antialias, precision, name=name, state_dict=sd, input_stems=INPUT_STEMS
    )


def pack_token_table(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with its token table [V, D] replaced by the rows that differ from ``base``'s: indices [R], rows [R, D]."""
    table, base_table = sd[TOKEN_TABLE], base[TOKEN_TABLE]
    assert table.shape == base_table.shape, (
        f"token tables differ in shape: {tuple(table.shape)} vs {tuple(base_table.shape)}"
    )
    rows = torch.nonzero((table != base_table.to(table.dtype)).any(dim=1)).flatten()
    packed = {k: v for k, v in sd.items() if k != TOKEN_TABLE}
    packed[TABLE_ROWS], packed[TABLE_VALUES] = rows, table[rows].clone()
    return packed


def unpack_token_table(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_token_table``: the full state dict, its token table rebuilt from ``base``'s."""
    if TABLE_ROWS not in sd or TABLE_VALUES not in sd:
        raise NadaError(
            f"these CLIP weights do not hold {TABLE_ROWS} and {TABLE_VALUES}: they are not a shared-table copy"
        )
    rows, values = sd[TABLE_ROWS].long(), sd[TABLE_VALUES]
    table = base[TOKEN_TABLE].to(values.dtype).clone()
    if values.shape != (len(rows), table.shape[1]) or (len(rows) and int(rows.max()) >= table.shape[0]):
        raise NadaError(
            f"the shared token table rows ({tuple(values.shape)}) do not fit the base table ({tuple(table.shape)}): "
            "the copy and its base come from different models; reinstall nada"
        )
    table[rows] = values
    full = {k: v for k, v in sd.items() if k not in (TABLE_ROWS, TABLE_VALUES)}
    full[TOKEN_TABLE] = table
    return full
