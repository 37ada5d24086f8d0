"""Inversion into W+ on small random generators, and the perceptual/identity losses with stand-in weights."""

from __future__ import annotations

import pytest
import torch

from nada.errors import NadaError
from nada.generator.networks import Generator
from nada.photos.invert import (
    InvertConfig,
    ReconstructionLosses,
    build_losses,
    invert,
    loss_kind_for_base,
    lr_at,
    render_wplus,
)


def small_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(16, style_dim=16, n_mlp=1, channels={4: 16, 8: 16, 16: 16}).eval()
    G.compute_mean_latent(512)
    return G


def test_inversion_of_a_generated_image_reaches_low_mse():
    G = small_generator()
    with torch.no_grad():
        w = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(5)))
        target = G.synthesis(G.broadcast_w(w))
        start = G.synthesis(G.broadcast_w(G.mean_latent.expand(2, -1)))
    start_mse = (start - target).pow(2).mean(dim=(1, 2, 3))
    before = {k: v.clone() for k, v in G.state_dict().items()}
    config = InvertConfig(steps=60, lr=0.1, lambda_mse=1.0, lambda_lpips=0.0, lambda_id=0.0)
    result = invert(G, target, config, progress=False)
    assert result.wplus.shape == (2, G.n_latent, 16) and result.reconstruction.shape == (2, 3, 16, 16)
    for i in range(2):
        assert result.mse[i] < 0.15 * float(start_mse[i]), (result.mse, start_mse)
        assert result.mse[i] < 0.08
    assert result.perceptual is None
    # the history logs a falling loss, and the generator itself was not touched
    assert result.history[-1]["mse"] < result.history[0]["mse"]
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(p.requires_grad for p in G.parameters())
    # render_wplus with the base's noise redraws the reconstruction exactly
    again = render_wplus(G, result.wplus, noise=G.noise_buffers())
    assert torch.allclose(again, result.reconstruction, atol=1e-5)


def test_inversion_uses_the_perceptual_loss_and_reports_it():
    G = small_generator()
    target = torch.rand(1, 3, 16, 16) * 2 - 1

    class Half(torch.nn.Module):  # a stand-in perceptual distance: mean absolute difference
        def forward(self, x, y):
            return (x - y).abs().mean(dim=(1, 2, 3))

    losses = ReconstructionLosses(perceptual=Half(), perceptual_name="L1")
    result = invert(G, target, InvertConfig(steps=3, lambda_id=0.0), losses, progress=False)
    assert result.perceptual_name == "L1" and result.perceptual is not None
    assert result.perceptual[0] == pytest.approx(
        float((result.reconstruction - target).abs().mean()), rel=1e-4, abs=1e-4
    )
    assert "perceptual" in result.history[0]


def test_zero_steps_returns_the_mean_latent():
    G = small_generator()
    result = invert(G, torch.zeros(1, 3, 16, 16), InvertConfig(steps=0), progress=False)
    assert torch.allclose(result.wplus[0], G.mean_latent.expand(G.n_latent, -1))


def test_wrong_target_size_and_bad_config():
    G = small_generator()
    with pytest.raises(AssertionError, match="aligned images"):
        invert(G, torch.zeros(1, 3, 32, 32), InvertConfig(steps=1), progress=False)
    with pytest.raises(NadaError, match="negative"):
        InvertConfig(steps=-1)
    with pytest.raises(NadaError, match="every inversion loss weight is 0"):
        InvertConfig(lambda_mse=0, lambda_lpips=0, lambda_id=0)
    with pytest.raises(NadaError, match="learning rate"):
        InvertConfig(lr=0)


def test_lr_schedule_warms_up_and_ramps_down():
    c = InvertConfig(steps=100, lr=0.1)
    assert lr_at(0, c) == 0.0
    assert lr_at(50, c) == pytest.approx(0.1)
    assert 0 < lr_at(2, c) < lr_at(4, c) < 0.1
    assert lr_at(99, c) < 0.01


def test_render_wplus_refuses_codes_of_another_base():
    G = small_generator()
    with pytest.raises(AssertionError, match="another base"):
        render_wplus(G, torch.zeros(1, G.n_latent + 1, 16))


def test_loss_kind_for_base():
    # The toy profile (registered by its plugin) brings its own perceptual distance; ffhq's uses LPIPS and ArcFace.
    assert loss_kind_for_base("toy") == "profile"
    assert loss_kind_for_base("run/generator.pt", {"base_model": "toy"}) == "profile"
    assert loss_kind_for_base("ffhq") == "face" and loss_kind_for_base("unregistered.pt") == "face"


def test_missing_face_loss_weights_refuse_with_the_path(no_weights):
    with pytest.raises(NadaError) as e:
        build_losses(InvertConfig(), "face")
    msg = str(e.value)
    assert "--allow-missing-losses" in msg and "save it as" in msg and str(no_weights) in msg


def test_missing_losses_dropped_when_allowed(no_weights):
    losses = build_losses(InvertConfig(), "face", allow_missing=True)
    assert losses.perceptual is None and losses.identity is None
    assert len(losses.dropped) == 2
    assert losses.dropped[0].startswith("LPIPS") and losses.dropped[1].startswith("identity")
    assert "model_ir_se50.pth" in losses.dropped[1]


