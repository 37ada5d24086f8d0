"""The toy generator's last stage: snapped latents and the mapping distillation (nada.toy.sharpen), on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nada.errors import NadaError
from nada.toy import render as R
from nada.toy import sharpen as S
from nada.toy.generator_train import face_params


def probabilities(u: torch.Tensor) -> torch.Tensor:
    """Phi of the attribute coordinates [N, len(ATTRIBUTES)] of pixel-normalised latents."""
    return torch.special.ndtr(u[:, : len(R.ATTRIBUTES)].double())


def test_snapped_latents_keep_every_attribute_and_leave_the_borders():
    z = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    u = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True))
    snapped = S.snap_latent(z, 0.15)
    assert torch.allclose(snapped.pow(2).mean(1), torch.ones(2000), atol=1e-5)  # the mapping's pixel norm keeps it
    assert face_params(snapped).labels().keys() == face_params(z).labels().keys()
    for k, v in face_params(z).labels().items():
        assert (face_params(snapped).labels()[k] == v).all(), k
    p = probabilities(snapped)
    for k, n in enumerate(len(v) for v in R.ATTRIBUTES.values()):
        inside = (p[:, k] * n) % 1.0  # position within the own bin, in units of the bin's width
        m = min(0.15, 0.5 / n) * n
        assert inside.min() >= m - 1e-6 and inside.max() <= 1 - m + 1e-6, (k, inside.min(), inside.max())
    # Everything past the attribute coordinates keeps its direction.
    rest, rest_u = snapped[:, len(R.ATTRIBUTES) :], u[:, len(R.ATTRIBUTES) :]
    assert torch.nn.functional.cosine_similarity(rest, rest_u, dim=1).min() > 1 - 1e-5
    # Margin 0 changes nothing; latents already far from every border stay where they are.
    assert torch.allclose(S.snap_latent(z, 0.0), u, atol=1e-5)
    sizes = torch.tensor([len(v) for v in R.ATTRIBUTES.values()], dtype=torch.float64)
    central = ((probabilities(u) * sizes % 1.0 - 0.5).abs() < 0.5 - 0.02 * sizes).all(1)
    assert central.sum() > 100 and torch.allclose(S.snap_latent(z, 0.02)[central], u[central], atol=1e-5)
    with pytest.raises(NadaError, match="0 <= margin <= 0.5"):
        S.snap_latent(z, 0.7)


def tiny_generator():
    from nada.generator.networks import Generator

    torch.manual_seed(0)
    G = Generator(64, style_dim=32, n_mlp=2, channels={4: 8, 8: 8, 16: 8, 32: 4, 64: 4})
    G.compute_mean_latent(256)
    return G


def test_distillation_moves_the_mapping_towards_snapped_latents_and_nothing_else():
    G = tiny_generator()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    cfg = S.SharpenConfig(margin=0.15, steps=100, batch_size=64, lr=5.0)
    history = S.distill_mapping(G, cfg, progress=False, log_every=50)
    assert [h["step"] for h in history] == [50, 100]
    teacher_error = _error_of_unchanged_mapping(before, cfg)
    assert history[-1]["eval_mse"] < 0.7 * teacher_error  # measured: 0.020 against 0.033
    changed = {k for k, v in G.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("style.") for k in changed)  # the synthesis network is untouched
    assert not any(p.requires_grad for p in G.parameters())


def _error_of_unchanged_mapping(state: dict, cfg: S.SharpenConfig) -> float:
    """The distillation's held-out error before any step: the old mapping against itself on snapped latents."""
    G = tiny_generator()
    G.load_state_dict(state)
    z = torch.randn(4096, G.style_dim, generator=torch.Generator().manual_seed(S.EVAL_SEED))
    with torch.no_grad():
        return (G.style(z) - G.style(S.snap_latent(z, cfg.margin))).pow(2).mean().item()


def test_sharpen_writes_a_checkpoint_with_its_settings_and_refuses_to_overwrite(tmp_path: Path, capsys):
    from nada.generator.checkpoints import load_generator, read_metadata, save_checkpoint

    base = save_checkpoint(
        tmp_path / "base.pt", tiny_generator(), {"method": "tiny test generator", "train_time_s": 1.0}
    )
    out = tmp_path / "sharp.pt"
    argv = ["--base", str(base), "--out", str(out), "--steps", "4", "--batch-size", "16", "--lr", "1"]
    assert S.main(argv) == 0
    meta = read_metadata(out)
    assert meta["sharpen_config"]["steps"] == 4 and meta["sharpen_config"]["margin"] == S.SharpenConfig.margin
    assert (
        meta["method"].startswith("tiny test generator;")
        and meta["train_time_s"] == 1.0
        and meta["sharpen_time_s"] >= 0
    )
    G = load_generator(out)
    assert G.mean_latent.abs().sum() > 0
    assert S.main(argv) == 2 and "already exists" in capsys.readouterr().err
