"""`nada web`: a Gradio demo with three tabs, Generate, Adapt and Stylize, on one base generator.

Read it in three layers:

1. `AdaptJob` and `JobQueue`: adaptation runs in a background worker thread, one run at a time per
   device; further runs wait in a queue that reports each job's position. A job is cancelled between
   two iterations (the loop's callback raises), or removed from the queue before it starts.
2. `WebBackend`: every action of the page as a plain method (no Gradio inside), raising `NadaError`
   for anything the user can fix. It owns the *style catalogue* every visitor sees: the presets of the
   base generator and the checkpoints the operator named on the command line. What one visitor adds
   lives in that visitor's `Session` (a ``gr.State``): a checkpoint named in the Generate tab's box,
   which must be a preset, a registered generator on this machine or a file inside the operator's
   folder (``nada web --checkpoints DIR``; anything else, missing, outside, unreadable or not a
   generator, gets one and the same message), and every generator the visitor adapted. Job sizes
   are bounded by `nada.config.WebLimits` (iterations, batch, views, seeds, steps, upload size and
   pixels, read from the image header before anything is decoded).
3. `build_app`: the Gradio page. Each callback calls one backend method through `_user_errors`, which
   turns a `NadaError` (or any unexpected error) into a short `gr.Error` message in the page, never a
   stack trace, so the server keeps serving.

Gradio is an optional dependency (``pip install 'nada[web]'``); it is imported only by `build_app`
and `serve`, never when `nada` is imported.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from nada.adaptation.layers import parse_layers
from nada.adaptation.loop import adapt
from nada.config import AUTO, AdaptConfig, WebLimits, resolve
from nada.errors import NadaError, one_line
from nada.generator.checkpoints import load_generator, read_metadata
from nada.generator.generate import GRID_COLUMNS, generate_images
from nada.generator.networks import PRECISIONS
from nada.guidance.clip import load_clip_ensemble
from nada.io import (
    atomic_save_image,
    image_grid,
    parse_seeds,
    resolve_device,
    to_uint8_image,
)
from nada.photos.invert import InvertConfig
from nada.photos.stylize import stylize
from nada.weights import preflight
from nada.weights.presets import (
    comparison_rows,
    get_preset,
    known_presets,
    load_preset,
    preset_status,
    share_mean_latent,
)
from nada.weights.registry import first_local_generator, is_local, known_generators

if TYPE_CHECKING:
    import gradio as gr

    from nada.generator.networks import Generator
    from nada.photos.stylize import StylizeReport

DEFAULT_HOST = "127.0.0.1"  # loopback: the demo is reachable from this machine only unless asked otherwise
DEFAULT_PORT = 7860
LAYER_CHOICES = ("auto:3", "auto:6", "all", "last:3", "grad:3")
POLL_SECONDS = 0.5  # how often the Adapt tab refreshes a running job
SERVER_LOG_LIMIT = 2000  # characters of an unexpected error in the server log; the page shows one_line's default


# ---------------------------------------------------------------- jobs


class JobCancelled(Exception):
    """Raised inside the adaptation loop's callback to stop a cancelled job between two iterations."""


@dataclass(eq=False)  # a job is itself: queue membership compares identities
class AdaptJob:
    """One adaptation run and its live state (written by the worker thread, read by the page)."""

    id: int
    config: AdaptConfig
    name: str  # catalogue name of the result, e.g. "run-1-photo-to-sketch"
    state: str = "queued"  # queued, running, done, cancelled, failed
    step: int = 0
    loss: float | None = None
    message: str = ""
    result: Path | None = None  # the adapted checkpoint once state == "done"
    entry: "StyleEntry | None" = None  # the result as a style of the visitor's session
    session: "Session | None" = None  # the visitor who asked for it
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def total(self) -> int:
        return self.config.iterations

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def latest_sample(self) -> Path | None:
        """The newest sample grid of the run (frozen row above adapted row), or None before the first."""
        samples = sorted((Path(self.config.out_dir) / "samples").glob("step_*.png"))
        return samples[-1] if samples else None


