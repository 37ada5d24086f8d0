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
# A table stored against no other CLIP: the rows training never reached hold a seeded random draw that the
# loader makes again, so only the trained rows are in the file; this key holds (seed, rows of the table).
UNTRAINED = "token_embedding.untrained_seed_rows"
UNTRAINED_STD = 0.02  # open_clip's initialisation of token embeddings


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
    base_sd = None if base is None else full_state_dict(read_clip_weights(_toy_files(base)[1]))
    sd = full_state_dict(read_clip_weights(weights), base_sd)
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


def untrained_table(seed: int, rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """The seeded stand-in [rows, width] for token-table rows that training never reached (std UNTRAINED_STD)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, width, generator=gen) * UNTRAINED_STD).to(dtype)


def pack_against_untrained(sd: dict[str, torch.Tensor], trained: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """``sd`` with its token table [V, D] kept as the ``trained`` rows [R] only; `untrained_table` makes the rest."""
    table, rows = sd[TOKEN_TABLE], torch.unique(trained.long())
    packed = {k: v for k, v in sd.items() if k != TOKEN_TABLE}
    packed[TABLE_ROWS], packed[TABLE_VALUES] = rows, table[rows].clone()
    packed[UNTRAINED] = torch.tensor([seed, table.shape[0]])
    return packed


def full_state_dict(
    sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """A CLIP state dict with its whole token table, however it was stored: whole, against the seeded untrained
    table (`pack_against_untrained`), or against ``base``'s table (`pack_token_table`)."""
    if TABLE_ROWS not in sd:
        return sd
    if UNTRAINED in sd:
        seed, rows = (int(v) for v in sd[UNTRAINED])
        values = sd[TABLE_VALUES]
        stand_in = untrained_table(seed, rows, values.shape[1], values.dtype)
        return unpack_token_table({k: v for k, v in sd.items() if k != UNTRAINED}, {TOKEN_TABLE: stand_in})
    if base is None:
        raise NadaError(
            "these CLIP weights store only the token-table rows that differ from another CLIP's: "
            "load them with that CLIP's weights as the base (clip_train --share-tokens-with names it)"
        )
    return unpack_token_table(sd, base)
