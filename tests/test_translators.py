"""Image translators: the registry, and the translation term of the adaptation loop on a tiny generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nada.adaptation.loop import adapt
from nada.config import AdaptConfig
from nada.errors import NadaError
from nada.guidance import translators
from test_adapt import config as adapt_config
from test_adapt import log_of, make_generator


class Grey:
    """A translator for tests: the images in grey (their channel mean), recording the seeds it is given."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        self.seeds.append(seed)
        return images.mean(1, keepdim=True).expand_as(images)


@pytest.fixture
def grey(monkeypatch: pytest.MonkeyPatch) -> Grey:
    """A registered translator "test-grey" (taken out of the registry after the test)."""
    made = Grey()
    entry = translators.RegisteredTranslator("test-grey", lambda source, target, device: made, "grey")
    monkeypatch.setitem(translators._REGISTRY, "test-grey", entry)
    return made


def config(tmp_path: Path, **kw) -> AdaptConfig:
    """test_adapt's tiny run, trained by the "test-grey" translator alone."""
    translated = dict(
        iterations=12,
        noise_mode="const",
        translator="test-grey",
        lambda_translate=1.0,
        lambda_direction=0.0,
        sample_every=0,
        save_every=0,
    )
    return adapt_config(tmp_path, **{**translated, **kw})


def test_unknown_or_missing_translator_is_one_line_naming_the_fix(grey: Grey) -> None:
    with pytest.raises(NadaError, match=r"unknown translator 'grey'.*test-grey"):
        translators.load_translator("grey", "photo", "sketch")
    with pytest.raises(NadaError, match="no translator is named: pass --translator"):
        AdaptConfig(target="sketch", generator="toy", lambda_translate=1.0).validate()
    with pytest.raises(NadaError, match="cannot register a translator"):
        translators.register_translator("a,b", lambda source, target, device: Grey())
    assert "test-grey" in [t.name for t in translators.registered_translators()]


def test_translation_term_pulls_the_generator_towards_the_drawings(
    tmp_path: Path, tiny, grey: Grey, monkeypatch: pytest.MonkeyPatch
) -> None:
    G = make_generator()
    base = {k: v.clone() for k, v in G.state_dict().items()}
    encoded = []
    monkeypatch.setattr(tiny, "encode_image", lambda img: encoded.append(img))  # no CLIP term may encode
    cfg = config(tmp_path, seed=3)
    G_train = adapt(cfg, progress=False, G_base=G, clip=tiny)
    records = log_of(cfg)
    losses = [r["translate"] for r in records]
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert records[-1]["loss"] == pytest.approx(losses[-1], rel=1e-6)
    # The seeds follow the run's seed and the step, so a resumed run draws the same targets.
    assert grey.seeds == [3 * 1_000_003 + step for step in range(12)]
    assert encoded == []
    assert all(torch.equal(base[k], v) for k, v in G.state_dict().items())
    with torch.no_grad():
        ws = G.broadcast_w(G.mapping(torch.randn(8, 32, generator=torch.Generator().manual_seed(9))))
        before, after = G.synthesis(ws, noise_mode="const"), G_train.synthesis(ws, noise_mode="const")
    spread = lambda img: float((img - img.mean(1, keepdim=True)).abs().mean())  # noqa: E731  colour left
    assert spread(after) < 0.75 * spread(before), (spread(before), spread(after))  # 0.70 -> 0.37 measured


def test_translation_term_adds_to_the_clip_terms_and_resumes_bit_identical(tmp_path: Path, tiny, grey: Grey) -> None:
    kw = dict(iterations=4, lambda_direction=1.0, lambda_translate=0.5, save_every=2)
    whole = config(tmp_path / "a", **kw)
    full = adapt(whole, progress=False, G_base=make_generator(), clip=tiny)
    first = log_of(whole)[0]
    assert first["loss"] == pytest.approx(first["direction"] + 0.5 * first["translate"], rel=1e-6)

    def interrupt(step: int, record: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    cut = config(tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        adapt(cut, progress=False, G_base=make_generator(), clip=tiny, callback=interrupt)
    resumed = adapt(cut, progress=False, G_base=make_generator(), clip=tiny, resume=True)
    ref = full.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in resumed.state_dict().items())


def test_a_run_without_clip_terms_loads_no_clip(tmp_path: Path, grey: Grey, monkeypatch: pytest.MonkeyPatch) -> None:
    import nada.adaptation.loop as loop

    def refuse(*args, **kwargs):
        raise AssertionError("no CLIP term and a fixed layer set: no CLIP may be loaded")

    monkeypatch.setattr(loop, "load_clip_ensemble", refuse)
    adapt(config(tmp_path, iterations=2), progress=False, G_base=make_generator())
    assert grey.seeds == [0, 1]
    with pytest.raises(AssertionError, match="no CLIP may be loaded"):  # the directional term needs one
        adapt(config(tmp_path / "b", iterations=2, lambda_direction=1.0), progress=False, G_base=make_generator())