def test_weights_off_means_nothing_is_loaded(no_weights):
    losses = build_losses(InvertConfig(lambda_lpips=0, lambda_id=0), "face")
    assert losses.perceptual is None and losses.identity is None and losses.dropped == []


# ---------------------------------------------------------------- the loss networks with stand-in weights


def test_lpips_loads_weights_from_the_cache(no_weights):
    from nada.photos.perceptual import LPIPS, WEIGHTS, load_lpips

    torch.manual_seed(0)
    ref = LPIPS("alex")
    for lin in ref.lins:  # LPIPS's linear weights are non-negative
        lin.weight.data.abs_()
    backbone = no_weights / "weights" / "alexnet-imagenet" / WEIGHTS["alexnet-imagenet"].filename
    linear = no_weights / "weights" / "lpips-alex" / WEIGHTS["lpips-alex"].filename
    backbone.parent.mkdir(parents=True)
    linear.parent.mkdir(parents=True)
    # torchvision's layout (features.* plus a classifier that LPIPS ignores) and the LPIPS release's keys
    torch.save(
        {
            **{f"features.{k}": v for k, v in ref.features.state_dict().items()},
            "classifier.1.weight": torch.zeros(2, 2),
        },
        backbone,
    )
    torch.save({f"lin{k}.model.1.weight": lin.weight for k, lin in enumerate(ref.lins)}, linear)
    m = load_lpips("alex")
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    d = m(x, y)
    assert torch.allclose(d, ref(x, y)) and bool((d > 0).all())
    assert torch.allclose(m(x, x), torch.zeros(2))
    m.train()
    assert not m.training  # a metric never switches dropout on


@pytest.mark.filterwarnings("ignore::UserWarning")  # the reference package uses torchvision's deprecated 'pretrained'
def test_lpips_matches_the_reference_package():
    lpips = pytest.importorskip("lpips", reason="the reference lpips package is not installed")
    from nada.photos.perceptual import LPIPS, resolve_weights
    from nada.weights.safe_load import read_state_dict

    for net in ("vgg", "alex"):
        torch.manual_seed(0)
        ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()  # random backbone, released linear layers
        mine = LPIPS(net)
        mine.features.load_state_dict(
            {k.split(".", 2)[2]: v for k, v in ref.state_dict().items() if k.startswith("net.slice")}
        )
        lin = read_state_dict(resolve_weights(f"lpips-{net}"))
        mine.lins.load_state_dict({f"{k}.weight": lin[f"lin{k}.model.1.weight"] for k in range(5)})
        x, y = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
        with torch.no_grad():
            torch.testing.assert_close(mine(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-6)


def test_corrupt_weights_file_is_a_clear_error(no_weights):
    from nada.photos.perceptual import WEIGHTS, load_identity_loss

    path = no_weights / "weights" / "arcface-ir-se50" / WEIGHTS["arcface-ir-se50"].filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>Google Drive virus scan warning</html>")
    with pytest.raises(NadaError, match="truncated, corrupt or not a weights file"):
        load_identity_loss()


@pytest.mark.slow
def test_identity_loss_loads_the_ir_se50_layout(no_weights):
    from nada.photos.perceptual import IRSE50, WEIGHTS, load_identity_loss

    torch.manual_seed(0)
    net = IRSE50()
    sd = net.state_dict()
    assert len(sd) == 397 and sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert sd["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)  # squeeze-excitation with reduction 16
    path = no_weights / "weights" / "arcface-ir-se50" / WEIGHTS["arcface-ir-se50"].filename
    path.parent.mkdir(parents=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # DataParallel prefixes are unwrapped
    loss = load_identity_loss()
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    d = loss(x, y)
    assert d.shape == (2,) and bool((d >= 0).all()) and bool((d <= 2).all())
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-5)
    assert torch.allclose(loss.embed(x).norm(dim=1), torch.ones(2), atol=1e-5)


def _tiny_clip():
    import open_clip

    from nada.guidance.clip import ClipModel, ClipPreprocess

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(context_length=8, vocab_size=49408, width=16, heads=1, layers=1),
    )
    return ClipModel(model, open_clip.SimpleTokenizer(context_length=8), ClipPreprocess(size=(32, 32)), "tiny")


def test_clip_feature_distance():
    from nada.photos.perceptual import ClipFeatureDistance

    d = ClipFeatureDistance(_tiny_clip())
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    out = d(x, y)
    assert out.shape == (2,) and bool((out > 0).all())
    assert torch.allclose(d(y, y), torch.zeros(2), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # a slightly changed image is closer than an unrelated one
    near = d(y + 0.05 * torch.randn_like(y), y)
    assert bool((near < d(torch.rand_like(y) * 2 - 1, y)).all())


def test_toy_losses_use_the_toy_clip_without_flags(monkeypatch):
    import nada.toy.plugin as toy_plugin
    from nada.photos.perceptual import ClipFeatureDistance

    monkeypatch.setattr(toy_plugin, "load_toy_perceptual", lambda device="cpu": ClipFeatureDistance(_tiny_clip()))
    losses = build_losses(InvertConfig(), "profile", base="toy")
    assert isinstance(losses.perceptual, ClipFeatureDistance) and losses.perceptual_name == "toy CLIP features"
    assert losses.identity is None and losses.dropped == []  # ArcFace does not apply to toy faces
    with pytest.raises(NadaError, match="no profile with its own perceptual distance"):
        build_losses(InvertConfig(), "profile", base="ffhq")
