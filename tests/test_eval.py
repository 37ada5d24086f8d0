"""`nada eval`: metric functions against values computed by hand, FID/KID through torchmetrics against numpy,
judge choice, weights through the registry (random stand-ins, offline messages), and whole runs on both worlds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nada.errors import NadaError
from nada.evaluation import evaluate as E
from nada.frontends.cli import main

# ---------------------------------------------------------------- metric functions


def test_directional_similarity_and_text_score_by_hand():
    g = torch.Generator().manual_seed(0)
    f_base, f_run, d = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g), torch.randn(1, 7, generator=g)
    d = d / d.norm()
    got = E.directional_similarity(f_base, f_run, d)
    for i in range(5):
        delta = (f_run[i] - f_base[i]).numpy()
        want = float(delta @ d[0].numpy() / np.linalg.norm(delta))
        assert got[i].item() == pytest.approx(want, abs=1e-5)
    score = E.text_score(f_run, d)
    want = [float(f_run[i].numpy() @ d[0].numpy() / np.linalg.norm(f_run[i].numpy())) for i in range(5)]
    assert score.tolist() == pytest.approx(want, abs=1e-5)


def test_latent_pairs_all_or_a_seeded_sample():
    assert E.latent_pairs(4, 100).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    some = E.latent_pairs(50, 30, seed=3)
    assert some.shape == (30, 2) and bool((some[:, 0] < some[:, 1]).all())
    assert len({tuple(p) for p in some.tolist()}) == 30
    assert torch.equal(some, E.latent_pairs(50, 30, seed=3)) and not torch.equal(some, E.latent_pairs(50, 30, seed=4))


def test_mean_pairwise_distance_by_hand_and_uint8_input():
    imgs = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def l1(x, y):
        return (x - y).abs().mean(dim=(1, 2, 3))

    pairs = E.latent_pairs(5, 100)
    want = np.mean([float((imgs[i] - imgs[j]).abs().mean()) for i in range(5) for j in range(i + 1, 5)])
    assert E.mean_pairwise_distance(l1, imgs, pairs, batch_size=3) == pytest.approx(want, rel=1e-6)
    u8 = E.as_uint8(imgs)
    assert u8.dtype == torch.uint8 and float((E.as_float(u8) - imgs).abs().max()) <= 1 / 127.5
    assert E.mean_pairwise_distance(l1, u8, pairs) == pytest.approx(want, abs=2e-3)


def test_choose_judge_prefers_a_clip_that_did_not_guide():
    from nada.profiles import eval_world

    toy = eval_world("toy")  # the toy world's judges, registered by its plugin
    assert E.choose_judge(["ViT-B/32", "ViT-B/16"])[0] == "ViT-L/14"
    assert E.choose_judge(["ViT-L/14"], None)[0] == "ViT-B/16"
    name, note = E.choose_judge(["toy", "toy-robust", "toy-rn"], toy)
    assert name == "toy-rn" and "also guided" in note
    assert E.choose_judge(["toy"], toy) == ("toy-rn", "judge CLIP toy-rn (did not guide any evaluated run)")
    assert "also guided" in E.choose_judge(["toy"], toy, requested="toy")[1]


# ---------------------------------------------------------------- FID / KID: torchmetrics against numpy


class TinyFeatures(torch.nn.Module):
    """A seeded random feature network for uint8 images: conv, pooling, linear -> 6 features (float64)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.lin = torch.nn.Linear(16, 6)
        self.num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x.float() / 255)), 2).flatten(1)
        return self.lin(h).double()