class JobQueue:
    """Runs jobs one at a time in a daemon worker thread; `position` tells where a waiting job stands."""

    def __init__(self) -> None:
        self._pending: list[AdaptJob] = []
        self._runners: dict[int, Callable[[AdaptJob], None]] = {}  # job id -> what runs it (pages may differ)
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self.current: AdaptJob | None = None

    def submit(self, job: AdaptJob, run: Callable[[AdaptJob], None]) -> None:
        """Queue `job` to be run by `run(job)`; the worker thread starts on the first submission."""
        with self._lock:
            self._pending.append(job)
            self._runners[id(job)] = run
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="nada-web-adapt", daemon=True)
                self._worker.start()
            self._lock.notify()

    def position(self, job: AdaptJob) -> int:
        """1 for the next job to run, 2 for the one after ...; 0 when `job` is not waiting."""
        with self._lock:
            return self._pending.index(job) + 1 if job in self._pending else 0

    def cancel(self, job: AdaptJob) -> None:
        """Drop a waiting job at once; ask a running one to stop after its current iteration."""
        with self._lock:
            job.cancel_requested.set()
            if job in self._pending:
                self._pending.remove(job)
                self._runners.pop(id(job), None)
                job.state, job.message = "cancelled", "cancelled before it started"

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                job = self._pending.pop(0)
                run = self._runners.pop(id(job))
                self.current = job
            try:
                run(job)
            finally:
                with self._lock:
                    self.current = None


_QUEUES: dict[str, JobQueue] = {}
_QUEUES_LOCK = threading.Lock()


def queue_for(device: torch.device) -> JobQueue:
    """The process-wide job queue of `device` (created on first use): one adaptation at a time per device."""
    with _QUEUES_LOCK:
        return _QUEUES.setdefault(str(device), JobQueue())


# ---------------------------------------------------------------- the style catalogue


@dataclass(frozen=True)
class StyleEntry:
    """An adapted generator the page offers: a preset by name or a checkpoint file, and the base it came from."""

    key: str  # dropdown value: "preset:NAME", "checkpoint:PATH", "file:RELATIVE_PATH", "generator:NAME" or "run:NAME"
    label: str  # what the page shows
    preset: str | None = None
    checkpoint: Path | None = None
    base: str | None = None
    generator: str | None = None  # a registered generator by name


@dataclass
class Session:
    """One visitor's additions: the styles they named or adapted and the ids of their jobs (kept in a gr.State)."""

    styles: dict[str, StyleEntry] = field(default_factory=dict)
    jobs: set[int] = field(default_factory=set)


# One answer for a checkpoint that is missing, outside the allowed folder, unreadable or no generator.
NOT_AVAILABLE = (
    "no such checkpoint on this server: choose a style from the list, or give a preset name, a registered "
    "generator on this server or a file inside the server's checkpoint folder"
)


