"""nada.guidance.clip, clip_specs and clip_weights: loading (OpenAI layout, config + weights, pretrained cache, errors),
preprocessing, gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import load_tiny_clip
from nada.errors import NadaError

TINY_CONFIG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def _write_config_pair(folder: Path, golden: Path, config_name: str, weights_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / config_name).write_text(json.dumps(TINY_CONFIG))
    torch.save(torch.load(golden / "tiny_clip_openai.pt", weights_only=True), folder / weights_name)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


# ---------------------------------------------------------------- preprocessing and features


def test_preprocess_matches_golden_both_antialias_settings(tiny, ref) -> None:
    src = ref["inputs"]["src_img"]
    assert torch.allclose(tiny.preprocess(src), ref["expected"]["preprocessed_src"], atol=1e-5)
    assert torch.allclose(
        tiny.preprocess(ref["inputs"]["target_img"]), ref["expected"]["preprocessed_target"], atol=1e-5
    )
    legacy = tiny.preprocess(src, antialias=False)
    assert torch.allclose(legacy, ref["legacy_no_antialias"]["preprocessed_src"], atol=1e-5)
    # The two settings really differ, so each comparison above tests its own path.
    assert (legacy - ref["expected"]["preprocessed_src"]).abs().max() > 1e-3


def test_model_level_antialias_option(golden: Path, ref) -> None:
    legacy_model = load_tiny_clip(str(golden / "tiny_clip_openai.pt"), antialias=False)
    out = legacy_model.preprocess(ref["inputs"]["src_img"])
    assert torch.allclose(out, ref["legacy_no_antialias"]["preprocessed_src"], atol=1e-5)


def test_preprocess_non_square_matches_torchvision(tiny) -> None:
    from torchvision import transforms as T

    img = torch.rand(2, 3, 80, 120, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tv = T.Compose(
        [
            T.Normalize(mean=[-1.0] * 3, std=[2.0] * 3),
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(224),
            T.Normalize(mean=tiny.preprocess_cfg.mean, std=tiny.preprocess_cfg.std),
        ]
    )
    out = tiny.preprocess(img)
    assert out.shape == (2, 3, 224, 224)
    assert torch.allclose(out, tv(img), atol=1e-5)


def test_features_and_tokens_match_golden(tiny, ref) -> None:
    from nada.guidance.templates import IMAGENET_TEMPLATES, compose

    exp = ref["expected"]
    assert torch.equal(tiny.tokenize(compose("photo", IMAGENET_TEMPLATES)), exp["tokens_source"])
    assert torch.allclose(_unit(tiny.encode_image(ref["inputs"]["src_img"])), exp["image_features_src"], atol=1e-5)
    assert torch.allclose(
        _unit(tiny.encode_text(compose("sketch", IMAGENET_TEMPLATES))), exp["text_features_target"], atol=1e-5
    )
    assert tiny.logit_scale.item() == pytest.approx(ref["constants"]["logit_scale_exp"], rel=1e-6)


@pytest.mark.parametrize("size, new", [((32, 32), (224, 224)), ((48, 64), (168, 224)), ((256, 256), (224, 224))])
@pytest.mark.parametrize("mode, antialias", [("bicubic", True), ("bicubic", False), ("bilinear", True)])
def test_resize_by_matmul_equals_interpolate(size, new, mode: str, antialias: bool) -> None:
    from nada.guidance.clip import resize_by_matmul

    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    a = torch.nn.functional.interpolate(x, size=new, mode=mode, align_corners=False, antialias=antialias)
    b = resize_by_matmul(x, new, mode, antialias)
    assert b.shape == a.shape and float((a - b).detach().abs().max()) < 1e-6
    weight = torch.rand_like(a)
    (ga,) = torch.autograd.grad((a * weight).sum(), x)
    (gb,) = torch.autograd.grad((b * weight).sum(), x)
    assert float((ga - gb).abs().max()) < 1e-5 * float(ga.abs().max())


def test_frozen_eval_and_gradients_reach_the_image(tiny, ref) -> None:
    assert not tiny.training and not tiny.model.training
    tiny.train()  # a parent calling .train() must not switch CLIP out of eval mode
    assert not tiny.training and not tiny.model.training
    assert all(not p.requires_grad for p in tiny.parameters())
    img = ref["inputs"]["src_img"].clone().requires_grad_(True)
    tiny.encode_image(img).square().sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())


def test_any_resolution_input(tiny) -> None:
    for size in (32, 224, 256):
        out = tiny.encode_image(torch.zeros(1, 3, size, size))
        assert out.shape == (1, 64)


def test_bf16_precision_close_to_fp32(golden: Path, tiny, ref) -> None:
    from nada.guidance.clip import load_clip

    low = load_clip(str(golden / "tiny_clip_openai.pt"), precision="bf16")
    a, b = tiny.encode_image(ref["inputs"]["src_img"]), low.encode_image(ref["inputs"]["src_img"])
    assert b.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99
    with pytest.raises(NadaError, match="precision"):
        load_clip(str(golden / "tiny_clip_openai.pt"), precision="int8")


def test_openai_layout_skips_the_random_init_and_equals_the_plain_build(golden: Path) -> None:
    """construct_then_load: the same tensors, mask and features as building then loading; fp16 files become fp32."""
    import open_clip

    from nada.guidance.clip_weights import build_openai_layout, causal_mask, construct_then_load, read_clip_weights

    sd = read_clip_weights(golden / "tiny_clip_openai.pt")
    plain = open_clip.CLIP(
        64,
        vision_cfg=open_clip.CLIPVisionCfg(**TINY_CONFIG["vision_cfg"]),
        text_cfg=open_clip.CLIPTextCfg(**TINY_CONFIG["text_cfg"]),
        quick_gelu=True,
    )
    plain.load_state_dict(sd, strict=True)
    fast = build_openai_layout({k: v.half() for k, v in sd.items()})  # OpenAI's release stores fp16
    plain.load_state_dict({k: v.half().float() for k, v in sd.items()})
    assert all(p.dtype == torch.float32 and not p.is_meta for p in fast.parameters())
    assert torch.equal(fast.attn_mask, plain.attn_mask) and torch.equal(causal_mask(5), plain.attn_mask[:5, :5])
    img = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fast.encode_image(img), plain.encode_image(img))
        tokens = open_clip.tokenize(["a photo", "a sketch"])
        assert torch.equal(fast.encode_text(tokens), plain.encode_text(tokens))

    class OtherBuffer(torch.nn.Linear):  # a non-persistent buffer of unknown meaning: the plain build
        def __init__(self) -> None:
            super().__init__(3, 2)
            self.register_buffer("scale", torch.full((2,), 7.0), persistent=False)

    other = construct_then_load(OtherBuffer, OtherBuffer().state_dict())
    assert torch.equal(other.scale, torch.full((2,), 7.0))
    with pytest.raises(RuntimeError):  # strict either way: a missing key is an error
        build_openai_layout({k: v for k, v in sd.items() if k != "ln_final.bias"})


# ---------------------------------------------------------------- other sources


def test_config_and_weights_folder(tmp_path: Path, golden: Path, tiny, ref) -> None:
    from nada.guidance.clip import load_clip
    from nada.guidance.clip_weights import load_clip_from_config

    _write_config_pair(tmp_path / "hf", golden, "open_clip_config.json", "open_clip_pytorch_model.bin")
    img = ref["inputs"]["target_img"]
    from_folder = load_clip(str(tmp_path / "hf"))
    assert torch.allclose(from_folder.encode_image(img), tiny.encode_image(img), atol=1e-6)
    _write_config_pair(tmp_path / "plain", golden, "clip_config.json", "clip.pt")
    direct = load_clip_from_config(tmp_path / "plain" / "clip_config.json", tmp_path / "plain" / "clip.pt")
    assert torch.allclose(direct.encode_text(["a sketch"]), tiny.encode_text(["a sketch"]), atol=1e-6)


def test_config_with_top_level_preprocessing(tmp_path: Path, golden: Path, tiny) -> None:
    from nada.guidance.clip_weights import load_clip_from_config, read_clip_config

    vision = {k: v for k, v in TINY_CONFIG["vision_cfg"].items() if k != "image_size"}
    cfg = {**TINY_CONFIG, "vision_cfg": vision, "image_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    model_cfg, pp_cfg = read_clip_config(tmp_path / "c.json")
    assert model_cfg["vision_cfg"]["image_size"] == 224 and "mean" not in model_cfg
    assert pp_cfg == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.save(torch.load(golden / "tiny_clip_openai.pt", weights_only=True), tmp_path / "w.pt")
    model = load_clip_from_config(tmp_path / "c.json", tmp_path / "w.pt")
    assert model.preprocess_cfg.mean == (0.5, 0.5, 0.5) and model.preprocess_cfg.std == (0.25, 0.25, 0.25)
    img = torch.zeros(1, 3, 64, 64)  # mid-grey: 0.5 after (x+1)/2, so 0 after this mean/std
    assert model.preprocess(img).abs().max() < 1e-5
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 64}))
    with pytest.raises(NadaError, match="vision_cfg"):
        load_clip_from_config(tmp_path / "bad.json", tmp_path / "w.pt")
    with pytest.raises(NadaError, match="not found"):
        load_clip_from_config(tmp_path / "c.json", tmp_path / "missing.pt")


def test_build_random_clip_is_seeded_and_leaves_rng_alone() -> None:
    from nada.guidance.clip import build_random_clip

    state = torch.random.get_rng_state()
    a, b = build_random_clip("open_clip:ViT-S-32", seed=3), build_random_clip("open_clip:ViT-S-32", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb = next(a.parameters()), next(b.parameters())
    assert torch.equal(pa, pb) and pa.abs().sum() > 0
    assert a.encode_image(torch.zeros(1, 3, 64, 64)).shape == (1, a.model.visual.output_dim)
    with pytest.raises(NadaError):
        build_random_clip("ViT-B/33")


def test_toy_name_resolves_package_assets(tmp_path: Path, golden: Path, monkeypatch, tiny) -> None:
    import nada.guidance.clip as clip
    import nada.toy.clips as toy_clips

    monkeypatch.setattr(toy_clips, "toy_clip_dir", lambda name="toy": tmp_path / name)
    with pytest.raises(NadaError, match="toy CLIP files are missing") as err:
        clip.load_clip("toy")
    assert str(tmp_path / "toy" / "clip_config.json") in str(err.value)
    _write_config_pair(tmp_path / "toy", golden, "clip_config.json", "clip.pt")
    toy = clip.load_clip("toy")
    assert toy.name == "toy"
    assert torch.allclose(toy.encode_text(["x"]), tiny.encode_text(["x"]), atol=1e-6)


@pytest.fixture
def registered_tiny(tmp_path: Path, monkeypatch) -> Path:
    """Register the tiny architecture with open_clip as 'nada-test-tiny' with one tag, 'v1'; returns the cache dir."""
    import huggingface_hub
    import open_clip
    import open_clip.pretrained

    cfg_path = tmp_path / "configs" / "nada-test-tiny.json"
    cfg_path.parent.mkdir()
    cfg_path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_path)
    tags = {
        "v1": {"hf_hub": "nobody/tiny/", "quick_gelu": True},
        "openai": {"hf_hub": "nobody/tiny/", "url": "https://example.invalid/abc/tiny-openai.pt", "quick_gelu": True},
    }
    monkeypatch.setattr(
        open_clip.pretrained,
        "get_pretrained_cfg",
        lambda model, tag: tags.get(tag, {}) if model == "nada-test-tiny" else {},
    )
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("NADA_CLIP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def test_pretrained_route_uses_hand_placed_file(registered_tiny: Path, golden: Path, tiny, ref) -> None:
    """An open_clip (model, tag) pair whose weights sit in clip_cache_dir() loads with no network at all."""
    from nada.guidance.clip import load_clip

    torch.save(torch.load(golden / "tiny_clip_openai.pt", weights_only=True), registered_tiny / "nada-test-tiny_v1.bin")
    model = load_clip("open_clip:nada-test-tiny/v1")
    img = ref["inputs"]["src_img"]
    assert torch.allclose(model.encode_image(img), tiny.encode_image(img), atol=1e-6)


def test_broken_hand_placed_file_is_reported(registered_tiny: Path) -> None:
    from nada.guidance.clip import load_clip

    bad = registered_tiny / "nada-test-tiny_v1.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(NadaError, match="download it again") as err:
        load_clip("open_clip:nada-test-tiny/v1")
    assert str(bad) in str(err.value)


def test_missing_pretrained_file_offline(registered_tiny: Path, monkeypatch) -> None:
    from nada.guidance.clip import load_clip

    monkeypatch.setenv("NADA_OFFLINE", "1")
    with pytest.raises(NadaError, match="nobody/tiny/resolve/main/open_clip_model.safetensors") as err:
        load_clip("open_clip:nada-test-tiny/v1")
    assert str(registered_tiny / "nada-test-tiny_v1.safetensors") in str(err.value)


def _torchscript_tiny(golden: Path, path: Path) -> Path:
    """Save the tiny CLIP as a TorchScript archive, the way OpenAI distributes its weights."""
    import warnings

    from nada.guidance.clip import load_clip

    model = load_clip(str(golden / "tiny_clip_openai.pt")).model
    model.register_buffer("input_resolution", torch.tensor(224))  # OpenAI's files carry it as a tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated, yet it is what OpenAI's files are
        traced = torch.jit.trace_module(model, inputs={"encode_text": (torch.zeros(1, 77, dtype=torch.long),)})
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def test_openai_torchscript_cache_file_loads_without_running_code(
    registered_tiny: Path, tmp_path: Path, golden: Path, monkeypatch, tiny, ref
) -> None:
    """OpenAI's own file in ~/.cache/clip (a TorchScript archive) is found offline and read as data only."""
    from nada.guidance.clip import load_clip

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NADA_OFFLINE", "1")
    _torchscript_tiny(golden, tmp_path / "home" / ".cache" / "clip" / "tiny-openai.pt")
    monkeypatch.setattr(torch.jit, "load", _no_code)
    model = load_clip("open_clip:nada-test-tiny/openai")
    img = ref["inputs"]["src_img"]
    assert torch.equal(model.encode_image(img), tiny.encode_image(img))


