"""Domain vectors: exactness at zero, what they change, domain files and their base, adaptation, mixed batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nada.adaptation.loop import RunPaths, adapt
from nada.config import AdaptConfig
from nada.errors import NadaError
from nada.generator.checkpoints import load_generator, save_checkpoint
from nada.generator.domains import (
    DomainGenerator,
    apply_domain,
    blend_vectors,
    fold_domain,
    parse_domains,
    read_domain,
    render_domains,
    save_domain,
)
from nada.generator.networks import Generator

CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


def make_generator(seed: int = 0) -> Generator:
    """A 32x32 generator with seeded random weights (noise strengths non-zero) and its mean latent set."""
    torch.manual_seed(seed)
    G = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    G.compute_mean_latent(n=512, seed=0)
    return G


def random_vector(G: Generator, seed: int, scale: float = 0.3, n: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (G.domain_size,) if n is None else (n, G.domain_size)
    return scale * torch.randn(*shape, generator=gen)


def latents(G: Generator, n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the vector in the generator


def test_layout_covers_every_modulated_layer() -> None:
    G = make_generator()
    layers = G.domain_channels()
    assert [name for name, _ in layers] == [info.name for info in G.layer_table()]
    assert (
        G.domain_size == sum(G.get_submodule(n).conv.modulation.weight.shape[0] for n, _ in layers) == 32 * 6 + 16 * 5
    )


@pytest.mark.parametrize("layout", ["cpu", "activations", "grouped"])
def test_zero_vector_is_the_base_exactly(layout: str) -> None:
    G = make_generator()
    G.layout = layout
    z = latents(G)
    base = G(z, truncation_psi=0.7)
    assert torch.equal(G(z, truncation_psi=0.7, domain=torch.zeros(G.domain_size)), base)
    assert torch.equal(DomainGenerator(G)(z, truncation_psi=0.7), base)
    assert torch.equal(G(z, truncation_psi=0.7, domain=torch.zeros(3, G.domain_size)), base)


@pytest.mark.parametrize("layout", ["cpu", "activations"])
def test_vector_changes_only_the_style_modulation(layout: str) -> None:
    """Rendering with a vector equals the base with each modulation's output rows scaled by (1 + delta)."""
    G = make_generator()
    G.layout = layout
    v = random_vector(G, 5)
    z = latents(G)
    with torch.no_grad():
        out = G(z, domain=v)
        scaled = make_generator()
        scaled.layout = layout
        for (name, _), part in zip(G.domain_channels(), v.split([c for _, c in G.domain_channels()])):
            mod = scaled.get_submodule(name).conv.modulation
            mod.weight.mul_(1 + part[:, None])
            mod.bias.mul_(1 + part)
        expected = scaled(z)
    assert not torch.allclose(out, G(z), atol=1e-3)  # the vector does something
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fold_domain(G, v)(z), out, atol=2e-5, rtol=1e-5)
    # The folded copy differs from the base in modulation weights and biases only.
    folded, base = fold_domain(G, v).state_dict(), G.state_dict()
    changed = {k for k in base if not torch.equal(base[k], folded[k])}
    assert changed and all(".modulation." in k for k in changed)


def test_bad_vector_shape_is_refused() -> None:
    G = make_generator()
    with pytest.raises(NadaError, match="does not fit this generator"):
        G(latents(G), domain=torch.zeros(G.domain_size + 1))
    with pytest.raises(NadaError, match="does not fit this generator"):
        G(latents(G, n=3), domain=torch.zeros(2, G.domain_size))


def test_mixed_batch_equals_one_domain_at_a_time() -> None:
    G = make_generator()
    vectors = random_vector(G, 7, n=4)
    z = latents(G, n=3)
    mixed = render_domains(G, vectors, z, truncation_psi=0.7, batch_size=5)  # batches cut across domains
    assert mixed.shape == (4, 3, 3, 32, 32)
    for k in range(4):
        alone = G(z, truncation_psi=0.7, domain=vectors[k])
        torch.testing.assert_close(mixed[k], alone, atol=1e-5, rtol=1e-5)  # float32 rounding of another batch
    # The base itself is the zero vector in a mixed batch.
    with_base = render_domains(G, torch.cat([torch.zeros(1, G.domain_size), vectors[:1]]), z, 0.7)
    torch.testing.assert_close(with_base[0], G(z, truncation_psi=0.7), atol=1e-5, rtol=1e-5)