def _slug(text: str) -> str:
    """Lower-case file-name-safe words joined by dashes ("Pixar character" -> "pixar-character")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "style"


def _pil(img: torch.Tensor) -> "Image.Image":
    """[3, H, W] or [1, 3, H, W] in [-1, 1] -> PIL RGB image."""
    img = img if img.ndim == 4 else img.unsqueeze(0)
    return Image.fromarray(to_uint8_image(img[:1])[0].numpy())


# ---------------------------------------------------------------- the backend: every action as a plain method


class WebBackend:
    """What the web page does, without Gradio: generate, adapt (queued), stylize; NadaError for user mistakes."""

    def __init__(
        self,
        generator: str | None = None,
        clip: str = AdaptConfig.clip,
        checkpoints: Sequence[str] = (),
        device: str | torch.device = "auto",
        work_dir: str | Path | None = None,
        checkpoints_dir: str | Path | None = None,
        limits: WebLimits = WebLimits(),
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise NadaError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.precision = precision  # of the Generate tab's renders; adaptation always trains in fp32

        limits.validate()
        self.limits = limits
        self.checkpoints_dir = _allowed_folder(checkpoints_dir)
        self.base = str(generator) if generator else first_local_generator()  # a base that needs no download
        self.clip = clip
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="nada-web-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._styles: dict[str, StyleEntry] = {}
        self._generators: OrderedDict[str, "Generator"] = OrderedDict()  # small LRU of loaded generators
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._outputs = itertools.count(1)
        self.jobs: dict[int, AdaptJob] = {}
        self.queue = queue_for(self.device)
        self._add_presets()
        for path in checkpoints:
            self.add_checkpoint(path)

    # ---- catalogue

    def _add_presets(self) -> None:
        """Every preset adapted from this base that is here or downloads on first use
        (train-on-demand ones are left out)."""
        for name in known_presets():
            p = get_preset(name)
            status = preset_status(p)
            downloadable = p.weights is not None and p.weights.kind != "package"
            if p.base == self.base and (status.available or downloadable):
                note = "" if status.available else " (downloads on first use)"
                self._styles[f"preset:{name}"] = StyleEntry(
                    f"preset:{name}", f"{name}: {p.domain}{note}", preset=name, base=p.base
                )

    def add_checkpoint(self, path: str | Path) -> StyleEntry:
        """Offer an operator's checkpoint file to every visitor; its base comes from its metadata (else this app's)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise NadaError(f"checkpoint {path} not found: check the path")
        label = path.parent.name if path.stem == "generator" else path.stem
        entry = self._file_entry(path, f"checkpoint:{path}", label)
        with self._lock:
            self._styles[entry.key] = entry
        return entry

    def _file_entry(self, path: Path, key: str, label: str) -> StyleEntry:
        """A style for a checkpoint file, its base read from the file's metadata (this app's base when it has none)."""
        try:
            base = read_metadata(path).get("base_model") or self.base
        except NadaError:  # rosinality/NVlabs files carry no metadata
            base = self.base
        return StyleEntry(key, label, checkpoint=path, base=str(base))

    def open_checkpoint(self, text: str, session: Session) -> StyleEntry:
        """The style a visitor names in the checkpoint box, added to their session: a preset, a registered
        generator on this machine or a file inside `checkpoints_dir`; NOT_AVAILABLE for anything else."""
        text = text.strip()
        with self._lock:
            preset = self._styles.get(f"preset:{text}")
        if preset is not None:
            return preset
        entry = self._registered_entry(text) or self._folder_entry(text)
        if entry is None:
            raise NadaError(NOT_AVAILABLE)
        try:
            self.load_style(entry)  # a file that holds no generator gets the answer a missing one gets
        except Exception as e:
            print(f"nada web: refused checkpoint {text!r}: {one_line(e, typed=True)}", file=sys.stderr)
            raise NadaError(NOT_AVAILABLE) from None
        session.styles[entry.key] = entry
        return entry

    def _registered_entry(self, name: str) -> StyleEntry | None:
        """A registered generator whose weights are on this machine (visitors never start downloads)."""
        if name not in known_generators() or not is_local(name):
            return None
        return StyleEntry(f"generator:{name}", name, base=name, generator=name)

    def _folder_entry(self, text: str) -> StyleEntry | None:
        """A readable file inside `checkpoints_dir` after resolving '..' and symlinks; None for anything else."""
        root = self.checkpoints_dir
        if root is None or not text or "\x00" in text:
            return None
        try:
            path = (root / text).resolve()
            inside = path.is_relative_to(root) and path.is_file() and os.access(path, os.R_OK)
        except (OSError, RuntimeError, ValueError):  # symlink loops, names too long
            return None
        if not inside:
            return None
        relative = str(path.relative_to(root))
        return self._file_entry(path, f"file:{relative}", relative)

    def style_choices(self, session: Session | None = None) -> list[tuple[str, str]]:
        """(label, key) pairs for the style pickers: presets and the operator's checkpoints, then the visitor's own."""
        with self._lock:
            entries = list(self._styles.values())
        entries += list(session.styles.values()) if session is not None else []
        return [(e.label, e.key) for e in entries]

    def style(self, key: str, session: Session | None = None) -> StyleEntry:
        """The catalogue (or session) entry of a dropdown value; NadaError for no choice or an unknown one."""
        if not key:
            raise NadaError("no style chosen: pick a preset or an adapted generator (or give a checkpoint path)")
        with self._lock:
            entry = self._styles.get(key)
        if entry is None and session is not None:
            entry = session.styles.get(key)
        if entry is None:
            raise NadaError(f"unknown style {key!r}: reload the page to see the current list")
        return entry

    def _load(self, source: str, loader: Callable[[], "Generator"]) -> "Generator":
        """A generator from the LRU cache, loading it on a miss (a few generators stay in memory)."""
        with self._lock:
            if source in self._generators:
                self._generators.move_to_end(source)
                return self._generators[source]
        G = loader().to(self.device).eval().requires_grad_(False)
        with self._lock:
            self._generators[source] = G
            while len(self._generators) > 6:
                self._generators.popitem(last=False)
        return G

    def load_style(self, entry: StyleEntry) -> "Generator":
        """The adapted generator of a catalogue entry."""
        if entry.preset is not None:
            return self._load(entry.key, lambda: load_preset(entry.preset, device="cpu", progress=False))
        if entry.generator is not None:
            return self.load_base(entry.generator)
        return self._load(entry.key, lambda: load_generator(entry.checkpoint, device="cpu"))

    def load_base(self, source: str | None = None) -> "Generator":
        """The base generator (this app's, or the one a style names)."""
        source = source or self.base
        return self._load(f"base:{source}", lambda: load_generator(source, device="cpu"))

    def _new_output_dir(self, kind: str) -> Path:
        out = self.work_dir / kind / f"{next(self._outputs):04d}"
        out.mkdir(parents=True, exist_ok=False)
        return out

    # ---- Generate

    def generate(
        self,
        style_key: str,
        checkpoint: str = "",
        seeds: str = "",
        count: int = 4,
        truncation: float = 0.7,
        session: Session | None = None,
    ) -> tuple[list[tuple["Image.Image", str]], list[Path]]:
        """Pairs (frozen base | adapted) per seed with captions, plus files to download: the comparison grid
        and a zip of all images."""
        session = session if session is not None else Session()
        seed_list = self._seed_list(seeds, count)
        if not (math.isfinite(float(truncation)) and 0 <= float(truncation) <= 1):
            raise NadaError(f"truncation {truncation} is outside 0 .. 1: move the slider back into range")
        wanted = checkpoint.strip() if checkpoint else ""
        entry = self.open_checkpoint(wanted, session) if wanted else self.style(style_key, session)
        adapted = self.load_style(entry)
        base = self.load_base(entry.base)
        if (base.size, base.style_dim) != (adapted.size, adapted.style_dim):
            raise NadaError(
                f"{entry.label} is not adapted from the base {entry.base!r} (different size or latent width): "
                "choose another style"
            )
        share_mean_latent(base, adapted)
        render = {"truncation_psi": float(truncation), "batch_size": 4, "precision": self.precision}
        with torch.no_grad():
            frozen, styled = generate_images(base, seed_list, **render), generate_images(adapted, seed_list, **render)
        pairs = [
            (_pil(torch.cat([f, s], dim=-1)), f"seed {k}: base | {entry.label}")
            for k, f, s in zip(seed_list, frozen, styled)
        ]

        out = self._new_output_dir("generate")
        grid = atomic_save_image(image_grid(comparison_rows(frozen, styled, GRID_COLUMNS)), out / "comparison.png")
        archive = out / "images.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for k, f, s in zip(seed_list, frozen, styled):
                for tag, img in (("base", f), (_slug(entry.label), s)):
                    path = out / f"seed{k:04d}-{tag}.png"
                    _pil(img).save(path)
                    zf.write(path, path.name)
        return pairs, [grid, archive]

    def _seed_list(self, seeds: str, count: int) -> list[int]:
        """The seeds of a Generate click, counted before any list is built; NadaError beyond `limits.max_seeds`."""
        n = _seed_count(seeds) if seeds and seeds.strip() else int(count)
        if n < 1:
            raise NadaError("no images asked for: give seeds such as '0-7' or a count of 1 or more")
        if n > self.limits.max_seeds:
            raise NadaError(f"{n} seeds asked for: this server renders at most {self.limits.max_seeds} at once")
        return parse_seeds(seeds) if seeds and seeds.strip() else list(range(n))

    # ---- Adapt

    def defaults(self) -> AdaptConfig:
        """The settings of an adaptation of this app's base before the page's choices (nada.config.resolve)."""
        return resolve(self.base, user={} if self.clip.strip().lower() == AUTO else {"clip": self.clip})[0]

    def default_keep(self) -> str:
        """The attributes an adaptation keeps unless the page says otherwise: the base profile's, else none."""
        return self.defaults().keep

    def adapt_config(
        self, source: str, target: str, layers: str, iterations: int, run_dir: Path, keep: str | None = None
    ) -> AdaptConfig:
        """The run's AdaptConfig, resolved as `nada adapt` resolves it (defaults < the base's profile < the page's
        choices: texts, layers, iterations, keep (None: the profile's), clip), samples about every tenth of the run."""
        d = self.defaults()
        iterations = int(iterations)
        user = {
            "source": (source or "").strip(),
            "target": (target or "").strip(),
            "layers": (layers or d.layers).strip(),
            "iterations": iterations,
            "out_dir": str(run_dir),
            "device": str(self.device),
            "sample_every": max(1, min(d.sample_every, iterations // 10)),
            "save_every": 0,
            "keep": (d.keep if keep is None else keep).strip(),
        }
        if self.clip.strip().lower() != AUTO:
            user["clip"] = self.clip
        return resolve(self.base, user=user)[0]

    def submit_adapt(
        self,
        source: str,
        target: str,
        layers: str | None = None,
        iterations: int | None = None,
        keep: str | None = None,
        session: Session | None = None,
    ) -> AdaptJob:
        """Check the settings, the limits and the weights, then queue an adaptation; NadaError for anything wrong.

        `layers` and `iterations` None: the base's resolved defaults."""
        iterations = self.defaults().iterations if iterations is None else iterations

        if int(iterations) > self.limits.max_iterations:  # before anything else: no config for a huge run
            raise NadaError(
                f"{int(iterations)} iterations asked for: this server runs at most "
                f"{self.limits.max_iterations} per adaptation; ask for fewer"
            )

        job_id = next(self._ids)
        name = f"run-{job_id}-{_slug(source or '')}-to-{_slug(target or '')}"
        config = self.adapt_config(source, target, layers, iterations, self.work_dir / "runs" / name, keep)
        config.validate()
        self.limits.check_adapt(config)
        parse_layers(config.layers)  # a bad layer spec fails now, not in the worker
        preflight.check(preflight.adapt_needs(config))  # every missing weights file listed now, not in the worker
        job = AdaptJob(job_id, config, name, session=session)
        if session is not None:
            session.jobs.add(job_id)
        self.jobs[job_id] = job
        self.queue.submit(job, self._run_job)
        return job

    def _run_job(self, job: AdaptJob) -> None:
        """Worker thread: fetch missing weights, run one adaptation, offer its generator in the visitor's session."""
        if job.cancel_requested.is_set():
            job.state, job.message = "cancelled", "cancelled before it started"
            return
        job.state = "running"

        def on_step(step: int, record: dict[str, Any]) -> None:
            job.step, job.loss = step, float(record["loss"])
            if job.cancel_requested.is_set():
                raise JobCancelled

        try:
            preflight.ensure(preflight.adapt_needs(job.config))
            adapt(job.config, progress=False, G_base=self.load_base(), clip=self._clip_ensemble(), callback=on_step)
            result = Path(job.config.out_dir) / "generator.pt"
            job.entry = self._file_entry(result, f"run:{job.name}", job.name)
            if job.session is not None:
                job.session.styles[job.entry.key] = job.entry
            job.result = result
            job.state, job.message = "done", f"finished: '{job.name}' is now a style in Generate and Stylize"
        except JobCancelled:
            job.state, job.message = "cancelled", f"cancelled at step {job.step} of {job.total}"
        except NadaError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # the worker must survive anything; the page shows one line
            job.state, job.message = "failed", f"adaptation failed ({one_line(e, typed=True)})"
            log_line = one_line(e, SERVER_LOG_LIMIT, typed=True)
            print(f"nada web: adaptation job {job.id} failed: {log_line}", file=sys.stderr)

    def _clip_spec(self) -> str:
        """The CLIP spec of this app's runs: the one asked for, or for 'auto' the base profile's (see `defaults`)."""
        return self.defaults().resolved_clip()

    def _clip_ensemble(self) -> list[tuple[Any, float]]:
        """The CLIP ensemble of this app's runs (``_clip_spec``), loaded once."""
        spec = self._clip_spec()
        with self._lock:
            cached = getattr(self, "_ensemble", None)
        if cached is None:
            cached = load_clip_ensemble(spec, self.device)
            with self._lock:
                self._ensemble = cached
        return cached

    def job(self, job_id: int | None) -> AdaptJob | None:
        """The job with this id (None for none)."""
        return self.jobs.get(int(job_id)) if job_id is not None else None

    def cancel(self, job_id: int | None, session: Session | None = None) -> AdaptJob:
        """Cancel a queued or running job (of `session`, when given); NadaError when there is none to cancel."""
        job = self.job(job_id)
        if job is None or job.finished or (session is not None and job.id not in session.jobs):
            raise NadaError("no adaptation is running or queued in this page: start one first")
        self.queue.cancel(job)
        return job

    def job_status(self, job: AdaptJob) -> str:
        """One line of status: the queue position, step/total with the loss, or the end."""
        if job.state == "queued":
            position = self.queue.position(job)
            return f"queued: position {position} in the queue (one adaptation at a time on {self.device})"
        if job.state == "running":
            loss = f", loss {job.loss:.4f}" if job.loss is not None else ""
            return f"running: step {job.step} of {job.total}{loss}"
        return f"{job.state}: {job.message}"

    # ---- Stylize

    def stylize(
        self, photo: str | None, style_keys: Sequence[str], steps: int, session: Session | None = None
    ) -> tuple[list[tuple["Image.Image", str]], list[str]]:
        """Aligned input, reconstruction and one image per chosen style (captioned), plus notes (dropped losses ...)."""
        if not photo:
            raise NadaError("no photo uploaded: upload a photo (PNG or JPEG) first")
        if not style_keys:
            raise NadaError("no style chosen: tick at least one preset or adapted generator")
        if not 1 <= int(steps) <= self.limits.max_steps:
            raise NadaError(f"{int(steps)} inversion steps asked for: give 1 to {self.limits.max_steps}")
        entries = [self.style(k, session) for k in style_keys]
        self._check_upload(Path(photo))
        notes: list[str] = []
        try:
            report = self._stylize(photo, entries, InvertConfig(steps=int(steps)), notes)
        except NadaError as e:  # the upload's temporary path means nothing to the person: name the file only
            raise NadaError(str(e).replace(str(photo), Path(photo).name)) from None
        r = report.results[0]
        quality = f"MSE {r.mse:.4f}" + (
            f", {report.perceptual_name} {r.perceptual:.4f}" if r.perceptual is not None else ""
        )
        gallery = [(_pil(r.aligned), "aligned input"), (_pil(r.reconstruction), f"reconstruction ({quality})")]
        gallery += [(_pil(img), name) for name, img in r.styled.items()]
        return gallery, [n for n in notes if n.startswith("dropped")]

    def _check_upload(self, path: Path) -> None:
        """NadaError for an upload over the byte or pixel limit, read from the file size and the image header only."""
        import warnings

        mb = self.limits.max_upload_mb
        if path.is_file() and path.stat().st_size > mb * 1_000_000:
            raise NadaError(f"{path.name} is larger than {mb} MB: upload a smaller photo")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as img:  # lazy: reads the header, decodes nothing
                    w, h = img.size
        except Image.DecompressionBombError:
            w, h = 2**31, 1  # Pillow's own bound is far above ours
        except (OSError, ValueError, SyntaxError):
            return  # not an image: load_image names the file and says so
        if w * h > self.limits.max_upload_pixels:
            size = f"{w}x{h} pixels" if w < 2**31 else "too many pixels"
            raise NadaError(
                f"{path.name} has {size}: this server reads photos of at most "
                f"{self.limits.max_upload_pixels / 1e6:.1f} megapixels; upload a smaller one"
            )

    def _stylize(
        self, photo: str, entries: Sequence[StyleEntry], config: "InvertConfig", notes: list[str]
    ) -> "StylizeReport":
        """nada.photos.stylize.stylize on one photo into a fresh output folder; styles split into presets
        and checkpoint files."""
        return stylize(
            [photo],
            self._new_output_dir("stylize"),
            presets=[e.preset for e in entries if e.preset is not None],
            checkpoints=[str(e.checkpoint) for e in entries if e.preset is None],
            config=config,
            device=self.device,
            allow_missing_losses=True,
            progress=False,
            log=notes.append,
        )


def _allowed_folder(folder: str | Path | None) -> Path | None:
    """The operator's checkpoint folder, resolved once (symlinks and '..' gone); NadaError when it is no folder."""
    if folder is None or not str(folder).strip():
        return None
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise NadaError(f"checkpoint folder {folder} is not a folder: pass an existing folder to --checkpoints")
    return path


def _seed_count(spec: str) -> int:
    """How many seeds "0-15,20" names, without building the list (a malformed part counts 1: parse_seeds explains)."""
    total = 0
    for part in str(spec).split(","):
        lo, sep, hi = part.strip().partition("-")
        if sep and lo.strip().isdigit() and hi.strip().isdigit():
            total += max(0, int(hi) - int(lo) + 1)
        elif part.strip():
            total += 1
    return total


# ---------------------------------------------------------------- the Gradio page


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a callback so any failure reaches the page as one short gr.Error (no stack trace);
    the server keeps serving."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except NadaError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:
            print(f"nada web: {fn.__name__} failed: {one_line(e, SERVER_LOG_LIMIT, typed=True)}", file=sys.stderr)
            raise gr.Error(one_line(e, typed=True), print_exception=False) from None

    return wrapped


def _progress_html(job: AdaptJob | None, status: str) -> str:
    """A native <progress> bar with the status line under it."""
    import html

    value = job.step if job is not None else 0
    total = job.total if job is not None else 1
    return (
        f'<progress id="adapt-progress" value="{value}" max="{total}" style="width:100%"></progress>'
        f'<p id="adapt-status">{html.escape(status)}</p>'
    )


def build_app(backend: WebBackend | None = None, **backend_options: Any) -> "gr.Blocks":
    """The Gradio page (Generate, Adapt, Stylize) over `backend` (default: WebBackend(**backend_options))."""
    import gradio as gr

    be = backend if backend is not None else WebBackend(**backend_options)
    d = be.defaults()
    first = (be.style_choices() or [("", None)])[0][1]

    with gr.Blocks(title="nada: StyleGAN-NADA", analytics_enabled=False) as app:
        gr.Markdown(
            f"## nada: text-driven domain adaptation of StyleGAN2\nBase generator: `{be.base}` on `{be.device}`."
        )
        with gr.Tab("Generate") as tab_generate:
            with gr.Row():
                g_style = gr.Dropdown(
                    be.style_choices(), value=first, label="style (preset or adapted generator)", elem_id="gen-style"
                )
                g_ckpt = gr.Textbox(
                    label="or a preset, a registered generator or a file in the server's folder",
                    placeholder="sketch/generator.pt",
                    elem_id="gen-checkpoint",
                )
            with gr.Row():
                g_seeds = gr.Textbox(
                    value="", label="seeds, e.g. 0-7 or 1,5,9 (empty: use the count)", elem_id="gen-seeds"
                )
                g_count = gr.Number(
                    value=4, precision=0, minimum=1, maximum=be.limits.max_seeds, label="count", elem_id="gen-count"
                )
                g_trunc = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="truncation", elem_id="gen-truncation")
            g_button = gr.Button("Generate", variant="primary", elem_id="gen-button")
            g_gallery = gr.Gallery(
                label="base | adapted, per seed", columns=4, object_fit="contain", elem_id="gen-gallery"
            )
            g_files = gr.File(label="download", file_count="multiple", elem_id="gen-files")

        with gr.Tab("Adapt"):
            with gr.Row():
                a_source = gr.Textbox(
                    value=d.source, label="source text (what the generator makes now)", elem_id="adapt-source"
                )
                a_target = gr.Textbox(
                    value=d.target, label="target text (the new domain)", placeholder="sketch", elem_id="adapt-target"
                )
            with gr.Row():
                a_layers = gr.Dropdown(
                    list(dict.fromkeys([d.layers, *LAYER_CHOICES])),
                    value=d.layers,
                    allow_custom_value=True,
                    label="layers to train (all, last:K, auto:K, grad:K or names)",
                    elem_id="adapt-layers",
                )
                a_iters = gr.Number(
                    value=min(d.iterations, be.limits.max_iterations),
                    precision=0,
                    minimum=1,
                    maximum=be.limits.max_iterations,
                    label="iterations",
                    elem_id="adapt-iterations",
                )
            a_keep = gr.Textbox(
                value=be.default_keep(),
                label="attributes to keep, read by CLIP: 'a smiling face|a frowning face; "
                "glasses|no glasses', or registered groups by name (NAME or NAME:a,b); empty: none",
                elem_id="adapt-keep",
            )
            with gr.Row():
                a_start = gr.Button("Adapt", variant="primary", elem_id="adapt-button")
                a_cancel = gr.Button("Cancel", variant="stop", elem_id="adapt-cancel")
            a_status = gr.HTML(_progress_html(None, "idle"), elem_id="adapt-status-box")
            a_grid = gr.Image(
                label="samples: base row above adapted row", type="filepath", interactive=False, elem_id="adapt-grid"
            )
            a_job = gr.State(None)

        with gr.Tab("Stylize") as tab_stylize:
            with gr.Row():
                s_photo = gr.File(label="photo", type="filepath", elem_id="stylize-photo")
                s_styles = gr.CheckboxGroup(
                    be.style_choices(), value=[first] if first else [], label="styles", elem_id="stylize-styles"
                )
            s_steps = gr.Slider(
                1,
                be.limits.max_steps,
                value=min(InvertConfig().steps, be.limits.max_steps),
                step=1,
                label="inversion steps",
                elem_id="stylize-steps",
            )
            s_button = gr.Button("Stylize", variant="primary", elem_id="stylize-button")
            s_gallery = gr.Gallery(label="aligned input, reconstruction, styles", columns=4, elem_id="stylize-gallery")
        session = gr.State(Session())  # this visitor's styles and jobs; Gradio gives each visitor a copy

        # ---- callbacks: thin wrappers over the backend

        @_user_errors
        def on_generate(style: str, ckpt: str, seeds: str, count: float, trunc: float, visitor: Session) -> tuple:
            pairs, files = be.generate(style, ckpt, seeds, int(count or 0), trunc, session=visitor)
            return pairs, [str(f) for f in files], gr.update(choices=be.style_choices(visitor)), visitor

        def refresh(visitor: Session) -> tuple[Any, Any]:
            return gr.update(choices=be.style_choices(visitor)), gr.update(choices=be.style_choices(visitor))

        def adapt_stream(
            source: str,
            target: str,
            layers: str,
            iterations: float,
            attributes: str,
            visitor: Session,
            progress: gr.Progress = gr.Progress(),
        ) -> Iterator[tuple[Any, ...]]:
            job = _user_errors(be.submit_adapt)(source, target, layers, int(iterations or 0), attributes or "", visitor)
            keep = gr.update()
            while True:
                status = be.job_status(job)
                sample = job.latest_sample()
                if job.state == "running":
                    progress((job.step, job.total), desc="adapting", unit="steps")
                if job.finished:
                    break
                yield job.id, _progress_html(job, status), str(sample) if sample else keep, keep, keep, visitor
                time.sleep(POLL_SECONDS)
            if job.state == "failed":
                raise gr.Error(job.message, print_exception=False)
            if job.state == "cancelled":
                gr.Warning(f"adaptation {job.message}")
            if job.entry is not None:  # the worker added it to the same object; Gradio stores what is returned
                visitor.styles[job.entry.key] = job.entry
            choices = be.style_choices(visitor)
            final = str(sample) if sample else keep
            pick = {"value": job.entry.key} if job.entry is not None else {}
            picks = gr.update(choices=choices, **pick), gr.update(choices=choices)
            yield None, _progress_html(job, status), final, *picks, visitor

        @_user_errors
        def on_cancel(job_id: int | None, visitor: Session) -> str:
            job = be.cancel(job_id, visitor)
            return _progress_html(
                job, "cancelling: stops after the current iteration" if job.state == "running" else be.job_status(job)
            )

        @_user_errors
        def on_stylize(photo: str | None, styles: list[str], steps: float, visitor: Session) -> tuple[Any, ...]:
            gallery, notes = be.stylize(photo, styles or [], int(steps), session=visitor)
            for note in notes:
                gr.Info(note)
            return gallery

        g_button.click(
            on_generate, [g_style, g_ckpt, g_seeds, g_count, g_trunc, session], [g_gallery, g_files, g_style, session]
        )
        a_start.click(
            adapt_stream,
            [a_source, a_target, a_layers, a_iters, a_keep, session],
            [a_job, a_status, a_grid, g_style, s_styles, session],
            concurrency_limit=None,
        )  # many pages may watch their jobs; the JobQueue runs one at a time
        a_cancel.click(on_cancel, [a_job, session], [a_status], concurrency_limit=None)
        s_button.click(on_stylize, [s_photo, s_styles, s_steps, session], [s_gallery])
        for tab in (tab_generate, tab_stylize):
            tab.select(refresh, [session], [g_style, s_styles])
    app.nada_backend = be  # type: ignore[attr-defined]  # tests and serve() reach the backend through the app
    return app


def _local_theme() -> "gr.themes.Base":
    """Gradio's default look with system fonts: the default theme fetches web fonts, which offline machines cannot."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(app: "gr.Blocks", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True) -> str:
    """Start the page on host:port (queue on, no share link, no telemetry); returns its URL.
    block=False returns at once."""
    be: WebBackend = app.nada_backend  # type: ignore[attr-defined]
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        show_error=False,
        quiet=not block,
        allowed_paths=[str(be.work_dir)],
        ssr_mode=False,
        theme=_local_theme(),
        footer_links=[],
        max_file_size=be.limits.max_upload_mb * 1_000_000,
    )
    return url
