"""`nada sweep`: many adaptations at once on Ray, each an ordinary `nada adapt` run folder, scored by `nada eval`.

A sweep file (YAML or JSON) lists targets (or source/target pairs), settings to vary and seeds; every combination
is one trial. The sweep folder holds::

    sweep.json                 the expanded plan (trial ids and their AdaptConfig); a rerun must match it
    trials/<id>/               a `nada adapt` run folder (config.json, log.jsonl, state.pt, generator.pt, samples/)
    trials/<id>/attempts.jsonl one line per attempt of the trial: process, host, first step it ran
    trials/<id>/eval/          `nada eval` of the trial against its base (eval.json, eval.png, eval.txt)
    trials/<id>/result.json    written last: the trial is finished and never runs again
    summary.csv, summary.md    one row per trial: settings, status, attempts, seconds, metrics
    contact_sheet.png          the base's samples, then one row of adapted samples per trial

Trials are Ray tasks (see docs/eval.md for why tasks and not Ray Tune). Ray reschedules a task whose worker
process dies (``max_retries``); the new attempt resumes the run folder from its last saved state
(`nada.adaptation.loop.adapt` with ``resume=True``), and a rerun of the same command after an interrupted sweep
skips the trials that have a ``result.json`` and resumes the others.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from nada.adaptation.loop import adapt
from nada.config import AdaptConfig, resolve
from nada.errors import NadaError, one_line
from nada.evaluation.evaluate import EvalSettings, _font, lookup, run_eval, write_outputs
from nada.io import atomic_save_image, atomic_write
from nada.profiles import eval_world, eval_worlds

SWEEP_KEYS = ("name", "settings", "targets", "pairs", "vary", "seeds", "eval")
# Fault injection for tests and cluster drills: "TRIAL_ID:STEP" makes that trial's process kill itself (SIGKILL)
# once, right after STEP is logged; a marker file in the trial folder keeps it from firing again.
KILL_ENV = "NADA_SWEEP_KILL_AT"
KILL_MARKER = ".killed"
METRICS = ("clip_direction", "clip_target", "identity", "diversity_ratio", "fid", "kid")
SHEET_METRICS = (
    ("clip_direction", "dir"),
    ("identity", "id"),
    ("fid", "fid"),
)  # an evaluation world adds its own (EvalWorld.sheet), as "<world>_<key>"


# ---------------------------------------------------------------- the sweep file


@dataclass(frozen=True)
class Trial:
    """One adaptation of the sweep: its folder name, its full AdaptConfig (as a dict) and what it varies."""

    id: str
    config: dict[str, Any]
    varied: dict[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file."""

    name: str
    settings: dict[str, Any]
    pairs: list[tuple[str, str]]
    vary: dict[str, list[Any]]
    seeds: list[int]
    eval: dict[str, Any] = field(default_factory=dict)