def test_malicious_torchscript_archive_is_refused(tmp_path: Path) -> None:
    import os
    import pickle
    import zipfile

    from nada.guidance.clip import load_clip

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/code/__torch__.py", "")
    with pytest.raises(NadaError, match="not allowed"):
        load_clip(str(path))
    assert not marker.exists()


def _no_code(*args, **kwargs):
    raise AssertionError("TorchScript code must never be loaded")


def _no_network(*args, **kwargs):
    raise AssertionError("the test must not reach the network")


def test_offline_error_names_file_and_place(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    from nada.guidance.clip import load_clip

    monkeypatch.setenv("NADA_OFFLINE", "1")
    monkeypatch.setenv("NADA_CLIP_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    with pytest.raises(NadaError) as err:
        load_clip("ViT-B/32")
    msg = str(err.value)
    assert str(tmp_path / "ViT-B-32-quickgelu_openai.safetensors") in msg
    assert (
        "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors" in msg
    )
    assert "offline" in msg


def test_hf_offline_variable_also_blocks_downloads(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    from nada.guidance.clip import load_clip

    monkeypatch.delenv("NADA_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NADA_CLIP_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    with pytest.raises(NadaError, match="RN50-quickgelu_openai"):
        load_clip("RN50")


def test_truncated_openai_file(tmp_path: Path, golden: Path) -> None:
    from nada.guidance.clip import load_clip

    cut = tmp_path / "cut.pt"
    cut.write_bytes((golden / "tiny_clip_openai.pt").read_bytes()[:100_000])
    with pytest.raises(NadaError, match="truncated"):
        load_clip(str(cut))


@pytest.mark.parametrize("name", ["ViT-B/33", "vit-b/32", "clip"])
def test_bad_name_lists_valid_names(name: str) -> None:
    from nada.guidance.clip import load_clip

    with pytest.raises(NadaError) as err:
        load_clip(name)
    msg = str(err.value)
    assert name in msg and "ViT-B/32" in msg and "RN50" in msg and "open_clip:MODEL/TAG" in msg and "'toy'" in msg


def test_bad_open_clip_names() -> None:
    from nada.guidance.clip import load_clip

    with pytest.raises(NadaError, match="laion2b_s34b_b79k"):
        load_clip("open_clip:ViT-B-32/no_such_tag")
    with pytest.raises(NadaError, match="unknown open_clip model"):
        load_clip("open_clip:NoSuchNet/openai")
    with pytest.raises(NadaError, match="MODEL/TAG"):
        load_clip("open_clip:ViT-B-32")
    with pytest.raises(NadaError, match="not found"):
        load_clip("./missing_clip.pt")


# ---------------------------------------------------------------- ensembles


def test_parse_clip_spec() -> None:
    from nada.guidance.clip import parse_clip_spec

    assert parse_clip_spec("ViT-B/32") == [("ViT-B/32", 1.0)]
    assert parse_clip_spec("ViT-B/32,ViT-B/16:0.5") == [("ViT-B/32", 1.0), ("ViT-B/16", 0.5)]
    assert parse_clip_spec(" ViT-B/32:1.0 , ViT-B/16:0.5 ") == [("ViT-B/32", 1.0), ("ViT-B/16", 0.5)]
    assert parse_clip_spec("open_clip:ViT-B-32/laion2b_s34b_b79k:2,RN50") == [
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", 2.0),
        ("RN50", 1.0),
    ]
    for bad in ("", " , ", "ViT-B/32:0", "ViT-B/32:-1", "ViT-B/32:nan", ":0.5", "RN50,RN50:2"):
        with pytest.raises(NadaError):
            parse_clip_spec(bad)


def test_load_clip_ensemble(golden: Path, ref) -> None:
    from nada.guidance.clip import ClipModel, load_clip_ensemble

    path = str(golden / "tiny_clip_openai.pt")
    ens = load_clip_ensemble(f"{path}:0.25", "cpu")
    assert len(ens) == 1 and isinstance(ens[0][0], ClipModel) and ens[0][1] == 0.25
    assert ens[0][0].device == torch.device("cpu")
    assert ens[0][0].encode_image(ref["inputs"]["src_img"]).shape == (4, 64)
