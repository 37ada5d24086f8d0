"""The end-to-end run on the toy world: the photo-only toy generator adapted towards "sketch" with the
`toy-sketch` preset's recipe (the README command: the toy translator's drawings as targets), through the
public API, judged by the strict toy judge (a CNN the adaptation never sees, trained to answer "none" for
global filters of photos and style blends).

What it reaches is measured in docs/toy_quality.md ("Status (2026-12-06)"): the judge calls 95-98 % of the
adapted faces sketches (seeds 0-3), content kept 87-91 %, and their strokes are closer to the true sketch
renders than any global filter of the unadapted faces, though not yet half-way to the supervised oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

N_JUDGED = 128


def missing_toy_assets() -> list[str]:
    """Toy-world files the run needs that the package does not hold."""
    folder = Path(__file__).resolve().parents[1] / "src" / "nada" / "assets" / "toy"
    needed = ["generator.pt", "clip.pt", "clip_config.json", "evaluator.pt"]
    needed += ["translator/prior.pt", "translator/reader.pt"]
    needed += [f"{guide}/{name}" for guide in ("clip_robust", "clip_rn") for name in ("clip.pt", "clip_config.json")]
    return [str(folder / name) for name in needed if not (folder / name).is_file()]


@pytest.fixture(scope="module")
def sketch_run(tmp_path_factory):
    """One photo -> sketch run with the toy-sketch preset's recipe: (quality report, per-iteration log, run folder,
    adapted generator, the worst global filter of the unadapted faces and its sketch rate)."""
    missing = missing_toy_assets()
    if missing:
        pytest.skip("the toy-world run needs the trained toy assets: " + ", ".join(missing))
    from nada.adaptation.loop import adapt
    from nada.config import AdaptConfig
    from nada.generator.checkpoints import load_generator
    from nada.toy.evaluator import load_evaluator
    from nada.toy.quality import measure_quality
    from nada.weights.presets import get_preset

    out = tmp_path_factory.mktemp("toy-sketch")
    config = AdaptConfig(
        generator="toy",
        source="photo",
        target="sketch",
        out_dir=str(out),
        sample_every=0,
        save_every=0,
        **dict(get_preset("toy-sketch").options),
    )
    adapted = adapt(config, progress=False)
    base = load_generator("toy")
    judge = load_evaluator()
    report = measure_quality(base, adapted, judge, "sketch", n=N_JUDGED, fidelity=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    from nada.toy.judge import filter_table, worst_filter
    from nada.toy.quality import render_pairs

    frozen, _ = render_pairs(base, adapted, N_JUDGED)
    return report, log, out, adapted, worst_filter(filter_table(judge, frozen), "sketch")


@pytest.mark.slow
def test_toy_run_follows_the_translator_and_keeps_the_faces(sketch_run):
    report, log, out, adapted, _ = sketch_run
    summary = f"{report.to_dict()}"
    # The translation term alone trains (no CLIP term) and falls (measured: 0.295 over the first 10 iterations,
    # 0.046 over the last 20).
    assert all(set(r) >= {"translate"} and "direction" not in r for r in log)
    first, last = sum(r["translate"] for r in log[:10]) / 10, sum(r["translate"] for r in log[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    # No image was a sketch before; afterwards the judge calls hardly any "none" and the faces keep their
    # attributes (measured: 87 % all six, 0.98 per attribute on average) and their variety (0.95).
    assert report.frozen_target_rate < 0.05, summary
    assert report.reject_rate < 0.1, summary
    assert report.content_kept > 0.8 and report.content_kept_mean > 0.95, summary
    assert report.diversity_ratio > 0.85, summary
    # The run wrote what a user loads afterwards, and loading it gives the same generator.
    from nada.generator.checkpoints import load_generator

    reloaded = load_generator(out / "generator.pt")
    z = torch.randn(2, adapted.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(z), adapted(z))


@pytest.mark.slow
def test_toy_run_makes_sketches_the_judge_accepts(sketch_run):
    report, _, _, _, (filter_name, filter_rate) = sketch_run
    # The bar: at least 90 % sketches (measured 98 %), and clearly more than any global filter of the
    # unadapted faces (at most 2.3 %).
    assert report.target_rate >= 0.9 and report.target_rate > filter_rate + 0.10, report.to_dict()


@pytest.mark.slow
def test_toy_run_draws_the_true_sketch_strokes_better_than_any_filter(sketch_run):
    fid = sketch_run[0].fidelity
    # Clearly closer (stroke distance) to the true sketch renders than the best filter (measured 0.0155 against
    # 0.0184).
    assert fid["adapted"]["stroke"] < 0.9 * fid["best_filter"]["stroke"], fid


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="not yet met (docs/toy_quality.md, 2026-12-06): content kept 87 % (hair colour), stroke 0.0155, "
    "short of half-way from the best filter (0.0184) to the oracle (0.0121)",
)
def test_toy_run_meets_the_whole_bar_of_a_real_adaptation(sketch_run):
    report = sketch_run[0]
    # The goals beyond the sketch rate: content kept >= 0.9 and a stroke distance at least half-way from the
    # best filter to the supervised oracle (0.0121, docs/toy_quality.md; not fine-tuned in CI).
    halfway = (report.fidelity["best_filter"]["stroke"] + 0.0121) / 2
    assert report.content_kept >= 0.9 and report.fidelity["adapted"]["stroke"] <= halfway, report.to_dict()


def test_cli_run_on_the_toy_base_writes_the_evaluator_metrics(tmp_path, capsys):
    if missing_toy_assets():
        pytest.skip("needs the trained toy assets: " + ", ".join(missing_toy_assets()))
    from nada.frontends.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "adapt",
                "--generator",
                "toy",
                "--source",
                "photo",
                "--target",
                "pixel art",
                "--iterations",
                "2",
                "--layers",
                "all",
                "--out",
                str(out),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == "pixel art" and metrics["n"] == N_JUDGED
    assert 0 <= metrics["target_rate"] <= 1 and metrics["frozen_target_rate"] < 0.1 and metrics["diversity_ratio"] > 0
    assert f"metrics:     {out / 'metrics.json'} (pixel art:" in printed
    # A target the evaluator knows nothing about: the run still succeeds and says so.
    assert (
        main(
            [
                "adapt",
                "--generator",
                "toy",
                "--source",
                "photo",
                "--target",
                "werewolf",
                "--iterations",
                "1",
                "--out",
                str(tmp_path / "wolf"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "metrics:     none" in capsys.readouterr().out and not (tmp_path / "wolf" / "metrics.json").exists()


def test_cli_judges_a_toy_generator_trained_by_the_user_but_not_other_generators(tmp_path, capsys):
    if missing_toy_assets():
        pytest.skip("needs the trained toy assets: " + ", ".join(missing_toy_assets()))
    from nada.frontends.cli import main
    from nada.generator.checkpoints import save_checkpoint
    from nada.generator.networks import Generator
    from nada.toy import generator_train as gt

    cfg = gt.TrainConfig(
        steps=1,
        style_dim=32,
        n_mlp=2,
        channels=((4, 16), (8, 16), (16, 8), (32, 8), (64, 8)),
        batch_size=2,
        eval_size=8,
    )
    own = gt.export_generator(gt.train(cfg, tmp_path / "train", progress=False), tmp_path / "own.pt")
    assert (
        main(
            [
                "adapt",
                "--generator",
                str(own),
                "--clip",
                "toy",
                "--source",
                "photo",
                "--target",
                "sketch",
                "--iterations",
                "1",
                "--layers",
                "all",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["target"] == "sketch"
    assert "metrics:     " + str(tmp_path / "run" / "metrics.json") in capsys.readouterr().out
    # A generator without toy-world metadata is not judged by the toy evaluator.
    plain = Generator(64, style_dim=32, n_mlp=2, channels=dict(cfg.channels))
    plain.compute_mean_latent(64, seed=0)
    other = save_checkpoint(tmp_path / "other.pt", plain, {"note": "not toy"})
    assert (
        main(
            [
                "adapt",
                "--generator",
                str(other),
                "--clip",
                "toy",
                "--source",
                "photo",
                "--target",
                "sketch",
                "--iterations",
                "1",
                "--layers",
                "all",
                "--out",
                str(tmp_path / "run2"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert not (tmp_path / "run2" / "metrics.json").exists()
