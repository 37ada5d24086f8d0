"""Layer-freezing strategies: parsing, counts, the true W+ -> layer mapping, and purity of selection."""

from __future__ import annotations

import pytest
import torch

from nada.adaptation.layers import (
    AdaptiveWPlus,
    AllLayers,
    GradNorm,
    LastBlocks,
    NamedLayers,
    SelectionContext,
    layer_names,
    layers_for_wplus,
    parse_layers,
    set_trainable,
    synthesis_blocks,
)
from nada.errors import NadaError
from nada.generator.networks import Generator

CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


def tiny_generator(seed: int = 0) -> Generator:
    """A 32x32 generator (n_latent 8, 11 synthesis layers) with seeded random weights."""
    torch.manual_seed(seed)
    G = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS).eval().requires_grad_(False)
    with torch.no_grad():  # perturb biases and noise strengths too, so nothing is trivially zero
        for p in G.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return G


def context(G: Generator, seed: int = 0, loss=None, batch: int = 4) -> SelectionContext:
    """Latents from a seeded generator through G's mapping; by default a simple image loss."""
    gen = torch.Generator().manual_seed(seed)

    def sample_w(n: int) -> torch.Tensor:
        with torch.no_grad():
            return G.mapping(torch.randn(n, G.style_dim, generator=gen))

    def default_loss(img: torch.Tensor) -> torch.Tensor:
        return (img - 0.3).pow(2).mean()

    return SelectionContext(sample_w=sample_w, image_loss=loss or default_loss, batch_size=batch)


def snapshot(G: Generator) -> tuple[dict, dict, dict]:
    """Weights, requires_grad flags and gradients of every parameter, copied."""
    weights = {k: v.detach().clone() for k, v in G.state_dict().items()}
    flags = {k: p.requires_grad for k, p in G.named_parameters()}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in G.named_parameters()}
    return weights, flags, grads


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "spec, cls, k",
    [
        ("all", AllLayers, None),
        ("last:2", LastBlocks, 2),
        ("auto:3", AdaptiveWPlus, 3),
        ("AUTO:2:4", AdaptiveWPlus, 2),
        ("grad:4", GradNorm, 4),
        ("convs.0, to_rgbs.1", NamedLayers, None),
    ],
)
def test_parse_layers(spec: str, cls: type, k: int | None) -> None:
    sel = parse_layers(spec)
    assert isinstance(sel, cls)
    if k is not None:
        assert sel.k == k
    if spec == "AUTO:2:4":
        assert sel.iters == 4 and sel.spec == "auto:2:4"


@pytest.mark.parametrize(
    "spec", ["", "auto", "auto:0", "auto:-1", "grad:x", "last:2:3", "all:3", "fancy:2", "convs.x", "style.1"]
)
def test_parse_layers_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(NadaError, match="layers spec"):
        parse_layers(spec)


# ---------------------------------------------------------------- static strategies


def test_blocks_and_static_strategies() -> None:
    G = tiny_generator()
    names = layer_names(G)
    assert len(names) == 11 and names[:2] == ["conv1", "to_rgb1"]
    assert synthesis_blocks(G) == [
        ["conv1", "to_rgb1"],
        ["convs.0", "convs.1", "to_rgbs.0"],
        ["convs.2", "convs.3", "to_rgbs.1"],
        ["convs.4", "convs.5", "to_rgbs.2"],
    ]
    assert parse_layers("all").select(G) == names
    assert parse_layers("last:1").select(G) == ["convs.4", "convs.5", "to_rgbs.2"]
    assert parse_layers("last:4").select(G) == names
    assert parse_layers("to_rgbs.2,conv1").select(G) == ["conv1", "to_rgbs.2"]  # table order
    with pytest.raises(NadaError, match="K <= 4"):
        parse_layers("last:5").validate(G)
    with pytest.raises(NadaError, match="do not exist"):
        parse_layers("convs.9").validate(G)


def test_k_larger_than_available_is_refused() -> None:
    G = tiny_generator()
    with pytest.raises(NadaError, match="K <= 8"):
        parse_layers("auto:9").validate(G)
    with pytest.raises(NadaError, match="K <= 11"):
        parse_layers("grad:12").validate(G)
    parse_layers("auto:8").validate(G)
    parse_layers("grad:11").validate(G)