def test_blend_parsing_and_vector_blends() -> None:
    assert parse_domains("a, 0.5*b+0.5*c") == [[(1.0, "a")], [(0.5, "b"), (0.5, "c")]]
    with pytest.raises(NadaError, match="bad blend"):
        parse_domains("0.5*+b")
    a, b = torch.ones(4), torch.zeros(4)
    assert torch.equal(blend_vectors([a, b], [0.25, 0.75]), torch.full((4,), 0.25))


# ---------------------------------------------------------------- domain files


def saved_base(tmp_path: Path, seed: int = 0, name: str = "base.pt") -> tuple[Generator, Path]:
    G = make_generator(seed)
    return G, save_checkpoint(tmp_path / name, G, {"base_model": "test"}, overwrite=True)


def test_domain_file_loads_onto_its_base(tmp_path: Path) -> None:
    G, base_path = saved_base(tmp_path)
    v = random_vector(G, 3)
    (tmp_path / "d").mkdir()
    path = save_domain(tmp_path / "d" / "sketch.pt", v, G, str(base_path), {"target": "sketch"})
    assert path.stat().st_size < 8 * 1024
    domain = read_domain(path)
    assert domain is not None and torch.equal(domain.vector, v) and domain.meta["target"] == "sketch"
    assert read_domain(base_path) is None  # a full checkpoint is no domain file
    z = latents(G)
    loaded = load_generator(path)
    assert isinstance(loaded, Generator)
    torch.testing.assert_close(loaded(z), G(z, domain=v), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(apply_domain(G, path)(z), loaded(z), atol=0, rtol=0)
    with pytest.raises(NadaError, match="already exists"):
        save_domain(path, v, G, str(base_path))


def test_domain_file_refuses_the_wrong_base(tmp_path: Path) -> None:
    G, base_path = saved_base(tmp_path)
    path = save_domain(tmp_path / "dom.pt", random_vector(G, 3), G, str(base_path))
    other = make_generator(seed=1)
    with pytest.raises(NadaError, match="trained on other base weights than the given base"):
        apply_domain(other, path)
    save_checkpoint(base_path, other, {"base_model": "test"}, overwrite=True)  # the base file was replaced
    with pytest.raises(NadaError) as err:
        load_generator(path)
    message = str(err.value)
    assert "trained on other base weights" in message and "\n" not in message
    base_path.unlink()
    with pytest.raises(NadaError, match="which is not on this machine"):
        load_generator(path)


def test_ffhq_1024_domain_file_fits_64_kb(tmp_path: Path) -> None:
    torch.manual_seed(0)
    G = Generator(1024)
    assert G.domain_size == 9088  # FFHQ 1024 config-f; 6,048 in the convs alone, HyperDomainNet's count
    meta = {
        "adapt_config": AdaptConfig(target="sketch", generator="ffhq").to_dict(),
        "trained_layers": [n for n, _ in G.domain_channels()],
    }
    path = save_domain(tmp_path / "ffhq-sketch.pt", 0.1 * torch.randn(G.domain_size), G, "ffhq", meta)
    assert path.stat().st_size <= 64 * 1024, path.stat().st_size


# ---------------------------------------------------------------- adaptation


def run_config(tmp_path: Path, base_path: Path, **kw) -> AdaptConfig:
    base = dict(
        source="photo",
        target="sketch",
        generator=str(base_path),
        templates="plain",
        layers="all",
        params="domain",
        iterations=4,
        batch_size=2,
        auto_batch=2,
        lr=0.05,
        out_dir=str(tmp_path / "run"),
        n_sample_images=3,
        sample_every=2,
        save_every=2,
        device="cpu",
        lambda_global=0.5,
    )
    base.update(kw)
    return AdaptConfig(**base)


def test_domain_run_trains_only_the_vector(tmp_path: Path, tiny) -> None:
    G, base_path = saved_base(tmp_path)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    cfg = run_config(tmp_path, base_path)
    adapted = adapt(cfg, progress=False, G_base=G, clip=tiny)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # the base is untouched
    paths = RunPaths(Path(cfg.out_dir))
    log = [json.loads(line) for line in paths.log.read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all("global" in r for r in log)
    domain = read_domain(paths.final)
    assert domain is not None and domain.meta["iterations"] == 4 and paths.final.stat().st_size < 16 * 1024
    assert float(domain.vector.abs().max()) > 0
    z = latents(G)
    torch.testing.assert_close(load_generator(paths.final)(z), adapted(z), atol=0, rtol=0)
    torch.testing.assert_close(adapted(z), G(z, domain=domain.vector), atol=2e-5, rtol=1e-5)
    assert read_domain(paths.checkpoint(2)) is not None


def test_domain_run_layer_selection_trains_only_selected_slices(tmp_path: Path, tiny) -> None:
    G, base_path = saved_base(tmp_path)
    cfg = run_config(tmp_path, base_path, layers="last:1", iterations=2, save_every=0, sample_every=0)
    adapt(cfg, progress=False, G_base=G, clip=tiny)
    vector = read_domain(RunPaths(Path(cfg.out_dir)).final).vector
    parts = dict(zip([n for n, _ in G.domain_channels()], vector.split([c for _, c in G.domain_channels()])))
    selected = {"convs.4", "convs.5", "to_rgbs.2"}
    assert all(bool(parts[n].any()) == (n in selected) for n in parts)


def test_domain_run_resume_is_bit_identical(tmp_path: Path, tiny) -> None:
    G, base_path = saved_base(tmp_path)
    kw = dict(layers="auto:2", select_every=2, iterations=5, save_every=2, sample_every=0)
    full = adapt(run_config(tmp_path / "a", base_path, **kw), progress=False, G_base=G, clip=tiny)
    cfg_b = run_config(tmp_path / "b", base_path, **kw)

    def interrupt(step: int, record: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(cfg_b, progress=False, G_base=G, clip=tiny, callback=interrupt)
    resumed = adapt(cfg_b, progress=False, G_base=G, clip=tiny, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(NadaError, match="different settings"):
        adapt(cfg_b.replace(params="weights", iterations=6), progress=False, G_base=G, clip=tiny, resume=True)


# ---------------------------------------------------------------- rows and blends in nada generate


def grid_tiles(path: Path, rows: int, cols: int, size: int = 32, pad: int = 2) -> torch.Tensor:
    """uint8 tiles [rows, cols, size, size, 3] of a grid written by nada.io.image_grid."""
    import numpy as np
    from PIL import Image

    a = torch.from_numpy(np.asarray(Image.open(path)).copy())
    return torch.stack(
        [
            torch.stack([a[pad + r * (size + pad) :][:size, pad + c * (size + pad) :][:, :size] for c in range(cols)])
            for r in range(rows)
        ]
    )


def test_generate_draws_one_row_per_domain_and_blend(tmp_path: Path, capsys) -> None:
    from nada.frontends.cli import main
    from nada.io import to_uint8_image, z_from_seeds

    G, base_path = saved_base(tmp_path)
    va, vb = random_vector(G, 11), random_vector(G, 12)
    a = save_domain(tmp_path / "a.pt", va, G, str(base_path))
    b = save_domain(tmp_path / "b.pt", vb, G, str(base_path))
    out = tmp_path / "rows.png"
    spec = f"{a},{b},0.5*{a}+0.5*{b}"
    assert (
        main(["generate", "--preset", spec, "--seeds", "0-2", "--out", str(out), "--compare", "--truncation", "0.7"])
        == 0
    )
    assert "rows:        base, " in capsys.readouterr().out
    tiles = grid_tiles(out, 4, 3)
    z = z_from_seeds([0, 1, 2], G.style_dim)
    for row, vector in enumerate([torch.zeros_like(va), va, vb, 0.5 * va + 0.5 * vb]):
        expected = to_uint8_image(G(z, truncation_psi=0.7, domain=vector).clamp(-1, 1))
        assert (tiles[row].int() - expected.int()).abs().max() <= 1, row  # one grey level of float rounding
    assert main(["generate", "--preset", spec, "--out", str(out)]) == 2  # never overwritten silently
    assert main(["generate", "--preset", spec, "--out-dir", str(tmp_path / "d")]) == 2


def test_blend_of_full_generators_interpolates_weights(tmp_path: Path) -> None:
    from nada.generator.domains import DomainRows

    G, base_path = saved_base(tmp_path)
    full = fold_domain(G, random_vector(G, 11))
    full_path = save_checkpoint(tmp_path / "full.pt", full, {"base_model": str(base_path)})
    dom = save_domain(tmp_path / "dom.pt", random_vector(G, 12), G, str(base_path))
    rows = DomainRows(f"{full_path},0.25*{full_path}+0.75*{dom}")
    assert not rows.shared  # a full generator among the terms: every row is a generator of its own
    blended = rows.generator(rows.entries[1]).state_dict()
    folded = fold_domain(G, read_domain(dom).vector).state_dict()
    for k, v in full.state_dict().items():
        torch.testing.assert_close(blended[k], 0.25 * v + 0.75 * folded[k])
    images = rows.render([0, 1], 0.7)
    assert images.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(images[0], full(z_seeds(G, [0, 1]), truncation_psi=0.7).clamp(-1, 1))


def z_seeds(G: Generator, seeds: list[int]) -> torch.Tensor:
    from nada.io import z_from_seeds

    return z_from_seeds(seeds, G.style_dim)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["grouped", "activations"])
def test_cuda_layouts_zero_vector_and_mixed_batch(layout: str) -> None:
    from nada.adaptation.loop import deterministic_kernels, fp32_precision

    G = make_generator().cuda()
    G.layout = layout
    z = latents(G, n=3).cuda()
    with fp32_precision(z.device, tf32=False):  # IEEE float32, so batches differ by rounding only
        # (1 + 0) scales every style exactly; with CUDA's free kernel choice two equal calls may still round apart.
        with deterministic_kernels(z.device, True):
            assert torch.equal(G(z, domain=torch.zeros(G.domain_size, device="cuda")), G(z))
        vectors = random_vector(G, 7, n=4).cuda()
        mixed = render_domains(G, vectors, z, batch_size=5)
        for k in range(4):
            torch.testing.assert_close(mixed[k], G(z, domain=vectors[k]), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # importing gradio takes tens of seconds on a loaded CPU
def test_web_generate_accepts_a_domain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, golden: Path) -> None:
    pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'nada[web]'")
    import numpy as np

    from nada.frontends.web import WebBackend
    from nada.io import to_uint8_image, z_from_seeds

    monkeypatch.setenv("NADA_OFFLINE", "1")
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    G, base_path = saved_base(tmp_path)
    v = random_vector(G, 3)
    (tmp_path / "sketch").mkdir()
    dom = save_domain(tmp_path / "sketch" / "generator.pt", v, G, str(base_path))
    backend = WebBackend(
        generator=str(base_path),
        clip=str(golden / "tiny_clip_openai.pt"),
        checkpoints=[str(dom)],
        device="cpu",
        work_dir=tmp_path / "work",
    )
    pairs, files = backend.generate(f"checkpoint:{dom}", seeds="0,1", count=2, truncation=0.7)
    assert len(pairs) == 2 and all(p.exists() for p in files)
    expected = to_uint8_image(G(z_from_seeds([0, 1], G.style_dim), truncation_psi=0.7, domain=v).clamp(-1, 1))
    for (image, caption), want in zip(pairs, expected):
        styled = np.asarray(image)[:, 32:].astype(int)  # the pair is base | adapted
        assert np.abs(styled - want.numpy().astype(int)).max() <= 1, caption


def test_packaged_domain_preset_loads_onto_the_toy_base() -> None:
    from nada.weights.presets import get_preset, load_preset, preset_file, preset_status

    p = get_preset("toy-watercolor-dv")
    if not preset_status(p).available:
        pytest.skip("the toy presets are not packaged in this installation")
    domain = read_domain(preset_file(p.name))
    assert domain is not None and domain.base_model == "toy" and preset_file(p.name).stat().st_size < 16 * 1024
    assert dict(p.options)["params"] == "domain" and domain.meta["adapt_config"]["params"] == "domain"
    G = load_preset(p.name)
    base = load_generator("toy")
    z = latents(base, n=2)
    torch.testing.assert_close(G(z), base(z, domain=domain.vector), atol=2e-5, rtol=1e-5)
    with torch.no_grad():
        assert float((G(z) - base(z)).abs().mean()) > 0.05  # the domain visibly changes the images
