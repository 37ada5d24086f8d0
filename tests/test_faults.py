"""Fault injection: full disks, kills during a save, two runs in one folder, bad files, unwritable outputs, limits.

Every fault ends in one line and a non-zero exit code, leaves nothing half-written, and costs bounded memory.
Disk faults are injected by patching the writer (no special file system needed); kills are real SIGKILLs of a
child process.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import nada.generator.checkpoints
import nada.generator.generate
import nada.photos.images
from nada.adaptation.loop import RunPaths, adapt, claim_run_dir
from nada.config import AdaptConfig
from nada.errors import NadaError, NadaWarning
from nada.frontends.cli import main
from nada.generator.checkpoints import save_checkpoint
from nada.generator.networks import Generator
from nada.io import TMP_SUFFIX, atomic_torch_save, atomic_write
from nada.weights import registry
from nada.weights.download import WeightsSource
from nada.weights.presets import load_preset_file, pack_preset

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = {4: 16, 8: 16, 16: 8}


def tiny_generator(seed: int = 0) -> Generator:
    """A 16x16 generator with seeded random weights and its mean latent set."""
    torch.manual_seed(seed)
    G = Generator(16, style_dim=16, n_mlp=1, channels=CHANNELS).eval()
    G.compute_mean_latent(n=256, seed=0)
    return G


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The stderr of a failed command, checked to be exactly one `nada COMMAND: error:` line without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith(f"nada {command}: error:") and err.count("\n") == 1, err
    return err


def leftovers(folder: Path) -> list[Path]:
    """Temporary files anywhere under `folder`."""
    return [p for p in folder.rglob("*") if p.name.endswith(TMP_SUFFIX) or p.name.endswith(".tmp")]


def disk_full(*args: object, **kwargs: object) -> None:
    """A writer that fails as a full disk does, after part of the file is out."""
    target = args[1] if len(args) > 1 else kwargs.get("f") or kwargs.get("fp")
    if isinstance(target, (str, os.PathLike)):
        Path(target).write_bytes(b"PK\x03\x04 half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


# ---------------------------------------------------------------- atomic writes


def test_disk_full_during_an_atomic_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(NadaError, match=r"cannot write .*a\.pt: the disk is full: free some space") as e:
        atomic_torch_save({"x": torch.zeros(3)}, tmp_path / "a.pt")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_torch_container_error_is_named_and_cleaned(tmp_path: Path) -> None:
    def torch_fails(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with pytest.raises(NadaError, match=r"cannot write .*b\.pt: torch could not finish the file"):
        atomic_write(tmp_path / "b.pt", torch_fails)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors pass through unchanged
        atomic_write(tmp_path / "c.pt", lambda tmp: (_ for _ in ()).throw(RuntimeError("unrelated")))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    before = os.umask(umask)
    try:
        path = atomic_write(tmp_path / f"f{umask:o}.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode


def test_cli_generate_on_a_full_disk_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: disk_full(self, fp))
    assert (
        main(["generate", "--checkpoint", str(ckpt), "--seeds", "0-2", "--out-dir", str(out), "--device", "cpu"]) == 2
    )
    assert "the disk is full" in one_line_error(capsys, "generate")
    assert list(out.iterdir()) == []


def test_cli_turns_a_raw_write_error_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nada.frontends.cli

    def log_append_fails(args: object) -> int:  # a write outside the atomic helpers, e.g. the log's append
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/log.jsonl")

    help, add, _ = nada.frontends.cli.COMMANDS["generate"]
    monkeypatch.setitem(nada.frontends.cli.COMMANDS, "generate", (help, add, log_append_fails))
    assert main(["generate", "--checkpoint", "x"]) == 2
    assert "runs/x/log.jsonl: the disk is full" in one_line_error(capsys, "generate")


# ---------------------------------------------------------------- run folders: adapt


def adapt_config(out: Path, **kw: object) -> AdaptConfig:
    base = dict(
        source="photo",
        target="sketch",
        generator="tiny-test",
        templates="plain",
        layers="all",
        iterations=4,
        batch_size=2,
        auto_batch=2,
        lr=0.01,
        out_dir=str(out),
        n_sample_images=2,
        sample_every=0,
        save_every=2,
        device="cpu",
    )
    base.update(kw)
    return AdaptConfig(**base)


def adapt_argv(golden: Path, generator: Path, out: Path, *extra: str) -> list[str]:
    return [
        "adapt",
        "--source",
        "photo",
        "--target",
        "sketch",
        "--generator",
        str(generator),
        "--clip",
        str(golden / "tiny_clip_openai.pt"),
        "--layers",
        "all",
        "--iterations",
        "6",
        "--batch-size",
        "2",
        "--templates",
        "plain",
        "--n-samples",
        "2",
        "--sample-every",
        "0",
        "--save-every",
        "2",
        "--lr",
        "0.01",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]


def test_a_claimed_folder_refuses_a_second_claim(tmp_path: Path) -> None:
    cfg = adapt_config(tmp_path / "run")
    with claim_run_dir(cfg, resume=False, force=False):
        with pytest.raises(NadaError, match=rf"in use by another nada run \(pid {os.getpid()} on .*, started "):
            with claim_run_dir(cfg, resume=False, force=False):
                pass
    with claim_run_dir(cfg, resume=False, force=False) as paths:  # released at the end of the block
        assert paths.root == tmp_path / "run"


@pytest.mark.slow
def test_second_run_into_a_held_folder_is_refused_until_the_holder_is_killed(
    tmp_path: Path, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys
            from nada.adaptation.loop import claim_run_dir
            from nada.config import AdaptConfig
            with claim_run_dir(AdaptConfig(out_dir=sys.argv[1]), resume=False, force=False):
                print("held", flush=True)
                sys.stdin.read()
        """),
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
        argv = adapt_argv(golden, ckpt, out, "--iterations", "1")
        assert main(argv) == 2
        err = one_line_error(capsys, "adapt")
        assert f"is in use by another nada run (pid {holder.pid} on " in err and ", started 20" in err
        assert not RunPaths(out).has_run()  # the refused run wrote nothing
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock of a killed holder
        holder.wait(timeout=60)
        assert main(argv) == 0
    finally:
        holder.kill()
        holder.wait(timeout=60)