def test_layers_for_wplus_is_the_true_mapping() -> None:
    G = tiny_generator()
    assert layers_for_wplus(G, [0]) == ["conv1"]
    assert layers_for_wplus(G, [1]) == ["to_rgb1", "convs.0"]
    assert layers_for_wplus(G, [2]) == ["convs.1"]
    assert layers_for_wplus(G, [3]) == ["to_rgbs.0", "convs.2"]
    assert layers_for_wplus(G, [7]) == ["to_rgbs.2"]
    every = layers_for_wplus(G, list(range(G.n_latent)))
    assert every == layer_names(G)  # each layer is driven by exactly one row


def test_set_trainable_touches_only_named_layers() -> None:
    G = tiny_generator()
    set_trainable(G, ["convs.2", "to_rgbs.0"])
    trainable = {k for k, p in G.named_parameters() if p.requires_grad}
    assert trainable and all(k.startswith(("convs.2.", "to_rgbs.0.")) for k in trainable)
    assert {k for k in trainable if k.startswith("convs.2.")} == {
        "convs.2." + n for n, _ in G.convs[2].named_parameters()
    }
    with pytest.raises(NadaError, match="unknown layer"):
        set_trainable(G, ["style.1"])


# ---------------------------------------------------------------- data-driven strategies


def isolate_row(G: Generator, row: int) -> None:
    """Zero the style weights of every layer not driven by `row`: only that row can change the image."""
    with torch.no_grad():
        for info in G.layer_table():
            if info.wplus_index != row:
                G.get_submodule(info.name).conv.modulation.weight.zero_()


@pytest.mark.parametrize("row", [0, 1, 3, 5, 7])
def test_auto_selects_layers_the_moving_row_drives(row: int) -> None:
    G = tiny_generator()
    isolate_row(G, row)
    sel = parse_layers("auto:1")
    scores = sel.row_scores(G, context(G))
    assert scores[row] > 0 and int(torch.count_nonzero(scores)) == 1  # only that row moves
    chosen = sel.select(G, context(G))
    assert chosen == layers_for_wplus(G, [row])
    if row == 3:
        # The official code would train convs[1] (row i -> convs[i-2]), a layer row 3 does not drive.
        assert chosen == ["to_rgbs.0", "convs.2"] and "convs.1" not in chosen


def test_auto_count_and_iterations() -> None:
    G = tiny_generator()
    for k in (1, 3, 8):
        chosen = parse_layers(f"auto:{k}:2").select(G, context(G))
        rows = {info.wplus_index for info in G.layer_table() if info.name in chosen}
        assert len(rows) == k
        assert chosen == layers_for_wplus(G, sorted(rows))
    assert parse_layers("auto:8").select(G, context(G)) == layer_names(G)


def test_grad_selects_top_k_gradient_norms() -> None:
    G = tiny_generator()
    # Reference: one plain backward with every synthesis layer trainable, norms read from .grad.
    H = tiny_generator()
    set_trainable(H, layer_names(H))
    ctx = context(H, seed=3)
    w = ctx.sample_w(ctx.batch_size)
    ctx.image_loss(H.synthesis(H.broadcast_w(w), noise_mode="const")).backward()
    norms = {
        n: torch.cat([p.grad.flatten() for p in H.get_submodule(n).parameters()]).norm().item() for n in layer_names(H)
    }
    top4 = sorted(norms, key=lambda n: -norms[n])[:4]
    chosen = parse_layers("grad:4").select(G, context(G, seed=3))
    assert len(chosen) == 4 and set(chosen) == set(top4)
    assert chosen == [n for n in layer_names(G) if n in chosen]


@pytest.mark.parametrize("spec", ["all", "last:2", "auto:3", "auto:2:3", "grad:3", "conv1,convs.1"])
def test_selection_is_pure(spec: str) -> None:
    G = tiny_generator()
    set_trainable(G, ["convs.1"])  # a state left by a previous iteration, which must survive
    G.convs[1].conv.weight.grad = torch.ones_like(G.convs[1].conv.weight)
    before = snapshot(G)
    chosen = parse_layers(spec).select(G, context(G))
    assert chosen and set(chosen) <= set(layer_names(G))
    after = snapshot(G)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before[2].values(), after[2].values()))


def test_selection_is_deterministic_for_a_seed() -> None:
    G = tiny_generator()
    for spec in ("auto:3", "grad:3"):
        assert parse_layers(spec).select(G, context(G, seed=7)) == parse_layers(spec).select(G, context(G, seed=7))