def read_sweep_file(path: str | os.PathLike) -> SweepSpec:
    """Parse and check a sweep file (.yaml/.yml with yaml.safe_load, or .json); NadaError naming the problem."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NadaError(f"sweep file {p} not found: give a .yaml or .json file (see docs/eval.md)")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # YAML and JSON syntax errors alike
        raise NadaError(
            f"sweep file {p} cannot be parsed ({one_line(e, typed=True, first_line=True)}): fix its syntax"
        ) from None
    return parse_sweep(data, str(p))


def parse_sweep(data: Any, where: str = "sweep") -> SweepSpec:
    """A SweepSpec from the plain data of a sweep file."""
    if not isinstance(data, dict):
        raise NadaError(f"{where} must be a mapping with keys among {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise NadaError(f"{where}: unknown keys {unknown}: use {', '.join(SWEEP_KEYS)}")
    settings = dict(data.get("settings") or {})
    known = {f.name for f in fields(AdaptConfig)}
    vary = {str(k): list(v) if isinstance(v, list) else [v] for k, v in (data.get("vary") or {}).items()}
    bad = sorted((set(settings) | set(vary)) - known) + sorted({"out_dir", "target", "source", "seed"} & set(vary))
    if bad:
        raise NadaError(
            f"{where}: {bad} cannot be set or varied here (targets, pairs and seeds have their own keys; "
            f"valid settings: AdaptConfig fields except out_dir)"
        )
    ev = dict(data.get("eval") or {})
    bad_eval = sorted(set(ev) - {f.name for f in fields(EvalSettings)})
    if bad_eval:
        raise NadaError(
            f"{where}: unknown eval settings {bad_eval}: valid ones are {[f.name for f in fields(EvalSettings)]}"
        )
    seeds = data.get("seeds", [settings.pop("seed", 0)])
    seeds = [int(s) for s in (seeds if isinstance(seeds, list) else [seeds])]
    return SweepSpec(str(data.get("name") or "sweep"), settings, _pairs(data, settings, where), vary, seeds, ev)


def _pairs(data: dict[str, Any], settings: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """(source, target) texts from `targets` (with settings' source, default "photo") and/or `pairs`."""
    source = str(settings.pop("source", "photo"))
    out = [(source, str(t)) for t in data.get("targets") or []]
    for item in data.get("pairs") or []:
        if isinstance(item, dict) and set(item) == {"source", "target"}:
            out.append((str(item["source"]), str(item["target"])))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
        else:
            raise NadaError(f"{where}: pair {item!r} must be [SOURCE, TARGET] or {{source: ..., target: ...}}")
    settings.pop("target", None)
    if not out:
        raise NadaError(f"{where} lists no target: add `targets: [sketch, ...]` or `pairs: [[photo, sketch], ...]`")
    return out


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-").lower()[:24] or "x"


def expand_trials(spec: SweepSpec, trials_dir: Path) -> list[Trial]:
    """Every (pair, combination of varied settings, seed), in file order; each config resolved as `nada adapt`
    resolves it (the base's profile under the file's settings) and validated."""
    keys = list(spec.vary)
    trials = []
    combos = list(itertools.product(*(spec.vary[k] for k in keys)))
    for i, ((source, target), combo, seed) in enumerate(itertools.product(spec.pairs, combos, spec.seeds)):
        varied = dict(zip(keys, combo))
        parts = [_slug(target), *(f"{_slug(k)}{_slug(v)}" for k, v in varied.items()), f"s{seed}"]
        trial_id = f"{i:03d}-" + "-".join(parts)
        user = {
            **spec.settings,
            **varied,
            "source": source,
            "target": target,
            "seed": seed,
            "out_dir": str(trials_dir / trial_id),
        }
        config = resolve(user=user)[0]
        config.validate()
        trials.append(Trial(trial_id, config.to_dict(), {"source": source, "target": target, **varied, "seed": seed}))
    return trials


# ---------------------------------------------------------------- one trial (runs in a Ray worker)


def _append_json(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _kill_hook(trial_id: str, folder: Path) -> Callable[[int, dict[str, Any]], None]:
    """The adapt callback: records the attempt's first step; the KILL_ENV fault injection, when set for this trial."""
    target, _, at = os.environ.get(KILL_ENV, "").rpartition(":")
    first: list[int] = []

    def callback(step: int, record: dict[str, Any]) -> None:
        if not first:
            first.append(step)
            _append_json(folder / "attempts.jsonl", {"event": "first_step", "pid": os.getpid(), "step": step})
        if target == trial_id and at.isdigit() and step == int(at) and not (folder / KILL_MARKER).exists():
            (folder / KILL_MARKER).write_text(f"killed at step {step}, pid {os.getpid()}\n", encoding="utf-8")
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


def run_trial(trial: dict[str, Any], eval_settings: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Train (resuming whatever the folder holds), evaluate and record one trial; returns its result record."""

    folder = Path(trial["config"]["out_dir"])
    done = folder / "result.json"
    if done.is_file():  # finished before: never run twice
        return json.loads(done.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, threads))
    _append_json(
        folder / "attempts.jsonl",
        {"event": "start", "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()},
    )
    t0 = time.perf_counter()
    config = AdaptConfig.from_dict(trial["config"])
    adapt(config, progress=False, resume=True, callback=_kill_hook(trial["id"], folder))
    t_train = time.perf_counter() - t0
    result = run_eval(
        [str(folder)], EvalSettings(**eval_settings), device=_trial_device(), progress=False, log=lambda m: None
    )
    write_outputs(result, folder / "eval", force=True)  # the trial's own files from an attempt cut short
    record = _result_record(trial, folder, result.report["models"][0], t_train, time.perf_counter() - t0)
    atomic_write(done, lambda p: p.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    return record


def _trial_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU


def world_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """An eval row's evaluation-world metrics, flat: "<world>_<key>" for each of the world's table columns (a nested
    key's dots become underscores: "toy_fidelity_adapted_stroke")."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        world = eval_world(key)
        if world is not None:
            out.update({f"{key}_{k.replace('.', '_')}": lookup(value or {}, k) for k, _, _ in world.columns})
    return out


def sheet_metrics() -> tuple[tuple[str, str], ...]:
    """(metric key, short label) of the contact sheet: SHEET_METRICS and every evaluation world's."""
    return SHEET_METRICS + tuple((f"{w.name}_{k}", short) for w in eval_worlds() for k, short in w.sheet)


def _result_record(
    trial: dict[str, Any], folder: Path, row: dict[str, Any], t_train: float, t_all: float
) -> dict[str, Any]:
    attempts = [json.loads(line) for line in (folder / "attempts.jsonl").read_text(encoding="utf-8").splitlines()]
    metrics = {k: row.get(k) for k in METRICS}
    metrics.update(world_metrics(row))
    return {
        "id": trial["id"],
        "status": "done",
        "varied": trial["varied"],
        "folder": str(folder),
        "attempts": sum(a["event"] == "start" for a in attempts),
        "seconds_train": round(t_train, 2),
        "seconds": round(t_all, 2),
        "iterations": trial["config"]["iterations"],
        "metrics": metrics,
    }


# ---------------------------------------------------------------- the driver


@dataclass(frozen=True)
class SweepOptions:
    """How the sweep runs: where Ray is, how many trials at once and what each one gets."""

    address: str | None = None  # None: start Ray on this machine; else join that cluster ("auto", "ray://host:10001")
    workers: int | None = None  # trials at once (None: as many as the resources allow)
    cpus_per_trial: int = 1
    gpus_per_trial: float | None = None  # None: 1 when the machine/cluster has GPUs, else 0
    retries: int = 3  # Ray reschedules a trial whose worker process died this many times
    progress: bool = True


def prepare_sweep(spec: SweepSpec, out: Path) -> list[Trial]:
    """The trial list, written to out/sweep.json; a rerun must find the same plan (NadaError otherwise)."""
    trials = expand_trials(spec, (out / "trials").resolve())
    plan = {
        "name": spec.name,
        "eval": spec.eval,
        "trials": [{"id": t.id, "config": t.config, "varied": t.varied} for t in trials],
    }
    path = out / "sweep.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(plan)):
            raise NadaError(
                f"{out} holds a different sweep (its sweep.json does not match this file): "
                "choose another --out, or restore the file that started it"
            )
    else:
        atomic_write(path, lambda p: p.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8"))
    return trials


def _start_ray(options: SweepOptions) -> tuple[Any, bool]:
    """Import and initialise Ray (local: no dashboard, no usage stats); returns (ray, whether this call started it)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise NadaError("nada sweep needs Ray: pip install 'nada[sweep]'") from None
    if ray.is_initialized():
        return ray, False
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    return ray, True


def _resources(ray: Any, options: SweepOptions) -> tuple[int, float, int]:
    """(cpus per trial, gpus per trial, trials at once) from the options and what the Ray cluster has."""
    total = ray.cluster_resources()
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else (1.0 if total.get("GPU", 0) >= 1 else 0.0)
    cpus = max(1, options.cpus_per_trial)
    fit = int(total.get("CPU", 1) // cpus)
    if gpus > 0:
        fit = min(fit, int(total.get("GPU", 0) // gpus))
    if fit < 1:
        raise NadaError(
            f"the Ray cluster has {total.get('CPU', 0)} CPUs and {total.get('GPU', 0)} GPUs: too few for "
            f"{cpus} CPUs and {gpus} GPUs per trial; lower --cpus-per-trial/--gpus-per-trial"
        )
    return cpus, gpus, min(fit, options.workers) if options.workers else fit


def run_sweep(
    spec: SweepSpec, out: str | os.PathLike, options: SweepOptions = SweepOptions(), log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run every trial of `spec` not finished yet in `out` on Ray, then write the summary and contact sheet."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    trials = prepare_sweep(spec, out)
    todo = [t for t in trials if not (Path(t.config["out_dir"]) / "result.json").is_file()]
    log(f"nada sweep: {len(trials)} trials in {out}, {len(trials) - len(todo)} finished before, {len(todo)} to run")
    results: dict[str, dict[str, Any]] = {}
    if todo:
        ray, started = _start_ray(options)
        try:
            results = _run_on_ray(ray, todo, spec, options, log)
        finally:
            if started:
                ray.shutdown()
    records = [results.get(t.id) or _stored_result(t) for t in trials]
    write_summary(records, out)
    log(f"summary: {out / 'summary.md'}, {out / 'summary.csv'}; contact sheet: {out / 'contact_sheet.png'}")
    return records


def _stored_result(trial: Trial) -> dict[str, Any]:
    path = Path(trial.config["out_dir"]) / "result.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {
        "id": trial.id,
        "status": "not run",
        "varied": trial.varied,
        "folder": trial.config["out_dir"],
        "metrics": {},
    }


def _run_on_ray(
    ray: Any, todo: list[Trial], spec: SweepSpec, options: SweepOptions, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Submit the trials as Ray tasks, at most `at_once` in flight; collect each result or its final error."""
    cpus, gpus, at_once = _resources(ray, options)
    task = ray.remote(run_trial).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=options.retries, retry_exceptions=False
    )
    log(f"nada sweep: {at_once} trial(s) at once, {cpus} CPU and {gpus:g} GPU each, {options.retries} retries")
    pending, running, results = list(todo), {}, {}
    with tqdm(total=len(todo), desc="sweep", unit="trial", disable=not options.progress, file=sys.stderr) as bar:
        while pending or running:
            while pending and len(running) < at_once:
                t = pending.pop(0)
                running[task.remote({"id": t.id, "config": t.config, "varied": t.varied}, spec.eval, cpus)] = t
            ready, _ = ray.wait(list(running), num_returns=1)
            t = running.pop(ready[0])
            try:
                results[t.id] = ray.get(ready[0])
            except Exception as e:  # the trial failed for good (its own error, or its worker died too often)
                results[t.id] = {
                    "id": t.id,
                    "status": "failed",
                    "error": one_line(e, 300, last_line=True),
                    "varied": t.varied,
                    "folder": t.config["out_dir"],
                    "metrics": {},
                }
            log(f"trial {t.id}: {results[t.id]['status']}")
            bar.update(1)
    return results


# ---------------------------------------------------------------- summary and contact sheet


def summary_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary: trial, every varied setting, status, attempts, seconds, every metric present."""
    varied = list(dict.fromkeys(k for r in records for k in r.get("varied", {})))
    metric_keys = [
        k
        for k in dict.fromkeys([*METRICS, *(k for r in records for k in r.get("metrics", {}))])
        if any(r.get("metrics", {}).get(k) is not None for r in records)
    ]
    header = ["trial", *varied, "status", "attempts", "seconds", *metric_keys]
    rows = []
    for r in records:
        m = r.get("metrics", {})
        rows.append(
            [
                r["id"],
                *(str(r.get("varied", {}).get(k, "")) for k in varied),
                r["status"],
                str(r.get("attempts", "")),
                str(r.get("seconds", "")),
                *("" if m.get(k) is None else f"{m[k]:.4g}" for k in metric_keys),
            ]
        )
    return header, rows


def write_summary(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """summary.csv, summary.md and contact_sheet.png in `out` (rewritten after every run of the sweep)."""
    header, rows = summary_rows(records)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    md = (
        "\n".join(
            "| " + " | ".join(c.replace("|", "/") for c in line) + " |"
            for line in [header, ["---"] * len(header), *rows]
        )
        + "\n"
    )
    paths = [out / "summary.csv", out / "summary.md"]
    atomic_write(paths[0], lambda p: p.write_text(buf.getvalue(), encoding="utf-8"))
    atomic_write(paths[1], lambda p: p.write_text(md, encoding="utf-8"))
    sheet = contact_sheet(records)
    if sheet is not None:
        paths.append(atomic_save_image(sheet, out / "contact_sheet.png"))
    return paths


def _last_grid(folder: Path) -> Any:
    """The run's last sample grid (frozen row above adapted row), or None."""
    grids = sorted((folder / "samples").glob("step_*.png"))
    if not grids:
        return None
    with Image.open(grids[-1]) as im:
        return im.convert("RGB")


def _grid_row(grid: Any, row: int, pad: int = 2) -> Any:
    """Row 0 (frozen) or 1 (adapted) of a two-row `nada.io.image_grid` picture."""
    h = (grid.height - 3 * pad) // 2
    y = pad + row * (h + pad)
    return grid.crop((0, y - pad, grid.width, y + h + pad))


def contact_sheet(records: Sequence[dict[str, Any]], label_w: int = 300) -> Any:
    """One row per trial (its last samples, adapted), under the base's row; labelled with id and key metrics."""

    rows = []
    for r in records:
        grid = _last_grid(Path(r["folder"]))
        if grid is None:
            continue
        if not rows:
            rows.append(("base (frozen generator)", _grid_row(grid, 0)))
        m = r.get("metrics", {})
        notes = [f"{short} {m[k]:.2f}" for k, short in sheet_metrics() if m.get(k) is not None]
        text = f"{r['id']}\n{r['status']}, {r.get('attempts', '?')} attempt(s)\n" + "  ".join(notes)
        rows.append((text, _grid_row(grid, 1)))
    if not rows:
        return None
    width = label_w + max(img.width for _, img in rows)
    sheet = Image.new("RGB", (width, sum(img.height for _, img in rows)), "white")
    d, y = ImageDraw.Draw(sheet), 0
    for text, img in rows:
        sheet.paste(img, (label_w, y))
        d.multiline_text((6, y + 4), text, fill="black", font=_font(12))
        y += img.height
    return sheet