KILLED_SAVE = """
import os, signal, sys
import torch
from nada.frontends.cli import main

torch.set_num_threads(1)
real, calls = torch.save, []

def save_then_die(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 3:  # step 2 wrote checkpoint and state; die half-way through the checkpoint of step 4
        with open(f, "wb") as fh:
            fh.write(b"PK half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)

torch.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_during_a_save_then_resume(tmp_path: Path, golden: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, *adapt_argv(golden, ckpt, out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    paths = RunPaths(out)
    assert [p.name.endswith(TMP_SUFFIX) for p in leftovers(out)] == [True]  # the half-written checkpoint
    assert torch.load(paths.state, weights_only=True)["step"] == 2
    assert not paths.final.exists()

    assert main(adapt_argv(golden, ckpt, out, "--resume")) == 0
    assert leftovers(out) == []  # claiming the folder removed the stale temporary file
    assert main(adapt_argv(golden, ckpt, tmp_path / "straight")) == 0
    resumed = torch.load(paths.final, weights_only=True)["g_ema"]
    straight = torch.load(RunPaths(tmp_path / "straight").final, weights_only=True)["g_ema"]
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_resume_with_nothing_saved_warns_and_starts(
    tmp_path: Path, golden: Path, tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = adapt_config(tmp_path / "fresh", iterations=1, save_every=0)
    with pytest.warns(NadaWarning, match="nothing to resume in .*fresh: no state was saved yet"):
        adapt(cfg, progress=False, G_base=tiny_generator(), clip=tiny, resume=True)
    assert RunPaths(Path(cfg.out_dir)).final.is_file()
    ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
    assert main(adapt_argv(golden, ckpt, tmp_path / "cli", "--iterations", "1", "--resume")) == 0
    err = capsys.readouterr().err
    assert err.count("nada adapt: warning: nothing to resume in") == 1 and "Warning:" not in err


@pytest.fixture
def saved_run(tmp_path: Path, tiny) -> AdaptConfig:
    """A run of 2 iterations saved at step 2, ready to resume to 4."""
    cfg = adapt_config(tmp_path / "run", iterations=2)
    adapt(cfg, progress=False, G_base=tiny_generator(), clip=tiny)
    return cfg.replace(iterations=4)


def edit_state(cfg: AdaptConfig, **changes: object) -> None:
    path = RunPaths(Path(cfg.out_dir)).state
    state = torch.load(path, weights_only=True)
    state.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del state[key]
    torch.save(state, path)


def test_state_pointing_outside_the_run_folder_is_refused(saved_run: AdaptConfig, tmp_path: Path, tiny) -> None:
    outside = save_checkpoint(tmp_path / "elsewhere" / "generator.pt", tiny_generator(1), {})
    edit_state(saved_run, checkpoint=os.path.relpath(outside, saved_run.out_dir))
    with pytest.raises(NadaError, match="names the checkpoint '../elsewhere/generator.pt', outside the run folder"):
        adapt(saved_run, progress=False, G_base=tiny_generator(), clip=tiny, resume=True)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("no optimizer", "state.pt lacks or mistypes optimizer"),
        ("nan weights", "the checkpoint generator.pt: .* contains NaN"),
        ("nan optimizer", "the optimizer state: .* contains NaN"),
    ],
)
def test_bad_state_files_give_one_line(saved_run: AdaptConfig, tiny, fault: str, message: str) -> None:
    paths = RunPaths(Path(saved_run.out_dir))
    if fault == "no optimizer":
        edit_state(saved_run, optimizer=None)
    elif fault == "nan weights":
        ckpt = torch.load(paths.final, weights_only=True)
        next(iter(ckpt["g_ema"].values())).fill_(float("nan"))
        torch.save(ckpt, paths.final)
    else:
        optimizer = torch.load(paths.state, weights_only=True)["optimizer"]
        next(iter(optimizer["state"].values()))["exp_avg"].fill_(float("nan"))
        edit_state(saved_run, optimizer=optimizer)
    with pytest.raises(NadaError, match=message) as e:
        adapt(saved_run, progress=False, G_base=tiny_generator(), clip=tiny, resume=True)
    assert "\n" not in str(e.value) and "--force" in str(e.value)


def test_state_with_foreign_objects_gives_one_line_without_torch_advice(saved_run: AdaptConfig, tiny) -> None:
    torch.save({"step": 2, "payload": Path("x")}, RunPaths(Path(saved_run.out_dir)).state)  # a pickled class
    with pytest.raises(
        NadaError, match="refuses to load because loading it could run code: start over with --force"
    ) as e:
        adapt(saved_run, progress=False, G_base=tiny_generator(), clip=tiny, resume=True)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)


# ---------------------------------------------------------------- compact presets


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A compact preset file of an adapted copy of the registered base 'tiny'."""
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NADA_OFFLINE", "1")
    tiny = registry.RegisteredGenerator(
        "tiny", WeightsSource("tiny.pt", url="https://example.invalid/tiny.pt"), 16, "test"
    )
    monkeypatch.setitem(registry.GENERATORS, "tiny", tiny)
    base = tiny_generator()
    save_checkpoint(registry.generator_file("tiny"), base, {})
    adapted = tiny_generator()
    with torch.no_grad():
        adapted.to_rgbs[-1].conv.weight.mul_(1.5)
    run = save_checkpoint(tmp_path / "run" / "generator.pt", adapted, {"base_model": "tiny"})
    return pack_preset(run, tmp_path / "preset.pt")