def test_auto_with_tiny_clip_global_loss(golden) -> None:
    from nada.guidance.clip import load_clip

    clip = load_clip(str(golden / "tiny_clip_openai.pt"))
    G = tiny_generator()
    with torch.no_grad():
        text = clip.encode_text(["sketch"])
    text = text / text.norm(dim=-1, keepdim=True)

    def global_loss(img: torch.Tensor) -> torch.Tensor:
        f = clip.encode_image(img)
        return (1 - (f / f.norm(dim=-1, keepdim=True)) @ text.T).mean()

    ctx = context(G, loss=global_loss, batch=2)
    scores = parse_layers("auto:2").row_scores(G, ctx)
    assert scores.shape == (G.n_latent,) and bool((scores > 0).all())
    chosen = parse_layers("auto:2").select(G, context(G, loss=global_loss, batch=2))
    assert chosen == layers_for_wplus(G, torch.argsort(scores, descending=True)[:2].tolist())


# ---------------------------------------------------------------- the official selection, replayable


def seeded_noise(G: Generator, n: int, seed: int) -> list[torch.Tensor]:
    """Per-layer noise [n, 1, r, r], layer i from seed + i."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(G.noise_buffers()))]
    return [torch.randn(n, 1, *b.shape[2:], generator=g) for b, g in zip(G.noise_buffers(), gens)]


def hand_sgd_scores(G: Generator, clip, z: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
    """The official determine_opt_layers written out: one torch.optim.SGD step on W+, mean |change| per row."""
    from nada.guidance.losses import global_loss

    w0 = G.mapping(z).detach().unsqueeze(1).repeat(1, G.n_latent, 1)
    codes = w0.clone().requires_grad_(True)
    opt = torch.optim.SGD([codes], lr=0.01)
    text = clip.encode_text(["sketch"]).detach()
    img = G.synthesis(codes, noise=noise, noise_mode="const")
    unit = torch.nn.functional.normalize
    logits = clip.logit_scale * unit(clip.encode_image(img), dim=-1) @ unit(text, dim=-1).T
    loss = (1 - logits / 100).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.allclose(loss, global_loss(clip.encode_image(img), text, clip.logit_scale))
    return (codes.detach() - w0).abs().mean(dim=-1).mean(dim=0)


def test_auto_layer_scores_are_the_official_mean_absolute_change(tiny) -> None:
    import nada

    G = tiny_generator(2)
    z = torch.randn(3, G.style_dim, generator=torch.Generator().manual_seed(5))
    noise = seeded_noise(G, 3, 0)
    scores, loss = nada.auto_layer_scores(G, tiny, "sketch", z, noise=noise)
    expected = hand_sgd_scores(G, tiny, z, noise)
    assert scores.shape == (G.n_latent,) and float(loss) > 0
    assert torch.allclose(scores, expected, rtol=1e-4, atol=1e-12)
    # The logit scale enters the loss: the tiny CLIP's is not 100, and the scores scale with it.
    assert float(tiny.logit_scale) != pytest.approx(100.0, rel=0.01)
    # The noise argument is honoured: other explicit noise, or fresh noise, moves the scores.
    other = [torch.randn_like(n) for n in noise]
    assert not torch.allclose(nada.auto_layer_scores(G, tiny, "sketch", z, noise=other)[0], scores)
    fresh = [
        nada.auto_layer_scores(G, tiny, "sketch", z, generator=torch.Generator().manual_seed(s))[0] for s in (1, 1, 2)
    ]
    assert torch.equal(fresh[0], fresh[1]) and not torch.equal(fresh[0], fresh[2])
    assert torch.equal(nada.auto_layer_scores(G, tiny, "sketch", z, noise=noise)[0], scores)  # deterministic


def test_auto_k_takes_the_top_rows_of_auto_layer_scores_and_maps_them(tiny) -> None:
    import nada
    from nada.adaptation.layers import official_layers_for_wplus

    G = tiny_generator(3)
    z = torch.randn(4, G.style_dim, generator=torch.Generator().manual_seed(9))
    noise = seeded_noise(G, 4, 20)
    scores, _ = nada.auto_layer_scores(G, tiny, "sketch", z, noise=noise)
    text = tiny.encode_text(["sketch"]).detach()
    from nada.guidance.losses import global_loss

    ctx = SelectionContext(
        sample_w=lambda n: G.mapping(z[:n]),
        image_loss=lambda img: global_loss(tiny.encode_image(img), text, tiny.logit_scale),
        batch_size=4,
        sample_noise=lambda n: noise,
    )
    top = torch.argsort(scores, descending=True, stable=True)[:3].tolist()
    assert parse_layers("auto:3").select(G, ctx) == layers_for_wplus(G, top)
    table = {info.name: info.wplus_index for info in G.layer_table()}
    assert {table[n] for n in parse_layers("auto:3").select(G, ctx)} == set(top)
    official = parse_layers("auto:3", layer_sets="official").select(G, ctx)
    assert official == official_layers_for_wplus(G, top)
    l2 = parse_layers("auto:3", score="l2")
    assert l2.rows(G, ctx) == torch.argsort(l2.row_scores(G, ctx), descending=True, stable=True)[:3].tolist()


def test_official_mapping_and_layer_sets() -> None:
    from nada.adaptation.layers import CONST, official_all_layers, official_layers_for_wplus, synthesis_parameters

    G = tiny_generator()
    assert official_layers_for_wplus(G, [0]) == ["conv1"]
    assert official_layers_for_wplus(G, [1]) == ["to_rgb1"]
    assert official_layers_for_wplus(G, [3, 2]) == ["convs.0", "convs.1"]  # row i -> convs.{i-2}, table order
    assert official_all_layers(G) == [CONST, "conv1"] + [f"convs.{k}" for k in range(6)]
    assert parse_layers("all", layer_sets="official").select(G) == official_all_layers(G)
    assert parse_layers("input,convs.1").select(G) == ["input", "convs.1"]
    set_trainable(G, ["input"])
    assert [n for n, p in G.named_parameters() if p.requires_grad] == ["input.input"]
    assert G.input.input in synthesis_parameters(G)
    with pytest.raises(NadaError, match="unknown layer sets"):
        parse_layers("all", layer_sets="rosinality")
    with pytest.raises(NadaError, match="unknown selection score"):
        parse_layers("auto:2", score="max")


def test_selection_noise_from_the_context_is_used() -> None:
    G = tiny_generator(4)
    draws: list[int] = []

    def fresh(n: int) -> list[torch.Tensor]:
        draws.append(n)
        gen = torch.Generator().manual_seed(len(draws))
        return [torch.randn(n, 1, *b.shape[2:], generator=gen) for b in G.noise_buffers()]

    stored = parse_layers("auto:2:3").row_scores(G, context(G, seed=1))
    base = context(G, seed=1)
    with_fresh = SelectionContext(base.sample_w, base.image_loss, base.batch_size, fresh)
    noisy = parse_layers("auto:2:3").row_scores(G, with_fresh)
    assert draws == [4, 4, 4]  # fresh noise for every SGD step, as the official code renders it
    assert not torch.allclose(stored, noisy)


@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_selection_has_the_same_gradients_per_latent(tiny, chunk: int) -> None:
    from nada.adaptation.layers import wplus_row_scores
    from nada.guidance.losses import global_loss

    G = tiny_generator(4)
    w = G.mapping(torch.randn(4, G.style_dim, generator=torch.Generator().manual_seed(3)))
    text = tiny.encode_text(["sketch"]).detach()
    loss = lambda img: global_loss(tiny.encode_image(img), text, tiny.logit_scale)  # noqa: E731
    noise = seeded_noise(G, 4, 40)
    whole = wplus_row_scores(G, w, loss, lambda n: noise, iters=2)
    parts = wplus_row_scores(G, w, loss, lambda n: noise, iters=2, chunk=chunk)
    assert torch.allclose(parts[0], whole[0], rtol=1e-5, atol=1e-12)
    assert torch.allclose(parts[1], whole[1], rtol=1e-6)
    # The chunks really split the batch: a loss that is no batch mean would change the scores.
    summed = lambda img: global_loss(tiny.encode_image(img), text, tiny.logit_scale) * img.shape[0]  # noqa: E731
    assert not torch.allclose(
        wplus_row_scores(G, w, summed, lambda n: noise, chunk=chunk)[0],
        wplus_row_scores(G, w, summed, lambda n: noise)[0],
        rtol=1e-3,
    )
    ctx = SelectionContext(
        sample_w=lambda n: w[:n], image_loss=loss, batch_size=4, chunk=chunk, sample_noise=lambda n: noise
    )
    assert parse_layers("auto:3").select(G, ctx) == parse_layers("auto:3").select(
        G, ctx.__class__(sample_w=ctx.sample_w, image_loss=loss, batch_size=4, sample_noise=ctx.sample_noise)
    )
