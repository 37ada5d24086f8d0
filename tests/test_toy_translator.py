"""The toy translator: its face maps, its networks' files and training state, and the shipped networks' drawings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nada.errors import NadaError
from nada.toy import render as R
from nada.toy import translator as T
from nada.toy import translator_train as TT


def test_face_maps_are_the_part_groups_then_the_hair_colour_on_the_hair() -> None:
    faces = R.sample_params(6, seed=4)
    maps = T.face_maps(faces)
    assert maps.shape == (6, T.MAP_CHANNELS, 64, 64) and 0 <= float(maps.min()) and float(maps.max()) <= 1
    parts = torch.from_numpy(R.part_maps(faces))
    assert torch.equal(maps[:, : len(R.PART_GROUPS)], parts)
    hair = torch.from_numpy(R.hair_rgb(faces))
    covered = parts[:, 0] > 0.99
    for i in range(6):
        assert torch.allclose(maps[i, -3:][:, covered[i]], hair[i][:, None].expand(3, int(covered[i].sum())), atol=0.01)
    assert float(maps[:, -3:][(parts[:, :1] == 0).expand(-1, 3, -1, -1)].abs().max()) == 0.0
    # Black hair is darker than blond hair on the map, whatever the style draws.
    black, blond = (R.sample_params(64, seed=1).hair_color == k for k in (0, 2))
    rgb = R.hair_rgb(R.sample_params(64, seed=1))
    assert rgb[black].mean() < 0.2 < 0.6 < rgb[blond].mean()


def test_training_resumes_only_the_same_kind_of_network(tmp_path: Path) -> None:
    out = tmp_path / "reader.pt"
    reader = T.PartReader()
    loss_at = lambda step: TT.reader_loss(reader, step)  # noqa: E731
    assert TT.optimise(out, reader, 1e-3, 5.0, loss_at, TT.READER_META, until=1) == 1 and out.exists()
    resumed = T.PartReader()
    assert TT.optimise(out, resumed, 1e-3, 5.0, loss_at, TT.READER_META, until=1) == 1  # resumed at its step
    assert all(torch.equal(a, b) for a, b in zip(reader.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(SystemExit, match="holds a network of"):
        TT.optimise(out, T.PartPrior(), 3e-4, 0.0, lambda step: torch.zeros(()), TT.PRIOR_META)


def test_one_training_step_moves_the_network_and_lowers_its_loss_on_that_batch() -> None:
    torch.manual_seed(0)
    reader = T.PartReader()
    opt = torch.optim.Adam(reader.parameters(), 1e-3)
    before = TT.reader_loss(reader, 5)
    before.backward()
    opt.step()
    with torch.no_grad():
        assert float(TT.reader_loss(reader, 5)) < float(before)


def test_packed_files_hold_float16_tensors_that_load_into_the_networks(tmp_path: Path) -> None:
    torch.manual_seed(1)
    prior, reader = T.PartPrior(), T.PartReader()
    for name, net in (("p.pt", prior), ("r.pt", reader)):
        torch.save({"model": net.state_dict(), "step": 3}, tmp_path / name)
    written = TT.pack(tmp_path / "p.pt", tmp_path / "r.pt", tmp_path / "out")
    assert [p.name for p in written] == [T.PRIOR_FILE, T.READER_FILE]
    assert all(v.dtype == torch.float16 for v in torch.load(written[0], weights_only=True).values())
    loaded = T.load_network(written[1], T.PartReader(), "reader")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (loaded(x) - reader(x)).abs().max() < 0.02
    with pytest.raises(NadaError, match="does not fit the architecture"):
        T.load_network(written[0], T.PartReader(), "reader")


def test_translator_refuses_a_style_the_world_does_not_have() -> None:
    with pytest.raises(NadaError, match="'charcoal' is none of them"):
        T.ToyTranslator(T.PartPrior(), T.PartReader(), "charcoal")


def test_shipped_translator_draws_the_toy_generators_faces_as_sketches_the_judge_accepts() -> None:
    from nada.generator.checkpoints import load_generator
    from nada.guidance.translators import load_translator
    from nada.toy.evaluator import load_evaluator
    from nada.toy.quality import latents, quality_from_images

    toy = load_generator("toy").eval()
    z = latents(toy, 32, 7)  # not the judged latents (seed 0) nor those the pass settings were chosen on (5)
    translate = load_translator("toy", "photo", "sketch")
    with torch.no_grad():
        faces = toy(z, noise_mode="const")
        drawn = translate(faces, 0)
    assert drawn.shape == faces.shape and float(drawn.abs().max()) <= 1
    assert torch.equal(drawn, translate(faces, 0)) and not torch.equal(drawn, translate(faces, 1))
    report = quality_from_images(load_evaluator(), faces, drawn, "sketch")
    assert report.target_rate >= 0.85 and report.content_kept >= 0.7, (report.target_rate, report.content_kept)
