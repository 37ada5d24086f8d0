"""nada.toy.quality: the metric functions on hand-made predictions, and on ground-truth renders judged by the shipped
evaluator."""

from __future__ import annotations

import pytest
import torch

from nada.errors import NadaError
from nada.generator.networks import Generator
from nada.toy import quality as Q
from nada.toy import render as R
from nada.toy.evaluator import Evaluator, EvaluatorConfig, default_weights_path, load_evaluator


@pytest.fixture(scope="module")
def evaluator():
    if not default_weights_path().is_file():
        pytest.skip(f"the toy evaluator weights are not built yet ({default_weights_path()})")
    return load_evaluator()


def test_parse_target_styles_and_attributes():
    assert Q.parse_target("sketch") == Q.QualityTarget("style", "sketch")
    assert Q.parse_target("pixel art").value == "pixel art"
    t = Q.parse_target("mouth=smiling")
    assert (t.key, t.value, t.is_style, str(t)) == ("mouth", "smiling", False, "mouth=smiling")
    with pytest.raises(NadaError, match="unknown toy attribute 'nose'"):
        Q.parse_target("nose=big")
    with pytest.raises(NadaError, match="unknown value 'cubism' for style"):
        Q.parse_target("cubism")


@pytest.mark.parametrize(
    "source, target, expected",
    [
        ("photo", "sketch", "sketch"),
        ("photo", "a pixel art image", "pixel art"),
        ("a photo of a face", "a watercolor painting of a face", "watercolor"),
        ("face", "smiling face", "mouth=smiling"),
        ("face", "a face with glasses", "glasses=yes"),
        ("face with glasses", "face without glasses", "glasses=no"),
        ("face", "a face with blonde hair", "hair_color=blond"),
        ("photo", "werewolf", None),  # nothing the evaluator knows
        ("face", "smiling face with glasses", None),  # two edits: no single target
        ("sketch", "sketch", None),
    ],
)
def test_infer_target_reads_what_the_texts_ask_for(source, target, expected):
    found = Q.infer_target(source, target)
    assert (None if found is None else str(found)) == expected


def test_compared_keys_leave_out_only_what_the_target_changes():
    keys = ["style", "mouth", "eyes"]
    assert Q.compared_keys(Q.parse_target("sketch"), keys) == ["mouth", "eyes"]
    assert Q.compared_keys(Q.parse_target("mouth=smiling"), keys) == ["style", "eyes"]  # an edit must not restyle


def test_rates_on_hand_made_predictions():
    classes = {"style": R.STYLES, "mouth": R.ATTRIBUTES["mouth"], "eyes": R.ATTRIBUTES["eyes"]}
    frozen = {
        "style": torch.tensor([0, 0, 0, 0]),
        "mouth": torch.tensor([0, 1, 2, 1]),
        "eyes": torch.tensor([0, 0, 1, 1]),
    }
    train = {
        "style": torch.tensor([1, 1, 1, 0]),
        "mouth": torch.tensor([0, 1, 0, 1]),
        "eyes": torch.tensor([0, 1, 1, 1]),
    }
    assert Q.target_rate(train, Q.parse_target("sketch"), classes) == 0.75
    assert Q.target_rate(frozen, Q.parse_target("sketch"), classes) == 0.0
    kept = Q.content_kept(frozen, train, ["mouth", "eyes"])
    assert kept["mouth"] == 0.75 and kept["eyes"] == 0.75
    assert kept["overall"] == 0.5  # samples 0 and 3 keep both; 1 loses eyes, 2 loses mouth
    assert kept["mean"] == 0.75


def test_mean_pairwise_distance_and_diversity_ratio():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = (2**0.5 + 2 + 2**0.5) / 3
    assert Q.mean_pairwise_distance(e) == pytest.approx(expected)
    collapsed = e[:1].repeat(3, 1)
    assert Q.diversity_ratio(e, collapsed) == 0.0
    assert Q.diversity_ratio(e, e) == pytest.approx(1.0)
    assert Q.diversity_ratio(e, 2 * e) == pytest.approx(2.0)


