"""Generator tests: exact agreement with rosinality's outputs, the FFHQ state-dict layout, and behaviour."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nada.errors import NadaError
from nada.generator.networks import Blur, Generator, GeneratorConfig, ModulatedConv2d, StyledConv, ToRGB, Upsample

TOL = 1e-5
# The NCHW layouts run other convolution algorithms; their float32 rounding reaches 1.0e-5 on these images (|x| ~ 5).
LAYOUT_TOL = {"cpu": TOL, "grouped": 1.5e-5, "activations": 1.5e-5}


@functools.lru_cache(maxsize=1)
def _load_golden_a(path: str) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture
def gold_a(golden: Path) -> dict:
    return _load_golden_a(str(golden / "rosinality_A.pt"))


def _golden_generator(gold_a: dict, layout: str = "auto") -> Generator:
    c = gold_a["config"]
    G = Generator(
        c["size"],
        c["style_dim"],
        c["n_mlp"],
        c["channel_multiplier"],
        c["blur_kernel"],
        c["lr_mlp"],
        channels=c["channels"],
    )
    G.load_state_dict(gold_a["ckpt"]["g_ema"], strict=True)
    G.mean_latent.copy_(gold_a["ckpt"]["latent_avg"])
    G.layout = layout
    return G.eval()


# Every activation layout is checked against the reference's images on the CPU ("auto" is "cpu" there).
@pytest.fixture(params=["cpu", "grouped", "activations"])
def G_a(gold_a: dict, request: pytest.FixtureRequest) -> Generator:
    return _golden_generator(gold_a, request.param)


def tiny(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(32, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"{tuple(a.shape)} vs {tuple(b.shape)}"
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- golden: rosinality_A


def test_golden_layout_and_sizes(G_a: Generator, gold_a: dict) -> None:
    sd = G_a.state_dict()
    ref = gold_a["ckpt"]["g_ema"]
    assert list(sd) == list(ref)
    assert all(sd[k].shape == ref[k].shape for k in ref)
    assert G_a.n_latent == gold_a["n_latent"] == 10
    assert G_a.num_layers == gold_a["config"]["num_layers"]
    assert "mean_latent" not in sd


@torch.no_grad()
def test_golden_mapping_and_mean_latent(G_a: Generator, gold_a: dict) -> None:
    assert maxdiff(G_a.mapping(gold_a["z"]), gold_a["w"]) < TOL
    assert maxdiff(G_a.mapping(gold_a["latent_avg_z"]).mean(0), gold_a["ckpt"]["latent_avg"]) < TOL
    assert maxdiff(G_a.broadcast_w(G_a.mapping(gold_a["z"])), gold_a["latent"]) < TOL


@torch.no_grad()
def test_golden_images(G_a: Generator, gold_a: dict) -> None:
    z, noises = gold_a["z"], gold_a["noises"]
    assert maxdiff(G_a(z, noise=noises), gold_a["img"]) < LAYOUT_TOL[G_a.layout]
    assert maxdiff(G_a(z, truncation_psi=0.7, noise=noises), gold_a["img_trunc"]) < LAYOUT_TOL[G_a.layout]
    assert maxdiff(G_a.synthesis(gold_a["wplus"], noise=noises), gold_a["img_wplus"]) < LAYOUT_TOL[G_a.layout]
    assert maxdiff(G_a(z, noise_mode="const"), gold_a["img_buffer_noise"]) < LAYOUT_TOL[G_a.layout]
    ws = G_a.mix_ws(G_a.mapping(z), G_a.mapping(gold_a["z2"]), gold_a["mix_inject_index"])
    assert maxdiff(G_a.synthesis(ws, noise=noises), gold_a["img_mix"]) < LAYOUT_TOL[G_a.layout]
    # The images are far from trivial, so the tolerance above is meaningful.
    assert gold_a["img"].std() > 0.1


@torch.no_grad()
def test_golden_batch_of_one_matches(G_a: Generator, gold_a: dict) -> None:
    # A batch of one takes a different code path (no grouped convolution).
    for i in (0, 3):
        img = G_a(gold_a["z"][i : i + 1], noise=gold_a["noises"])
        assert maxdiff(img, gold_a["img"][i : i + 1]) < LAYOUT_TOL[G_a.layout]


def test_golden_1024_schema(golden: Path) -> None:
    schema = json.loads((golden / "rosinality_1024_schema.json").read_text())
    c = schema["constructor"]
    with torch.device("meta"):
        G = Generator(
            c["size"],
            c["style_dim"],
            c["n_mlp"],
            channel_multiplier=c["channel_multiplier"],
            blur_kernel=c["blur_kernel"],
            lr_mlp=c["lr_mlp"],
        )
    sd = G.state_dict()
    assert [e["key"] for e in schema["state_dict"]] == list(sd)
    params = dict(G.named_parameters())
    for e in schema["state_dict"]:
        t = sd[e["key"]]
        assert list(t.shape) == e["shape"], e["key"]
        assert str(t.dtype).removeprefix("torch.") == e["dtype"], e["key"]
        assert (e["key"] in params) == (e["kind"] == "parameter"), e["key"]
    assert len(sd) == schema["num_state_dict_entries"] == 171
    assert len(params) == schema["num_parameter_tensors"]
    assert sum(p.numel() for p in G.parameters()) == schema["num_parameters"] == 30_370_060
    assert sum(b.numel() for k, b in sd.items() if k not in params) == schema["num_buffer_elements"]
    assert G.n_latent == schema["n_latent"] == 18
    assert G.num_layers == schema["num_layers"]
    assert G.channels == {int(k): v for k, v in schema["channels"].items()}


# ---------------------------------------------------------------- layer table


def test_layer_table_covers_every_layer_once() -> None:
    G = tiny()
    table = G.layer_table()
    names = [info.name for info in table]
    assert len(names) == len(set(names))
    modulated = {name.removesuffix(".conv") for name, m in G.named_modules() if isinstance(m, ModulatedConv2d)}
    assert set(names) == modulated
    assert [i.kind for i in table].count("conv") == G.num_layers
    sizes: dict[str, int] = {}
    hooks = [
        G.get_submodule(i.name).register_forward_hook(lambda m, inp, out, n=i.name: sizes.__setitem__(n, out.shape[-1]))
        for i in table
    ]
    with torch.no_grad():
        G(torch.randn(1, G.style_dim))
    for h in hooks:
        h.remove()
    assert sizes == {i.name: i.resolution for i in table}
    assert {i.kind for i in table if i.name.startswith(("to_rgb", "to_rgbs"))} == {"to_rgb"}
    assert sorted({i.wplus_index for i in table}) == list(range(G.n_latent))


@torch.no_grad()
def test_layer_table_wplus_index_is_the_driving_row() -> None:
    G = tiny()
    table = G.layer_table()
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        G.get_submodule(info.name).conv.modulation.register_forward_hook(
            lambda m, inp, out, name=info.name: seen.__setitem__(name, inp[0].clone())
        )
        for info in table
    ]
    ws = torch.randn(2, G.n_latent, G.style_dim)
    G.synthesis(ws)
    base = dict(seen)
    for row in range(G.n_latent):
        ws2 = ws.clone()
        ws2[:, row] += 1.0
        G.synthesis(ws2)
        changed = {name for name in base if not torch.equal(base[name], seen[name])}
        assert changed == {i.name for i in table if i.wplus_index == row}, row
    for h in hooks:
        h.remove()


# ---------------------------------------------------------------- behaviour


def test_shape_checks() -> None:
    G = tiny()
    with pytest.raises(AssertionError):
        G.mapping(torch.randn(2, G.style_dim + 1))
    with pytest.raises(AssertionError):
        G(torch.randn(G.style_dim))
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn(2, G.n_latent - 1, G.style_dim))
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn(2, G.n_latent, G.style_dim), noise=G.noise_buffers()[:-1])
    bad = [torch.zeros(1, 1, 3, 3)] * G.num_layers
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn(2, G.n_latent, G.style_dim), noise=bad)
    with pytest.raises(NadaError, match="noise_mode"):
        G.synthesis(torch.randn(2, G.n_latent, G.style_dim), noise_mode="fixed")


@torch.no_grad()
def test_noise_modes() -> None:
    G = tiny()
    ws = G.broadcast_w(G.mapping(torch.randn(2, G.style_dim)))
    # Non-zero noise strengths so that every mode shows.
    for name, p in G.named_parameters():
        if name.endswith("noise.weight"):
            p.fill_(0.5)
    const = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const, G.synthesis(ws, noise=G.noise_buffers()))
    zeros = [torch.zeros_like(b) for b in G.noise_buffers()]
    none = G.synthesis(ws, noise_mode="none")
    assert maxdiff(none, G.synthesis(ws, noise=zeros)) < 1e-6
    assert maxdiff(none, const) > 1e-3
    torch.manual_seed(5)
    r1 = G.synthesis(ws, noise_mode="random")
    r2 = G.synthesis(ws, noise_mode="random")
    torch.manual_seed(5)
    r1_again = G.synthesis(ws, noise_mode="random")
    assert maxdiff(r1, r2) > 1e-3
    assert torch.equal(r1, r1_again)
    # Random noise differs between samples of a batch: same ws rows give different images.
    same = G.synthesis(ws[:1].expand(2, -1, -1).contiguous(), noise_mode="random")
    assert maxdiff(same[0], same[1]) > 1e-3


@torch.no_grad()
def test_cpu_determinism_and_batch_independence() -> None:
    G = tiny()
    z = torch.randn(3, G.style_dim)
    a, b = G(z), G(z)
    assert torch.equal(a, b)
    assert a.shape == (3, 3, 32, 32)
    assert maxdiff(G(z[1:2]), a[1:2]) < TOL
    assert torch.equal(tiny(0).state_dict()["convs.0.conv.weight"], G.state_dict()["convs.0.conv.weight"])


def test_backward_reaches_every_synthesis_parameter() -> None:
    G = tiny()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    G(torch.randn(2, G.style_dim)).square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_truncation_needs_mean_latent() -> None:
    G = tiny()
    z = torch.randn(2, G.style_dim)
    with pytest.raises(NadaError, match="mean latent"):
        G(z, truncation_psi=0.5)
    m1 = G.compute_mean_latent(n=256, seed=3).clone()
    assert torch.equal(m1, G.compute_mean_latent(n=256, seed=3))
    assert not torch.equal(m1, G.compute_mean_latent(n=256, seed=4))
    with torch.no_grad():
        w = G.mapping(z)
        assert maxdiff(G.truncate(w, 0.0), G.mean_latent.expand_as(w)) == 0
        assert torch.equal(G(z, truncation_psi=1.0), G(z))


def test_mix_ws() -> None:
    G = tiny()
    w1, w2 = torch.randn(2, G.style_dim), torch.randn(2, G.style_dim)
    ws = G.mix_ws(w1, w2, 3)
    assert ws.shape == (2, G.n_latent, G.style_dim)
    assert torch.equal(ws[:, 2], w1) and torch.equal(ws[:, 3], w2) and torch.equal(ws[:, -1], w2)
    with pytest.raises(AssertionError):
        G.mix_ws(w1, w2, G.n_latent + 1)


def test_config_round_trip() -> None:
    G = tiny()
    cfg = G.config
    assert isinstance(cfg, GeneratorConfig)
    d = cfg.to_dict()
    assert GeneratorConfig.from_dict(d) == cfg
    assert GeneratorConfig.from_dict(json.loads(json.dumps(d))) == cfg  # JSON turns resolutions into strings
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.size = 64  # type: ignore[misc]
    G2 = Generator.from_config(cfg)
    assert {k: v.shape for k, v in G2.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}
    assert Generator.from_config(GeneratorConfig(64, style_dim=8, n_mlp=1, channel_multiplier=1)).channels[64] == 256


def test_config_errors() -> None:
    with pytest.raises(NadaError, match="power of two"):
        GeneratorConfig(48)
    with pytest.raises(NadaError, match="lacks resolutions"):
        GeneratorConfig(32, channels={4: 8, 8: 8, 16: 8})
    with pytest.raises(NadaError, match="blur kernel"):
        GeneratorConfig(32, blur_kernel=(1, 2, 1))
    with pytest.raises(NadaError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"size": 32, "channel_divisor": 8})


# ---------------------------------------------------------------- fast ops == plain formulas, values and gradients


def upfirdn_plain(x: torch.Tensor, k: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion up-sampling, zero padding, true convolution with k; [N, C, H, W]."""
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, [pad[0], pad[1], pad[0], pad[1]])
    out = F.conv2d(u.reshape(n * c, 1, *u.shape[2:]), k.flip([0, 1]).to(x.dtype)[None, None])
    return out.view(n, c, *out.shape[2:])


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3), (1, 4, 2, 7, 3, 1)])
def test_fir_filters_match_upfirdn(taps: tuple[int, ...]) -> None:
    # Asymmetric taps catch a flipped kernel; six taps check the padding formulas.
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    up = Upsample(taps).double()
    p = len(taps) - 2
    assert maxdiff(up(x), upfirdn_plain(x, up.kernel, 2, ((p + 1) // 2 + 1, p // 2))) < 1e-12
    blur = Blur(taps, pad=(2, 1), upsample_factor=2).double()
    assert maxdiff(blur(x), upfirdn_plain(x, blur.kernel, 1, (2, 1))) < 1e-12


def modconv_plain(m: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """rosinality's modulated conv written out: grouped conv over the batch, transposed conv then blur."""
    n, c, h, w = x.shape
    s = F.linear(style, m.modulation.weight * m.modulation.scale, m.modulation.bias * m.modulation.lr_mul)
    weight = m.scale * m.weight * s.view(n, 1, c, 1, 1)
    if m.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(n, -1, 1, 1, 1)
    o, k = m.out_channel, m.kernel_size
    if m.upsample:
        wt = weight.transpose(1, 2).reshape(n * c, o, k, k)
        out = F.conv_transpose2d(x.reshape(1, n * c, h, w), wt, stride=2, groups=n)
        return upfirdn_plain(out.view(n, o, *out.shape[2:]), m.blur.kernel, 1, m.blur.pad)
    out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(n * o, c, k, k), padding=k // 2, groups=n)
    return out.view(n, o, h, w)


def styled_conv_plain(layer: StyledConv, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    out = modconv_plain(layer.conv, x, style) + layer.noise.weight * noise
    return F.leaky_relu(out + layer.activate.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


def to_rgb_plain(layer: ToRGB, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return modconv_plain(layer.conv, x, style) + layer.bias + upfirdn_plain(skip, layer.upsample.kernel, 2, (2, 1))


def _randomise(module: torch.nn.Module) -> None:
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


# Input side 8 takes the per-sample-weight path (6*3*3 <= 8*8), side 2 the activation-scaling path.
@pytest.mark.parametrize("side", [8, 2])
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_styled_conv_matches_plain_formulas_with_gradients(side: int, upsample: bool, channels_last: bool) -> None:
    layer = StyledConv(6, 5, 3, 8, upsample=upsample).double()
    _randomise(layer)
    x = torch.randn(3, 6, side, side, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    style = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    r = 2 * side if upsample else side
    noise = torch.randn(3, 1, r, r, dtype=torch.float64)
    outs, grads = [], []
    for fn in (layer, lambda a, b, c: styled_conv_plain(layer, a, b, c)):
        layer.zero_grad()
        out = fn(x, style, noise)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad.clone(), style.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
        x.grad = style.grad = None
    assert outs[0].shape == (3, 5, r, r)
    assert maxdiff(outs[0], outs[1]) < 1e-12
    for g_fast, g_plain in zip(*grads):
        assert maxdiff(g_fast, g_plain) < 1e-11


@pytest.mark.parametrize("side", [8, 2])
def test_to_rgb_matches_plain_formulas_with_gradients(side: int) -> None:
    layer = ToRGB(6, 8).double()
    _randomise(layer)
    x = torch.randn(2, 6, side, side, dtype=torch.float64, requires_grad=True)
    style = torch.randn(2, 8, dtype=torch.float64)
    skip = torch.randn(2, 3, side // 2, side // 2, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for fn in (layer, lambda a, b, c: to_rgb_plain(layer, a, b, c)):
        layer.zero_grad()
        out = fn(x, style, skip)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad.clone(), skip.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
        x.grad = skip.grad = None
    assert maxdiff(outs[0], outs[1]) < 1e-12
    for g_fast, g_plain in zip(*grads):
        assert maxdiff(g_fast, g_plain) < 1e-11


# ---------------------------------------------------------------- layouts and precision


def test_layout_is_chosen_by_device_and_checked() -> None:
    from nada.generator.networks import resolve_layout

    assert resolve_layout("auto", torch.device("cpu")) == "cpu"
    assert resolve_layout("auto", torch.device("cuda")) == "grouped"
    assert resolve_layout("activations", torch.device("cuda")) == "activations"
    G = tiny()
    G.layout = "grouped"
    assert {m.layout for m in G.modules() if isinstance(m, ModulatedConv2d)} == {"grouped"}
    with pytest.raises(NadaError, match="unknown generator layout"):
        G.layout = "nhwc"


@pytest.mark.parametrize("layout", ["grouped", "activations"])
def test_layouts_agree_with_cpu_layout_in_gradients(layout: str) -> None:
    """Forward and backward of a tiny generator in double precision: every layout gives the same numbers."""
    G = tiny().double()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    ws = torch.randn(3, G.n_latent, G.style_dim, dtype=torch.float64)
    results = []
    for lay in ("cpu", layout):
        G.layout = lay
        G.zero_grad()
        w = ws.clone().requires_grad_(True)
        img = G.synthesis(w, noise_mode="const")
        (img * torch.linspace(-1, 1, img.numel(), dtype=torch.float64).view_as(img)).sum().backward()
        results.append([img.detach(), w.grad] + [p.grad for p in G.parameters() if p.grad is not None])
    assert len(results[0]) == len(results[1]) > 20
    for a, b in zip(*results):
        assert maxdiff(a, b) < 1e-10


@torch.no_grad()
def test_bf16_weights_stay_within_two_levels_of_fp32(gold_a: dict) -> None:
    """Native bf16 weights on the golden checkpoint: mean |difference| under 2 of 255 levels, images close to fp32."""
    from nada.io import to_uint8_image

    G = _golden_generator(gold_a)
    z, noises = gold_a["z"], gold_a["noises"]
    ref = G(z, truncation_psi=0.7, noise=noises)
    G.set_precision("bf16")
    assert G.dtype == torch.bfloat16 and G.mean_latent.dtype == torch.bfloat16
    img = G(z, truncation_psi=0.7, noise=noises)
    assert img.dtype == torch.bfloat16
    levels = (to_uint8_image(img.float().clamp(-1, 1)).float() - to_uint8_image(ref.clamp(-1, 1)).float()).abs()
    assert levels.mean() < 2.0
    assert levels.mean() > 0  # bf16 really ran: its rounding shows
    with pytest.raises(NadaError, match="unknown precision"):
        G.set_precision("fp8")


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_layouts_match_the_golden_images(gold_a: dict) -> None:
    """On CUDA "auto" is the grouped layout; every layout reproduces the reference images (IEEE float32)."""
    from nada.adaptation.loop import fp32_precision

    z, noises = gold_a["z"].cuda(), [n.cuda() for n in gold_a["noises"]]
    with fp32_precision(torch.device("cuda"), tf32=False):
        for layout in ("auto", "grouped", "activations", "cpu"):
            G = _golden_generator(gold_a, layout).cuda()
            assert maxdiff(G(z, noise=noises).cpu(), gold_a["img"]) < 1e-4, layout


@pytest.mark.gpu
def test_cuda_layouts_agree_in_gradients(gold_a: dict) -> None:
    from nada.adaptation.loop import fp32_precision

    grads = {}
    with fp32_precision(torch.device("cuda"), tf32=False):
        for layout in ("grouped", "activations", "cpu"):
            G = _golden_generator(gold_a, layout).cuda()
            ws = gold_a["wplus"].cuda().requires_grad_(True)
            G.synthesis(ws, noise=[n.cuda() for n in gold_a["noises"]]).square().mean().backward()
            grads[layout] = ws.grad.cpu()
    scale = grads["cpu"].abs().max()
    assert scale > 0
    for layout in ("grouped", "activations"):
        assert maxdiff(grads[layout], grads["cpu"]) < 1e-4 * scale, layout


@pytest.mark.gpu
def test_tf32_switch_sets_and_restores_cuda_precision() -> None:
    from nada.adaptation.loop import fp32_precision

    mm = torch.backends.cuda.matmul
    before = mm.fp32_precision
    with fp32_precision(torch.device("cuda"), tf32=True):
        assert mm.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    with fp32_precision(torch.device("cuda"), tf32=False):
        assert mm.fp32_precision == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert mm.fp32_precision == before