def _fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two feature sets; tr sqrt(S1 S2) from the eigenvalues of S1^1/2 S2 S1^1/2."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s2 @ root)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def _kid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3."""
    d, m = a.shape[1], a.shape[0]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    off = lambda K: (K.sum() - np.trace(K)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


@pytest.mark.slow  # importing torchmetrics alone takes about 8 s of CPU
def test_fid_and_kid_match_numpy_on_small_inputs():
    g = torch.Generator().manual_seed(2)
    real = (torch.rand(40, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    fake = (torch.rand(40, 3, 8, 8, generator=g) * 60).to(torch.uint8)  # darker: a different distribution
    net = TinyFeatures()
    fid, kid = E.fid_kid_metrics(net, 40, 40, torch.device("cpu"))
    for batch in real.split(16):
        fid.update(batch, real=True)
        kid.update(batch, real=True)
    for m in (fid, kid):
        m.reset_real_features = False
    for batch in fake.split(16):
        fid.update(batch, real=False)
        kid.update(batch, real=False)
    got = E._compute_fid_kid(fid, kid)
    with torch.no_grad():
        a, b = net(real).numpy(), net(fake).numpy()
    assert got["fid"] == pytest.approx(_fid_by_hand(a, b), rel=1e-4, abs=1e-6)
    assert got["kid"] == pytest.approx(_kid_by_hand(a, b), rel=1e-4, abs=1e-8)  # every subset is the whole set
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-7)
    assert got["fid"] > 0.01
    # after the reset, the reference side is kept: the same fake images give the same numbers again
    for batch in fake.split(16):
        fid.update(batch, real=False)
        kid.update(batch, real=False)
    assert E._compute_fid_kid(fid, kid)["fid"] == pytest.approx(got["fid"], rel=1e-9)


def test_sample_count_warnings():
    assert E.sample_count_warnings(50000, 70000) == []
    both = E.sample_count_warnings(64, 5000)
    assert len(both) == 2 and "FID on 64 generated" in both[0] and "KID" in both[1]
    assert len(E.sample_count_warnings(2000, 3000)) == 1


def test_reference_folder_errors_and_resizing(tmp_path):
    with pytest.raises(NadaError, match="does not exist"):
        E.reference_files(tmp_path / "nope")
    (tmp_path / "refs").mkdir()
    Image.new("RGB", (10, 6), (255, 0, 0)).save(tmp_path / "refs" / "a.png")
    with pytest.raises(NadaError, match="holds 1 images"):
        E.reference_files(tmp_path / "refs")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "refs" / "b.jpg")
    (batch,) = list(E.reference_batches(tmp_path / "refs", 8, 4))
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == torch.uint8
    assert batch[0, 0].float().mean() > 250 and batch[1, 2].float().mean() > 200


# ---------------------------------------------------------------- weights through the registry


def test_missing_judge_weights_are_named_in_one_message(no_weights, golden):
    settings = E.EvalSettings(judge=str(golden / "tiny_clip_openai.pt"), reference=str(no_weights), lpips_net="alex")
    with pytest.raises(NadaError) as err:
        E.load_judges(settings, world=None, guided=["ViT-B/32"], device=torch.device("cpu"))
    msg = str(err.value)
    assert msg.startswith("3 judge weights unavailable") and "\n" not in msg
    for name in ("alexnet-owt-7be5be79.pth", "model_ir_se50.pth", "weights-inception-2015-12-05-6726825d.pth"):
        assert name in msg
    assert str(no_weights / "weights" / "inception-fid" / "weights-inception-2015-12-05-6726825d.pth") in msg


def _random_real_judges(cache: Path) -> None:
    """Random-weight stand-ins for LPIPS-alex, its linear layers and ArcFace, where the registry looks for them."""
    from nada.photos.perceptual import IRSE50, LPIPS

    torch.manual_seed(0)
    lp = LPIPS("alex")
    places = {
        ("alexnet-imagenet", "alexnet-owt-7be5be79.pth"): {
            f"features.{k}": v for k, v in lp.features.state_dict().items()
        },
        ("lpips-alex", "alex.pth"): {f"lin{k}.model.1.weight": m.weight.abs() for k, m in enumerate(lp.lins)},
        ("arcface-ir-se50", "model_ir_se50.pth"): IRSE50().state_dict(),
    }
    for (key, name), sd in places.items():
        (cache / "weights" / key).mkdir(parents=True, exist_ok=True)
        torch.save(sd, cache / "weights" / key / name)


@pytest.fixture
def adapted_run(no_weights, tmp_path, golden):
    """A run folder whose generator.pt is a perturbed copy of the random 32px base "random:32:1"; a judge CLIP path."""
    from nada.generator.checkpoints import random_generator, save_checkpoint

    G = random_generator(32, seed=1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.startswith("convs."):
                p.add_(0.2 * torch.randn_like(p))
    meta = {"base_model": "random:32:1", "source": "photo", "target": "sketch", "clip": "ViT-B/32"}
    save_checkpoint(tmp_path / "run" / "generator.pt", G, meta)
    return tmp_path / "run", str(golden / "tiny_clip_openai.pt")


@pytest.fixture
def real_world(adapted_run, no_weights):
    """adapted_run with random-weight LPIPS and ArcFace files where the registry looks for them."""
    _random_real_judges(no_weights)
    return adapted_run


@pytest.mark.slow
def test_real_world_eval_with_random_judges(real_world, tmp_path, capsys):
    run, judge = real_world
    code = main(["eval", str(run), "--judge", judge, "--n", "4", "--lpips-net", "alex", "--quiet", "--batch-size", "2"])
    assert code == 0
    out = capsys.readouterr()
    assert "ArcFace IR-SE50" in out.err and "judge CLIP" in out.err
    report = json.loads((run / "eval" / "eval.json").read_text())
    row = report["models"][0]
    assert "chosen by --judge" in report["judge_note"] and "also guided" not in report["judge_note"]
    assert row["guided_by"] == ["ViT-B/32"] and row["source"] == "photo" and row["target"] == "sketch"
    assert -1 <= row["clip_direction"] <= 1 and -1 <= row["identity"] <= 1 and row["diversity"] > 0
    assert row["diversity_ratio"] == pytest.approx(row["diversity"] / report["base_metrics"]["diversity"])
    assert "toy" not in row and report["world"] == "real"
    assert (run / "eval" / "eval.png").is_file() and "CLIP-DIR" in out.out and "ID" in out.out
    # the base against itself: identity 1 and a diversity ratio of 1, the same latents on both sides
    same = E.run_eval(
        [str(run)],
        E.EvalSettings(n=3, judge=judge, lpips_net="alex"),
        base=str(run / "generator.pt"),
        progress=False,
        log=lambda m: None,
    )
    r = same.report["models"][0]
    assert r["identity"] == pytest.approx(1.0, abs=1e-5) and r["diversity_ratio"] == pytest.approx(1.0, abs=1e-6)


def test_eval_refuses_to_overwrite_and_needs_compare(adapted_run, capsys):
    run, judge = adapted_run
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text("{}")
    assert main(["eval", str(run), "--judge", judge, "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "eval" / "eval.json").read_text() == "{}"
    assert main(["eval", str(run), str(run), "--quiet"]) == 2
    assert "pass --compare" in capsys.readouterr().err
    assert main(["eval", "no-such-model", "--quiet"]) == 2
    assert "neither a run folder" in capsys.readouterr().err


# ---------------------------------------------------------------- the toy world


@pytest.mark.slow
def test_toy_compare_two_presets_matches_the_toy_judge(tmp_path, capsys):
    from nada.generator.checkpoints import load_generator
    from nada.io import z_from_seeds
    from nada.toy.evaluator import load_evaluator
    from nada.toy.quality import quality_from_images
    from nada.weights.presets import load_preset

    refs = tmp_path / "refs"
    refs.mkdir()
    from nada.toy import render as R

    params = R.sample_params(12, seed=7)
    for i, img in enumerate(R.render_mixed(params, ["sketch"] * 12, seed=7)):
        Image.fromarray(np.asarray(img)).save(refs / f"{i:02d}.png")
    code = main(
        [
            "eval",
            "--compare",
            "toy-sketch",
            "toy-watercolor",
            "--n",
            "12",
            "--out",
            str(tmp_path / "ev"),
            "--reference",
            str(refs),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    sketch, water = report["models"]
    assert [sketch["label"], water["label"]] == ["toy-sketch", "toy-watercolor"]
    assert report["judge_clip"] == "toy-rn" and "also guided" in report["judge_note"]
    assert report["fid_features"] == "toy evaluator embedding" and len(report["warnings"]) == 2
    # the toy section equals the toy judge's own report on the same latents (seeds 0 .. 11, stored noise)
    z = z_from_seeds(list(range(12)), 64)
    base, G = load_generator("toy"), load_preset("toy-sketch")
    with torch.no_grad():
        want = quality_from_images(
            load_evaluator(), base(z, noise_mode="const").clamp(-1, 1), G(z, noise_mode="const").clamp(-1, 1), "sketch"
        ).to_dict()
    assert sketch["toy"]["target_rate"] == pytest.approx(want["target_rate"])
    assert sketch["toy"]["content_kept"] == pytest.approx(want["content_kept"])
    assert sketch["toy"]["diversity_ratio"] == pytest.approx(want["diversity_ratio"], rel=1e-4)
    # the preset's faces become sketches: the judge calls none of the base's faces sketches and most of the
    # preset's (11 of 12 measured, the twelfth "none"), and FID on the judge's features falls
    assert sketch["toy"]["frozen_target_rate"] == 0.0 and want["target_rate"] > 0.8, want
    assert sketch["clip_direction"] > 0.3
    assert sketch["fid"] < report["base_metrics"]["fid"]
    assert "TOY-TGT" in out.out and "FID" in out.out and "warning: FID on 12 generated" in out.err


def _row_lines(table: str, label: str) -> list[str]:
    return [line for line in table.splitlines() if line.split()[0] == label]


def test_toy_eval_reports_the_paired_fidelity_of_the_toy_judge(tmp_path, capsys):
    from nada.generator.checkpoints import load_generator
    from nada.io import z_from_seeds
    from nada.toy.evaluator import load_evaluator
    from nada.toy.judge import paired_fidelity
    from nada.weights.presets import load_preset

    argv = ["eval", "--compare", "toy-sketch", "toy-watercolor", "--n", "4", "--out", str(tmp_path / "ev"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr()
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert "oracle" in report["quality_note"] and "toy metrics:" in out.err and "oracle" in out.err
    # the same numbers as the toy judge's own paired fidelity on the same images (seeds 0 .. 3, stored noise)
    z = z_from_seeds(list(range(4)), 64)
    with torch.no_grad():
        base = load_generator("toy")(z, noise_mode="const").clamp(-1, 1)
        for row, preset, style in zip(report["models"], ("toy-sketch", "toy-watercolor"), ("sketch", "watercolor")):
            adapted = load_preset(preset)(z, noise_mode="const").clamp(-1, 1)
            want = paired_fidelity(base, adapted, z, style, load_evaluator())
            got = row["toy"]["fidelity"]
            assert set(got) == {"distance", "adapted", "unadapted", "best_filter"}
            for key in ("adapted", "unadapted"):
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7)
            assert got["best_filter"]["filter"] == want["best_filter"]["filter"]
            assert got["best_filter"]["stroke"] == pytest.approx(want["best_filter"]["stroke"], rel=1e-5)
    assert report["models"][0]["toy"]["fidelity"]["adapted"] != report["models"][1]["toy"]["fidelity"]["adapted"]
    # one table row per model, with the stroke columns, as in eval.txt; the figure has their charts
    header = out.out.splitlines()[0].split()
    assert header[-3:] == ["STROKE", "STROKE-BASE", "STROKE-FILTER"]
    for row in report["models"]:
        (line,) = _row_lines(out.out, row["label"])
        assert line.split()[-3] == f"{row['toy']['fidelity']['adapted']['stroke']:.4f}"
    assert out.out.startswith((tmp_path / "ev" / "eval.txt").read_text())
    assert Image.open(tmp_path / "ev" / "eval.png").size[0] > 1000


def test_toy_eval_says_n_a_where_there_are_no_true_renders(tmp_path):
    unknown = E.run_eval(["toy-sketch"], E.EvalSettings(n=3), target="cubist painting", progress=False, log=print)
    assert unknown.report["models"][0]["toy"] is None  # the toy world knows no such style
    edit = E.run_eval(["toy-sketch"], E.EvalSettings(n=3), source="face", target="smiling face", progress=False)
    toy = edit.report["models"][0]["toy"]
    assert toy["fidelity"] is None and "mouth=smiling has no true renders" in toy["fidelity_note"]
    assert toy["target_rate"] is not None  # the rest of the toy judge's report is there
    truncated = E.run_eval(["toy-sketch"], E.EvalSettings(n=3, truncation=0.7), progress=False)
    toy = truncated.report["models"][0]["toy"]
    assert toy["fidelity"] is None and "truncation 0.7" in toy["fidelity_note"] and toy["target_rate"] is not None
    for result, blanks in ((unknown, 7), (edit, 3)):
        table = E.format_table(result.report)
        (line,) = _row_lines(table, "toy-sketch")
        assert line.split()[-blanks:] == ["n/a"] * blanks and line.count("n/a") == blanks
        assert _row_lines(table, "(base)")[0].split()[-7:] == ["-"] * 7
        E.write_outputs(result, tmp_path / f"ev{blanks}")  # the figure draws n/a where a number is missing