def test_identical_generators_change_nothing():
    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()
    E = Evaluator(EvaluatorConfig(channels=(4, 8), embed_dim=8)).eval()
    report = Q.measure_quality(G, G, E, "sketch", n=12, batch_size=5)
    assert report.n == 12
    assert report.target_rate == report.frozen_target_rate
    assert report.content_kept == 1.0 and report.content_kept_mean == 1.0
    assert set(report.content_per_key) == set(R.ATTRIBUTES)
    assert report.diversity_ratio == pytest.approx(1.0)
    assert report.to_dict()["target"] == "sketch"


def test_ground_truth_restyle_scores_as_a_perfect_adaptation(evaluator):
    """The renderer's own photo -> sketch change is what a perfect adaptation would do: high target rate, content
    kept."""
    params = R.sample_params(48, seed=123)
    photo, sketch = R.render_tensor(params, "photo", seed=1), R.render_tensor(params, "sketch", seed=1)
    report = Q.quality_from_images(evaluator, photo, sketch, "sketch")
    assert report.frozen_target_rate == 0.0
    assert report.target_rate > 0.95
    assert report.content_kept > 0.8 and report.content_kept_mean > 0.95
    assert report.diversity_ratio > 0.6


def test_ground_truth_edit_and_collapse(evaluator):
    params = R.sample_params(48, seed=7)
    photo = R.render_tensor(params, "photo", seed=1)
    smiling = R.render_tensor(R.with_attributes(params, mouth="smiling"), "photo", seed=1)
    edit = Q.quality_from_images(evaluator, photo, smiling, "mouth=smiling")
    assert edit.target_rate > 0.9 and edit.frozen_target_rate < 0.6
    assert edit.content_per_key["style"] == 1.0 and edit.content_kept > 0.8
    # every latent giving the same face (only the pencil strokes vary): on target, but collapsed and the content lost
    collapsed = R.render_tensor(params.subset([0] * 48), "sketch", seed=1)
    bad = Q.quality_from_images(evaluator, photo, collapsed, "sketch")
    assert bad.target_rate > 0.9 and bad.diversity_ratio < 0.3 and bad.content_kept < 0.3


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_toy_quality.py"
    spec = importlib.util.spec_from_file_location("bench_toy_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_benchmark_runs_the_toy_recipe_and_writes_its_table_and_figure(tmp_path, capsys):
    import json

    from nada.toy.plugin import TOY_RECIPE, TRANSLATOR_RECIPE

    bench = _bench_module()
    assert bench.main(["--rows", "sketch,last:2", "--iterations", "1", "--n", "8", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["row"] for r in rows] == ["sketch", "last:2"]
    assert rows[0]["clip"] == dict(TOY_RECIPE)["clip"] and rows[0]["layers"] == "all" and rows[1]["layers"] == "last:2"
    assert rows[0]["lr"] == TRANSLATOR_RECIPE["lr"] and rows[1]["lr"] == dict(TOY_RECIPE)["lr"]
    assert all(0 <= r["target_rate"] <= 1 for r in rows)
    assert (tmp_path / "quality.png").stat().st_size > 1000 and "goal met" in capsys.readouterr().out
    assert bench.base_settings("defaults") == {"clip": "toy"}
    # A style with a packaged preset starts from that preset's own recipe (pixel art: a larger lr).
    from nada.weights.presets import get_preset

    assert bench.base_settings("toy", "sketch") == {**dict(TOY_RECIPE), **TRANSLATOR_RECIPE}
    assert bench.base_settings("toy", "sketch") == dict(get_preset("toy-sketch").options)
    assert bench.base_settings("toy", "pixel art") == dict(get_preset("toy-pixel-art").options) != dict(TOY_RECIPE)
