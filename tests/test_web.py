"""`nada web`: the backend's actions and the page's callbacks without a browser, then the page in a real browser.

The world is the toy world when its generator and CLIP are installed, else a tiny stand-in: a random
16px generator, one "styled" copy of it and the tiny CLIP of the golden folder. The browser test drives
Debian's chromium through Playwright and skips, with the reason, when either is missing.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'nada[web]'")

from nada.errors import NadaError  # noqa: E402
from nada.frontends.web import JobQueue, Session, WebBackend, _user_errors, build_app, serve  # noqa: E402
from nada.generator.checkpoints import save_checkpoint  # noqa: E402
from nada.generator.networks import Generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "src" / "nada" / "assets" / "toy"
CHROMIUM = os.environ.get("NADA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts" / "web"


def _toy_world_ready() -> bool:
    return all((TOY / f).is_file() for f in ("generator.pt", "clip.pt", "clip_config.json"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Backend options for the toy world (when installed) or the tiny stand-in, a photo and a text file."""
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NADA_OFFLINE", "1")
        mp.setenv("NADA_CACHE", str(root / "cache"))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        rng = np.random.default_rng(0)
        photo = root / "photo.png"
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(photo)
        not_image = root / "notes.png"  # an image suffix, text inside: the browser accepts it, nada must not
        not_image.write_text("this is not a picture\n")
        if _toy_world_ready():
            from nada.generator.checkpoints import load_generator

            G, base, clip = load_generator("toy").eval(), "toy", "auto"
        else:
            from conftest import golden_dir

            clip = str(golden_dir() / "tiny_clip_openai.pt")
            if not Path(clip).is_file():
                pytest.skip(f"neither the toy world nor the golden tiny CLIP ({clip}) is available")
            torch.manual_seed(0)
            G = Generator(16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()
            G.compute_mean_latent(256)
            base = str(save_checkpoint(root / "base.pt", G, {"alignment": "none"}))
        # One adapted style that exists in either world (the toy presets may not be packaged yet).
        styled = copy.deepcopy(G)
        with torch.no_grad():
            styled.to_rgbs[-1].conv.weight.mul_(-1)  # an obviously different "style"
        style = save_checkpoint(root / "negative" / "generator.pt", styled, {"base_model": base})
        options = {"generator": base, "clip": clip, "checkpoints": (str(style),)}
        style_size = G.size
        yield {"options": options, "root": root, "photo": photo, "not_image": not_image, "size": style_size}


@pytest.fixture
def backend(world, tmp_path):
    return WebBackend(device="cpu", work_dir=tmp_path / "work", **world["options"])


def _negative(world) -> str:
    """Style key of the world's "negative" checkpoint."""
    return f"checkpoint:{world['options']['checkpoints'][0]}"


def _wait(job, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not job.finished and time.monotonic() < end:
        time.sleep(0.05)
    assert job.finished, f"job still {job.state} after {seconds} s"


# ---------------------------------------------------------------- backend and callbacks


def test_generate_gives_pairs_and_downloads(backend, world):
    key = _negative(world)
    pairs, files = backend.generate(key, seeds="0-2", truncation=0.7)
    s = world["size"]
    assert [c.split(":")[0] for _, c in pairs] == ["seed 0", "seed 1", "seed 2"]
    assert all(img.size == (2 * s, s) for img, _ in pairs)  # base | adapted side by side
    left, right = np.asarray(pairs[0][0])[:, :s], np.asarray(pairs[0][0])[:, s:]
    assert np.abs(left.astype(int) - right.astype(int)).mean() > 1  # the style changes the image
    grid, archive = files
    assert grid.is_file() and Image.open(grid).size[0] > 3 * s
    assert len(zipfile.ZipFile(archive).namelist()) == 6
    again, _ = backend.generate(key, count=2)  # a count instead of seeds: seeds 0 and 1, same images
    # Same up to float rounding (batches of 2 and 3 take different convolution kernels: ~1e-6), which can
    # flip a pixel by one level of 255.
    diff = np.abs(np.asarray(again[1][0]).astype(int) - np.asarray(pairs[1][0]).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_generate_in_bf16_renders_close_to_fp32(backend, world, tmp_path):
    bf16 = WebBackend(device="cpu", work_dir=tmp_path / "bf16", precision="bf16", **world["options"])
    ref, _ = backend.generate(_negative(world), seeds="0-1")
    low, _ = bf16.generate(_negative(world), seeds="0-1")
    levels = [np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).mean() for (a, _), (b, _) in zip(ref, low)]
    assert all(0 < x < 2.0 for x in levels), levels
    with pytest.raises(NadaError, match="unknown precision"):
        WebBackend(device="cpu", work_dir=tmp_path / "bad", precision="fp16", **world["options"])


def test_generate_refuses_user_mistakes(backend, world):
    with pytest.raises(NadaError, match="no style chosen"):
        backend.generate("", seeds="0")
    with pytest.raises(NadaError, match="bad seed"):
        backend.generate(_negative(world), seeds="x-y")
    with pytest.raises(NadaError, match="no such checkpoint"):
        backend.generate("", checkpoint="/nonexistent/gen.pt")
    with pytest.raises(NadaError, match="at most"):
        backend.generate(_negative(world), seeds="0-100")


def test_callback_errors_are_short_page_messages():
    def broken() -> None:
        raise NadaError("the target text is empty: describe the new domain")

    def crashing() -> None:
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error, match="the target text is empty"):
        _user_errors(broken)()
    with pytest.raises(gr.Error) as info:
        _user_errors(crashing)()
    assert str(info.value.message) == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize(
    "source,target,layers,match",
    [
        ("photo", "", "auto:3", "target text is empty"),
        ("photo", "  Photo ", "auto:3", "same text"),
        ("", "sketch", "auto:3", "source text is empty"),
        ("photo", "sketch", "bogus:7", "layer"),
    ],
)
def test_adapt_refuses_bad_settings(backend, source, target, layers, match):
    with pytest.raises(NadaError, match=match):
        backend.submit_adapt(source, target, layers, 3)
    assert backend.jobs == {} or all(j.state != "queued" for j in backend.jobs.values())


def test_adapt_keeps_the_attributes_the_page_names(backend):
    with pytest.raises(NadaError, match="fewer than 2 values"):
        backend.submit_adapt("face", "smiling face", "all", 3, keep="a smiling face")
    config = backend.adapt_config("face", "smiling face", "all", 3, backend.work_dir / "x", keep=" toy:glasses ")
    assert config.keep == "toy:glasses" and config.resolved_keep() == [
        ["a face without glasses", "a face with glasses"]
    ]
    assert backend.adapt_config("photo", "sketch", "all", 3, backend.work_dir / "y").keep == backend.default_keep()
    assert backend.adapt_config("photo", "sketch", "all", 3, backend.work_dir / "z", keep="").keep == ""


def test_adapt_job_becomes_a_style(backend, world):
    visitor = Session()
    before = {k for _, k in backend.style_choices(visitor)}
    job = backend.submit_adapt("photo", "sketch", "all", 2, session=visitor)
    from nada.toy.plugin import TOY_RECIPE

    # Untouched fields keep AdaptConfig's defaults; the toy base runs with its profile, the toy recipe.
    plain = {"lr": 0.002, "clip_views": 0, "clip_noise": 0.0, "lambda_structure": 0.0, "keep": "", "lambda_keep": 1.0}
    recipe = dict(TOY_RECIPE) if backend.base == "toy" else plain
    assert job.config.iterations == 2 and job.config.beta2 == 0.99
    keys = ("lr", "clip_views", "clip_noise", "lambda_structure", "keep", "lambda_keep")
    assert tuple(getattr(job.config, k) for k in keys) == tuple(recipe[k] for k in keys)
    if backend.base == "toy":
        assert job.config.clip == recipe["clip"] == "toy,toy-robust:2,toy-rn"
    _wait(job)
    assert job.state == "done", job.message
    assert job.step == 2 and job.latest_sample() is not None
    new = {k for _, k in backend.style_choices(visitor)} - before
    assert new == {f"run:{job.name}"}
    assert {k for _, k in backend.style_choices()} == before  # the run is the visitor's, not everyone's
    pairs, _ = backend.generate(f"run:{job.name}", seeds="0", session=visitor)
    assert pairs[0][0].size == (2 * world["size"], world["size"])


def test_queue_positions_and_cancel(backend):
    long = backend.submit_adapt("photo", "sketch", "all", backend.limits.max_iterations)
    waiting = backend.submit_adapt("photo", "pencil drawing", "all", 2)
    end = time.monotonic() + 60
    while long.step < 1 and time.monotonic() < end:
        time.sleep(0.05)
    assert long.state == "running"
    assert backend.job_status(waiting).startswith("queued: position 1")
    backend.cancel(waiting.id)
    assert waiting.state == "cancelled"
    backend.cancel(long.id)
    _wait(long)
    assert long.state == "cancelled" and 1 <= long.step < backend.limits.max_iterations
    assert "cancelled at step" in backend.job_status(long)
    with pytest.raises(NadaError, match="no adaptation"):
        backend.cancel(long.id)


def test_job_queue_runs_one_at_a_time():
    running, peak, lock = [0], [0], __import__("threading").Lock()

    def run(job) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        job.state = "done"

    from nada.config import AdaptConfig
    from nada.frontends.web import AdaptJob

    q = JobQueue()
    jobs = [AdaptJob(i, AdaptConfig(target="x"), f"j{i}") for i in range(4)]
    for j in jobs:
        q.submit(j, run)
    assert q.position(jobs[3]) in (3, 4)
    for j in jobs:
        _wait(j, 10)
    assert peak[0] == 1 and all(j.state == "done" for j in jobs)


def test_stylize_shows_input_reconstruction_and_styles(backend, world):
    key = _negative(world)
    gallery, notes = backend.stylize(str(world["photo"]), [key], steps=2)
    captions = [c for _, c in gallery]
    assert captions[0] == "aligned input" and captions[1].startswith("reconstruction (MSE")
    assert len(gallery) == 3
    assert all(img.size == (world["size"], world["size"]) for img, _ in gallery)


def test_stylize_refuses_non_images_and_missing_choices(backend, world):
    key = _negative(world)
    with pytest.raises(NadaError, match="not an image") as info:
        backend.stylize(str(world["not_image"]), [key], steps=2)
    assert str(info.value).startswith("notes.png is not an image")  # the file's name, not the upload's temporary path
    with pytest.raises(NadaError, match="no photo"):
        backend.stylize(None, [key], steps=2)
    with pytest.raises(NadaError, match="no style"):
        backend.stylize(str(world["photo"]), [], steps=2)


def test_build_app_and_cli(world, tmp_path, monkeypatch):
    from nada.frontends import web
    from nada.frontends.cli import main

    app = build_app(WebBackend(device="cpu", work_dir=tmp_path / "a", **world["options"]))
    assert isinstance(app, gr.Blocks)
    seen = {}
    monkeypatch.setattr(web, "serve", lambda app, host, port, block: seen.update(host=host, port=port, app=app) or "")
    args = [
        "web",
        "--port",
        "7999",
        "--device",
        "cpu",
        "--work-dir",
        str(tmp_path / "b"),
        "--generator",
        world["options"]["generator"],
        "--clip",
        world["options"]["clip"],
    ]
    for c in world["options"]["checkpoints"]:
        args += ["--checkpoint", c]
    assert main(args) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999  # loopback unless asked otherwise
    assert isinstance(seen["app"], gr.Blocks)


# ---------------------------------------------------------------- the page in a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_browser_generate_adapt_stylize(world, tmp_path):
    """Click through the three tabs in headless chromium; screenshots go to tests/artifacts/web/."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not found at {CHROMIUM}: apt-get install -y chromium (or set NADA_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install playwright")

    backend = WebBackend(device="cpu", work_dir=tmp_path / "work", **world["options"])
    app = build_app(backend)
    url = serve(app, port=_free_port(), block=False)
    shots = ARTIFACTS
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url, wait_until="domcontentloaded")

            # Generate: seeds 0-3 -> four pairs in the gallery and two files to download
            page.locator("#gen-seeds textarea").fill("0-3")
            page.locator("#gen-button").click()
            page.locator("#gen-gallery img").nth(3).wait_for()
            page.locator("#gen-files a").nth(1).wait_for()
            assert page.locator("#gen-gallery img").count() >= 4
            page.screenshot(path=str(shots / "1-generate.png"), full_page=True)

            # Adapt: a few iterations, the progress bar reaches the end, the sample grid shows
            page.get_by_role("tab", name="Adapt").click()
            page.locator("#adapt-target textarea").fill("sketch")
            page.locator("#adapt-iterations input").fill("3")
            page.locator("#adapt-button").click()
            page.locator("#adapt-status", has_text="done").wait_for(timeout=60_000)
            page.locator("#adapt-grid img").wait_for()
            assert page.locator("#adapt-progress").get_attribute("value") == "3"
            page.screenshot(path=str(shots / "2-adapt.png"), full_page=True)

            # Adapt with empty target: a short error message, no stack trace
            page.locator("#adapt-target textarea").fill("")
            page.locator("#adapt-button").click()
            page.get_by_text("the target text is empty").first.wait_for()
            assert page.get_by_text("Traceback").count() == 0

            # Stylize: a non-image upload is refused with a message, then a photo is stylized
            page.get_by_role("tab", name="Stylize").click()
            page.locator("#stylize-photo input[type=file]").set_input_files(str(world["not_image"]))
            page.locator("#stylize-steps input[type=number]").fill("2")
            page.locator("#stylize-button").click()
            page.get_by_text("is not an image nada can read").first.wait_for()
            page.screenshot(path=str(shots / "3-stylize-error.png"), full_page=True)
            assert page.get_by_text("Traceback").count() == 0

            page.locator("#stylize-photo button[aria-label='Clear']").first.click()
            page.locator("#stylize-photo input[type=file]").set_input_files(str(world["photo"]))
            page.locator("#stylize-styles label").last.click()  # the style adapted a moment ago, as well
            page.locator("#stylize-button").click()
            page.locator("#stylize-gallery img").nth(3).wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "4-stylize.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    assert (shots / "4-stylize.png").is_file()