@pytest.mark.parametrize(
    "fault, message",
    [
        ("nan delta", "delta .* contains NaN or infinite values"),
        ("nan latent_avg", "latent_avg contains NaN or infinite values"),
        ("wide latent_avg", r"latent_avg has shape \[17\], not \[16\]"),
        ("no delta", "has no 'delta' entry"),
        ("int delta", "is missing or not a float tensor"),
    ],
)
def test_bad_preset_files_are_refused_in_one_line(
    packed: Path, fault: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = torch.load(packed, weights_only=True)
    key = next(iter(obj["delta"]))
    if fault == "nan delta":
        obj["delta"][key][0] = float("nan")
    elif fault == "nan latent_avg":
        obj["latent_avg"][3] = float("nan")
    elif fault == "wide latent_avg":
        obj["latent_avg"] = torch.zeros(17)
    elif fault == "no delta":
        del obj["delta"]
    else:
        obj["delta"][key] = obj["delta"][key].int()
    torch.save(obj, packed)
    with pytest.raises(NadaError, match=message):
        load_preset_file(packed)
    assert (
        main(["generate", "--checkpoint", str(packed), "--out", str(packed.parent / "g.png"), "--device", "cpu"]) == 2
    )
    one_line_error(capsys, "generate")
    assert not (packed.parent / "g.png").exists()


# ---------------------------------------------------------------- outputs checked before any work


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any generator load fails the test: the refusal must come first."""

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("a generator was loaded before the refusal")

    monkeypatch.setattr(nada.generator.checkpoints, "load_generator", loaded)


@pytest.mark.parametrize(
    "flag, target", [("--out", "blocker/grid.png"), ("--out-dir", "blocker/images"), ("--out", "a-folder.png")]
)
def test_generate_refuses_an_unwritable_output_before_loading(
    tmp_path: Path, no_loading: None, flag: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "blocker").write_text("a file where a folder would go")
    (tmp_path / "a-folder.png").mkdir()
    assert main(["generate", "--checkpoint", "g.pt", flag, str(tmp_path / target), "--device", "cpu"]) == 2
    err = one_line_error(capsys, "generate")
    assert "is a file, not a folder" in err or "is a folder: give --out a file name" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders; the mode check needs a user")
def test_generate_refuses_a_read_only_folder(
    tmp_path: Path, no_loading: None, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["generate", "--checkpoint", "g.pt", "--out", str(locked / "g.png"), "--device", "cpu"]) == 2
    assert "permission denied" in one_line_error(capsys, "generate")


def test_stylize_refuses_an_unwritable_output_before_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def decoded(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was read before the refusal")

    monkeypatch.setattr(nada.photos.images, "load_image", decoded)
    (tmp_path / "blocker").write_text("a file")
    Image.new("RGB", (40, 40)).save(tmp_path / "p.png")
    argv = [
        "stylize",
        "--image",
        str(tmp_path / "p.png"),
        "--checkpoint",
        "c.pt",
        "--out",
        str(tmp_path / "blocker/out"),
    ]
    assert main(argv) == 2
    assert "blocker is a file, not a folder: choose another --out" in one_line_error(capsys, "stylize")


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0-4294967295"], "names more than 1,000,000 seeds"),
        (["--seeds", "0-999999,1000000"], "names more than 1,000,000 seeds"),
        (["--truncation", "1e30"], "--truncation 1e+30 is outside [-1.0, 2.0]"),
        (["--truncation", "nan"], "--truncation nan is outside"),
    ],
)
def test_generate_limits_refuse_before_loading(
    tmp_path: Path, no_loading: None, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--checkpoint", "g.pt", "--out-dir", str(tmp_path / "o"), *extra, "--device", "cpu"]) == 2
    assert message in one_line_error(capsys, "generate")


def test_sample_truncation_is_bounded_too() -> None:
    with pytest.raises(NadaError, match="sample_truncation 5.0 is outside"):
        adapt_config(Path("unused"), sample_truncation=5.0).validate()


def test_a_grid_too_large_is_refused_before_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
    monkeypatch.setattr(nada.generator.generate, "MAX_GRID_PIXELS", 16 * 16 * 10)
    monkeypatch.setattr(nada.generator.generate, "_render", lambda *a: pytest.fail("rendered before the refusal"))
    assert main(["generate", "--checkpoint", str(ckpt), "--seeds", "0-10", "--out", str(tmp_path / "g.png")]) == 2
    assert "a grid of 11 images of 16x16 pixels exceeds" in one_line_error(capsys, "generate")


def test_out_dir_streams_seeds_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = save_checkpoint(tmp_path / "g.pt", tiny_generator(), {})
    real, batches = nada.generator.generate._render, []

    def counted(G: Generator, seeds: list[int], *args: object) -> torch.Tensor:
        batches.append(len(seeds))
        return real(G, seeds, *args)

    monkeypatch.setattr(nada.generator.generate, "_render", counted)
    monkeypatch.setattr(nada.generator.generate, "MAX_GRID_PIXELS", 16 * 16 * 10)  # the limit binds grids only
    out = tmp_path / "many"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(ckpt),
                "--seeds",
                "0-40",
                "--out-dir",
                str(out),
                "--batch-size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert batches == [8, 8, 8, 8, 8, 1] and len(list(out.iterdir())) == 41
    streamed = np.asarray(Image.open(out / "seed0017.png"))
    alone = nada.generator.generate.generate_images(tiny_generator(), [17], batch_size=1)
    assert np.abs(streamed.astype(int) - nada.io.to_uint8_image(alone)[0].numpy().astype(int)).max() <= 1


def test_an_image_too_large_to_decode_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGBA", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(nada.photos.images, "MAX_DECODED_PIXELS", 300 * 200 - 1)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded before the refusal"))
    with pytest.raises(NadaError, match="is 300x200 pixels, more than the 59,999 nada decodes"):
        nada.photos.images.load_image(tmp_path / "big.png")


def test_alpha_is_composited_after_the_downscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1000, 2000, 4), dtype=np.uint8)
    rgba[:, :1000, 3] = 0  # the left half fully transparent: white after compositing, whatever its colour
    Image.fromarray(rgba).save(tmp_path / "logo.png")
    tracemalloc.start()
    x = nada.photos.images.load_image(tmp_path / "logo.png", max_side=200, log=lambda m: None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape == (1, 3, 100, 200)
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB traced: the full-size image was converted to float"
    assert float(x[..., :95].min()) == 1.0  # transparent part: white
    # The same as compositing at full size, then downscaling, up to rounding.
    a = rgba.astype(np.float32) / 255
    full = Image.fromarray(((a[..., :3] * a[..., 3:] + 1 - a[..., 3:]) * 255 + 0.5).astype(np.uint8))
    ref = np.asarray(full.resize((200, 100), Image.LANCZOS, reducing_gap=3.0)).astype(np.float32) / 127.5 - 1
    diff = np.abs(x[0].permute(1, 2, 0).numpy() - ref) * 127.5  # in 8-bit steps
    assert diff.max() <= 6 and diff.mean() < 0.5, (diff.max(), diff.mean())  # premultiplied 8-bit rounding at low alpha
