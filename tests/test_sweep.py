"""`nada sweep`: the sweep file, the plan, the summary and contact sheet, and a local Ray run on the toy world in
which one trial's worker process is killed mid-trial and the trial resumes from its last saved state."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from nada.errors import NadaError
from nada.evaluation.sweep import (
    KILL_ENV,
    KILL_MARKER,
    SweepOptions,
    contact_sheet,
    expand_trials,
    parse_sweep,
    prepare_sweep,
    read_sweep_file,
    run_sweep,
    run_trial,
    summary_rows,
    world_metrics,
    write_summary,
)

# Tiny toy-world trials: one guiding CLIP, no views, no noise, structure or keep terms (the toy profile's are turned
# off), 8 iterations, a checkpoint every 2, a 4-latent evaluation.
TINY = {
    "generator": "toy",
    "clip": "toy",
    "clip_views": 0,
    "clip_noise": 0.0,
    "lambda_structure": 0.0,
    "keep": "",
    "layers": "all",
    "lr": 0.005,
    "iterations": 8,
    "save_every": 2,
    "sample_every": 0,
    "n_sample_images": 3,
    "batch_size": 1,
    "device": "cpu",
}


def spec_data(**changes):
    data = {
        "name": "t",
        "settings": dict(TINY),
        "targets": ["sketch"],
        "vary": {"lr": [0.005, 0.01]},
        "seeds": [0],
        "eval": {"n": 4, "columns": 3, "batch_size": 4},
    }
    data.update(changes)
    return data


# ---------------------------------------------------------------- the sweep file and the plan


def test_trials_are_every_combination_in_file_order(tmp_path):
    spec = parse_sweep(spec_data(targets=["sketch", "pop art"], pairs=[["face", "smiling face"]], seeds=[0, 1]))
    trials = expand_trials(spec, tmp_path)
    assert len(trials) == 3 * 2 * 2
    assert trials[0].id == "000-sketch-lr0.005-s0" and trials[1].id == "001-sketch-lr0.005-s1"
    assert trials[4].id == "004-pop-art-lr0.005-s0"
    last = trials[-1]
    assert last.varied == {"source": "face", "target": "smiling face", "lr": 0.01, "seed": 1}
    assert last.config["out_dir"] == str(tmp_path / last.id) and last.config["iterations"] == 8
    assert len({t.id for t in trials}) == len(trials)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bogus": 1}, "unknown keys"),
        ({"settings": {"nope": 1}}, "cannot be set or varied"),
        ({"vary": {"seed": [1, 2]}}, "cannot be set or varied"),
        ({"targets": [], "pairs": []}, "lists no target"),
        ({"pairs": [["a"]]}, "must be \\[SOURCE, TARGET\\]"),
        ({"eval": {"nn": 3}}, "unknown eval settings"),
        ({"settings": {**TINY, "iterations": 0}}, "iterations must be at least 1"),
    ],
)
def test_bad_sweep_files_fail_with_one_line(tmp_path, change, message):
    with pytest.raises(NadaError, match=message) as err:
        expand_trials(parse_sweep(spec_data(**change)), tmp_path)
    assert "\n" not in str(err.value)


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "s.yaml").write_text("targets: [sketch]\nsettings:\n  iterations: 3\nseeds: [4]\n")
    spec = read_sweep_file(tmp_path / "s.yaml")
    assert spec.pairs == [("photo", "sketch")] and spec.seeds == [4] and spec.settings == {"iterations": 3}
    (tmp_path / "s.json").write_text(json.dumps(spec_data()))
    assert read_sweep_file(tmp_path / "s.json").vary == {"lr": [0.005, 0.01]}
    (tmp_path / "bad.yaml").write_text("targets: [sketch\n")
    with pytest.raises(NadaError, match="cannot be parsed"):
        read_sweep_file(tmp_path / "bad.yaml")
    (tmp_path / "code.yaml").write_text("targets: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(NadaError, match="cannot be parsed"):  # safe_load: a YAML tag never runs code
        read_sweep_file(tmp_path / "code.yaml")


def test_a_different_plan_in_the_same_folder_is_refused(tmp_path):
    prepare_sweep(parse_sweep(spec_data()), tmp_path)
    plan = (tmp_path / "sweep.json").read_text()
    prepare_sweep(parse_sweep(spec_data()), tmp_path)  # the same file again: a continuation
    with pytest.raises(NadaError, match="holds a different sweep"):
        prepare_sweep(parse_sweep(spec_data(seeds=[0, 1])), tmp_path)
    assert (tmp_path / "sweep.json").read_text() == plan


def test_a_finished_trial_is_never_run_again(tmp_path):
    (trial,) = expand_trials(parse_sweep(spec_data(vary={})), tmp_path)
    folder = Path(trial.config["out_dir"])
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({"id": trial.id, "status": "done", "marker": 1}))
    got = run_trial({"id": trial.id, "config": trial.config, "varied": trial.varied}, {"n": 4})
    assert got["marker"] == 1 and not (folder / "attempts.jsonl").exists() and not (folder / "log.jsonl").exists()


# ---------------------------------------------------------------- summary and contact sheet


def _fake_trial(folder: Path, colour: int) -> None:
    """A run folder with a two-row sample grid (3 images of 8x8, padding 2) like `nada adapt` writes."""
    from nada.io import image_grid

    (folder / "samples").mkdir(parents=True)
    rows = [torch.full((3, 3, 8, 8), -1.0), torch.full((3, 3, 8, 8), colour / 127.5 - 1)]
    image_grid(rows).save(folder / "samples" / "step_000008.png")


def test_world_metrics_flatten_nested_columns():
    fidelity = {"adapted": {"stroke": 0.019}, "unadapted": {"stroke": 0.02}, "best_filter": {"stroke": 0.018}}
    flat = world_metrics({"clip_direction": 0.9, "toy": {"target_rate": 0.5, "fidelity": fidelity}})
    assert flat["toy_target_rate"] == 0.5 and flat["toy_content_kept"] is None and "clip_direction" not in flat
    assert (flat["toy_fidelity_adapted_stroke"], flat["toy_fidelity_best_filter_stroke"]) == (0.019, 0.018)
    assert set(world_metrics({"toy": None}).values()) == {None}  # a target the toy world does not know


def test_summary_and_contact_sheet(tmp_path):
    records = []
    for i, colour in enumerate((255, 128)):
        _fake_trial(tmp_path / f"t{i}", colour)
        records.append(
            {
                "id": f"t{i}",
                "status": "done",
                "attempts": i + 1,
                "seconds": 1.5,
                "folder": str(tmp_path / f"t{i}"),
                "varied": {"target": "sketch", "lr": 0.1 * (i + 1)},
                "metrics": {"clip_direction": 0.5 + i, "fid": None, "toy_target_rate": 0.25},
            }
        )
    records.append(
        {"id": "t2", "status": "failed", "folder": str(tmp_path / "none"), "varied": {"target": "x"}, "metrics": {}}
    )
    header, rows = summary_rows(records)
    assert header == ["trial", "target", "lr", "status", "attempts", "seconds", "clip_direction", "toy_target_rate"]
    assert rows[1] == ["t1", "sketch", "0.2", "done", "2", "1.5", "1.5", "0.25"] and rows[2][3] == "failed"
    written = write_summary(records, tmp_path)
    with open(tmp_path / "summary.csv", newline="") as f:
        assert list(csv.reader(f)) == [header, *rows]
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0].startswith("| trial | target |") and md[1].startswith("| --- |") and len(md) == 5
    sheet = Image.open(written[-1]).convert("RGB")
    # base row, then one row per trial with samples (the failed trial has none): 3 rows of 8 + 2 * 2 padding
    assert sheet.height == 3 * 12
    assert sheet.getpixel((300 + 2 + 4, 2 + 4)) == (0, 0, 0)  # base (frozen) row: the grid's top row
    assert sheet.getpixel((300 + 2 + 4, 12 + 2 + 4)) == (255, 255, 255)
    assert sheet.getpixel((300 + 2 + 4, 24 + 2 + 4)) == (128, 128, 128)
    assert contact_sheet(records[2:]) is None


# ---------------------------------------------------------------- Ray: a worker killed mid-trial


@pytest.fixture
def ray_cleanup():
    """Shut down any Ray instance a test leaves behind, and keep Ray's usage statistics off."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _steps(folder: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_local_ray_sweep_survives_a_killed_worker(tmp_path, monkeypatch, ray_cleanup):
    pytest.importorskip("ray")
    spec = parse_sweep(spec_data(targets=["sketch", "watercolor", "pop art"], vary={}))
    trials = expand_trials(spec, (tmp_path / "sweep" / "trials").resolve())
    victim = trials[1].id
    monkeypatch.setenv(KILL_ENV, f"{victim}:5")  # that trial's process kills itself (SIGKILL) once, after step 5
    records = run_sweep(
        spec, tmp_path / "sweep", SweepOptions(workers=2, retries=2, progress=False), log=lambda m: None
    )

    assert [r["status"] for r in records] == ["done", "done", "done"]
    for r in records:
        folder = Path(r["folder"])
        assert _steps(folder) == list(range(1, 9)), r["id"]  # every step once: no repeated, no missing step
        assert (folder / "generator.pt").is_file() and (folder / "eval" / "eval.json").is_file()
        assert r["metrics"]["toy_target_rate"] is not None and r["metrics"]["clip_direction"] is not None
    killed = Path(records[1]["folder"])
    assert (killed / KILL_MARKER).read_text().startswith("killed at step 5")
    events = [json.loads(line) for line in (killed / "attempts.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    firsts = [e["step"] for e in events if e["event"] == "first_step"]
    assert records[1]["attempts"] == 2 and len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]
    assert firsts == [1, 5]  # the second attempt resumed from the checkpoint of step 4
    assert all(r["attempts"] == 1 for r in (records[0], records[2]))
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert victim in summary and summary.count("| done |") == 3
    assert Image.open(tmp_path / "sweep" / "contact_sheet.png").height > 0

    # the same command again: every trial is finished, nothing runs (Ray is not even started)
    again = run_sweep(spec, tmp_path / "sweep", SweepOptions(workers=2, progress=False), log=lambda m: None)
    assert again == records
    assert len((killed / "attempts.jsonl").read_text().splitlines()) == len(events)


class FakeRay:
    """Stands in for the ray module where only the cluster's resources are read."""

    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict:
        return dict(self.resources)


def test_resources_one_trial_per_gpu_or_cpus_per_trial():
    from nada.evaluation.sweep import _resources

    assert _resources(FakeRay(CPU=16, GPU=4), SweepOptions()) == (1, 1.0, 4)  # one trial per GPU
    assert _resources(FakeRay(CPU=16, GPU=4), SweepOptions(gpus_per_trial=0.5)) == (1, 0.5, 8)
    assert _resources(FakeRay(CPU=2), SweepOptions()) == (1, 0.0, 2)  # CPU only: a CPU per trial
    assert _resources(FakeRay(CPU=8), SweepOptions(cpus_per_trial=4)) == (4, 0.0, 2)
    assert _resources(FakeRay(CPU=8), SweepOptions(workers=1)) == (1, 0.0, 1)
    with pytest.raises(NadaError, match="too few"):
        _resources(FakeRay(CPU=2), SweepOptions(cpus_per_trial=4))


def test_cli_errors_are_one_line(tmp_path, capsys):
    from nada.frontends.cli import main

    assert main(["sweep", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nada sweep: error: sweep file") and "not found" in err and err.count("\n") == 1
    (tmp_path / "s.json").write_text(json.dumps(spec_data()))
    assert main(["sweep", str(tmp_path / "s.json"), "--out", str(tmp_path / "s"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err and not (tmp_path / "s").exists()
