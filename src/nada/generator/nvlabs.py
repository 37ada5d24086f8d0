"""NVlabs stylegan2-ada-pytorch snapshots: a reader that never runs code from the file, and the conversion of
`G_ema` into the rosinality layout used by `nada.generator.networks.Generator`.

Why a custom unpickler: the training loop pickles its networks with `torch_utils.persistence`, which stores
the *source code* of every network class in the file and `exec`s it on load; torch tensors inside are
pickled through `torch.storage._load_from_bytes`, which calls `torch.load(weights_only=False)`. Plain
`pickle.load` therefore runs whatever the file says. `SnapshotUnpickler` allows a short list of globals,
replaces the persistent classes by `PersistentObject` (their pickled `__dict__` kept as data, the embedded
source never executed) and loads storages through `nada.weights.safe_load.torch_load` (weights only).

How the two codebases relate (all verified against the reference outputs in the test suite):
- Mapping: both normalise z by its second moment (eps 1e-8), both use equalised-lr linear layers with a
  leaky-ReLU of gain sqrt(2); NVlabs' `weight_gain`/`bias_gain` equal rosinality's `scale`/`lr_mul`, so
  the weights copy unchanged. `w_avg` becomes `mean_latent`; truncation is the same lerp.
- Modulated convs: NVlabs demodulates `weight * style` without the 1/sqrt(fan_in) gain, rosinality
  demodulates `scale * weight * style`. Demodulation cancels any scale except inside `+ 1e-8`, so the
  weight is multiplied by sqrt(fan_in) at conversion time and both compute the same numbers.
- Up-sampling convs: NVlabs runs a transposed conv (stride 2, weight not flipped, padding 0) followed by
  upfirdn2d with its normalised [1,3,3,1] filter, gain 4 and padding (1, 1); rosinality's blur after its
  transposed conv uses the same kernel, the same gain and padding, and neither flips the 3x3 weights.
  The skip up-sampling (upfirdn2d up=2, padding (2, 1), gain 4) equals rosinality's `Upsample`.
- ToRGB: NVlabs multiplies the styles by `weight_gain = 1/sqrt(in)`, rosinality multiplies the weight by
  `scale = 1/sqrt(in)`; the product is the same, so the weight copies unchanged (no demodulation).
- Affine layers (bias init 1) equal rosinality's `modulation` layers; noise `noise_const * noise_strength`
  is added after the conv, before bias and activation, as in rosinality; `noise_const` [r, r] becomes
  `noises.noise_i` [1, 1, r, r].
- Not expressible and therefore refused: conditional generators (c_dim > 0), z_dim != w_dim, 'orig' or
  'resnet' architectures, other resample filters. `conv_clamp` (activation clamping, usually at 256) is
  not reproduced: a warning says so. fp16 layers are computed in float32.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nada.errors import NadaError, one_line
from nada.generator.networks import Generator, GeneratorConfig, default_channels, make_kernel
from nada.weights.safe_load import torch_load

# Source of the persistent-class reconstructor and of the storages; both are replaced, never imported.
_PERSISTENCE_MODULE = "torch_utils.persistence"
_STORAGE_TYPES = (torch.storage.TypedStorage, torch.storage.UntypedStorage)

# ---------------------------------------------------------------- stand-ins for pickled objects


class PersistentObject:
    """Stand-in for a `torch_utils.persistence` network object: class name and pickled `__dict__`, as plain data."""

    def __init__(self, class_name: str, state: dict[str, Any], version: int | None = None) -> None:
        self.class_name = class_name
        self.state = state
        self.version = version

    def __setstate__(self, state: Any) -> None:
        # A BUILD opcode aimed at a stand-in is not something the training loop writes.
        raise NadaError(
            f"unexpected pickle instruction on a {self.class_name} object: the snapshot is malformed or tampered with"
        )

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute of the original object (an entry of its pickled `__dict__`)."""
        return self.state.get(name, default)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the original object was constructed with (recorded by torch_utils.persistence)."""
        return dict(self.state.get("_init_kwargs") or {})

    def child(self, name: str) -> "PersistentObject":
        """The submodule `name`, which must itself be a persistent object."""
        sub = (self.state.get("_modules") or {}).get(name)
        if not isinstance(sub, PersistentObject):
            raise NadaError(
                f"{self.class_name} has no submodule {name!r}: this is not a StyleGAN2 (stylegan2-ada-pytorch) "
                "generator"
            )
        return sub

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat `state_dict`-like mapping of parameters and persistent buffers, keys prefixed like torch does."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise NadaError(f"{prefix}{name} is a {type(t).__name__}, not a tensor: the snapshot is malformed")
                out[prefix + name] = t
        for name, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, PersistentObject):
                out.update(sub.tensors(f"{prefix}{name}."))
            elif sub is not None:
                raise NadaError(f"submodule {prefix}{name} is a {type(sub).__name__}: the snapshot is malformed")
        return out


class _EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: a plain dict (the original only adds attribute access)."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Replacement of `torch_utils.persistence._reconstruct_persistent_obj` that keeps the state and drops the
    source."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise NadaError(
            "unexpected persistent-object record in the snapshot: only network classes ('type': 'class') are supported"
        )
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise NadaError("persistent-object record without a class name or state: the snapshot is malformed")
    # meta['module_src'] is the class source code; it is deliberately never looked at beyond this point.
    return PersistentObject(class_name, state, meta.get("version"))


def _load_storage(data: Any) -> torch.storage.TypedStorage | torch.UntypedStorage:
    """Replacement of `torch.storage._load_from_bytes`: the embedded torch.save blob read with weights_only=True."""
    if not isinstance(data, bytes):
        raise NadaError("a tensor storage in the snapshot is not stored as bytes: the snapshot is malformed")
    fix = "use a network-snapshot-*.pkl written by stylegan2-ada-pytorch's training loop"
    storage = torch_load(io.BytesIO(data), what="a tensor storage in the snapshot", fix=fix)
    if not isinstance(storage, _STORAGE_TYPES):
        raise NadaError(
            f"a tensor storage in the snapshot decodes to a {type(storage).__name__}: the snapshot is malformed"
        )
    return storage


def _check_hooks(hooks: Any) -> None:
    if hooks:  # the training loop never saves hooks; callables here would be a payload
        raise NadaError("a tensor in the snapshot carries backward hooks: the snapshot is malformed or tampered with")


def _rebuild_tensor_v2(
    storage: Any, offset: int, size: tuple, stride: tuple, requires_grad: bool, hooks: Any, metadata: Any = None
) -> torch.Tensor:
    """Checked wrapper of `torch._utils._rebuild_tensor_v2`: the storage must come from `_load_storage`."""
    if not isinstance(storage, _STORAGE_TYPES):
        raise NadaError(
            f"a tensor in the snapshot is built from a {type(storage).__name__}, not a storage: the snapshot is "
            "malformed"
        )
    _check_hooks(hooks)
    metadata = metadata if isinstance(metadata, dict) else None
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, bool(requires_grad), collections.OrderedDict(), metadata
    )


def _rebuild_parameter(data: Any, requires_grad: bool, hooks: Any, state: Any = None) -> torch.nn.Parameter:
    """Checked wrapper of `torch._utils._rebuild_parameter(_with_state)`: a plain tensor, no hooks, no extra state."""
    if not isinstance(data, torch.Tensor):
        raise NadaError(f"a parameter in the snapshot wraps a {type(data).__name__}: the snapshot is malformed")
    _check_hooks(hooks)
    if state:
        raise NadaError(
            "a parameter in the snapshot carries extra Python state: the snapshot is malformed or tampered with"
        )
    return torch.nn.Parameter(data, bool(requires_grad))


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    """The only globals a snapshot may name: (module, name) -> the object the unpickler hands out instead."""

    # numpy 2 moved numpy.core to numpy._core; pickles name either, depending on who wrote them.
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    allowed: dict[tuple[str, str], Any] = {
        (_PERSISTENCE_MODULE, "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = multiarray.scalar
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    return allowed


class SnapshotUnpickler(pickle.Unpickler):
    """Unpickler for NVlabs snapshots that resolves only allow-listed globals and refuses everything else."""

    def __init__(self, file: Any, path: str | os.PathLike = "<snapshot>") -> None:
        super().__init__(file)
        self.path = str(path)
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None and module.startswith("dnnlib.tflib"):
            raise NadaError(
                f"{self.path} is a TensorFlow StyleGAN2 pickle (it names '{module}.{name}'): convert it to a PyTorch "
                "snapshot first, e.g. with stylegan2-ada-pytorch's legacy.py, or use a rosinality .pt converted from it"
            )
        if obj is None:
            raise NadaError(
                f"{self.path}: refused to unpickle global '{module}.{name}': nada reads snapshots as data and never "
                "runs code "
                "from them, and this file holds something other than a stylegan2-ada-pytorch network snapshot "
                "(or was tampered with); use a snapshot written by the stylegan2-ada-pytorch training loop"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise NadaError(
            f"{self.path}: unexpected persistent id in the pickle: this is not a stylegan2-ada-pytorch snapshot"
        )


def read_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle a `network-snapshot-*.pkl` safely; networks come back as `PersistentObject`s holding CPU tensors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = SnapshotUnpickler(f, path).load()
    except NadaError:
        raise
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RuntimeError,
        MemoryError,
    ) as e:
        raise NadaError(
            f"{path} is truncated or corrupt ({one_line(e, first_line=True)}): download or copy it again"
        ) from None
    if isinstance(data, PersistentObject):  # a network pickled on its own rather than a snapshot dict
        data = {"G_ema": data}
    if not isinstance(data, dict):
        raise NadaError(
            f"{path} holds a {type(data).__name__}, not a snapshot dict: use a network-snapshot-*.pkl from "
            "stylegan2-ada-pytorch"
        )
    return data


def snapshot_generator(snapshot: dict[str, Any], path: str | os.PathLike = "<snapshot>") -> PersistentObject:
    """The generator of a snapshot dict: `G_ema` (the averaged weights used for sampling), else `G`."""
    for key in ("G_ema", "G"):
        g = snapshot.get(key)
        if isinstance(g, PersistentObject):
            return g
    raise NadaError(
        f"{path} has no generator (keys {sorted(map(str, snapshot))}): expected 'G_ema' as in network-snapshot-*.pkl"
    )


# ---------------------------------------------------------------- conversion to the rosinality layout


class _Taker:
    """Hands out NVlabs tensors by key with shape checks and remembers which keys were used."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)

    def __call__(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.tensors:
            raise NadaError(
                f"snapshot generator lacks {key} (shape {list(shape)}): not a StyleGAN2 generator of "
                "stylegan2-ada-pytorch"
            )
        t = self.tensors.pop(key)
        if tuple(t.shape) != tuple(shape):
            raise NadaError(
                f"snapshot tensor {key} has shape {list(t.shape)}, expected {list(shape)}: the generator does not have "
                "the StyleGAN2 layout"
            )
        return t.detach().float().clone()

    def has(self, key: str) -> bool:
        return key in self.tensors


def _rescale(t: torch.Tensor, ratio: float) -> torch.Tensor:
    """Multiply by `ratio` unless it is 1 up to rounding (then keep the bits unchanged)."""
    return t if math.isclose(ratio, 1.0, rel_tol=1e-6) else t * ratio


def _fc(
    take: _Taker, obj: PersistentObject, nv: str, out_dim: int, in_dim: int, scale: float, lr_mul: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVlabs FullyConnectedLayer -> rosinality EqualLinear weight/bias, for a target with the given scale and
    lr_mul."""
    w = take(nv + "weight", (out_dim, in_dim))
    b = take(nv + "bias", (out_dim,))
    weight_gain = float(obj.get("weight_gain", 1 / math.sqrt(in_dim)))
    bias_gain = float(obj.get("bias_gain", 1))
    # Effective weight weight*weight_gain must equal w_r*scale; effective bias bias*bias_gain must equal b_r*lr_mul.
    return _rescale(w, weight_gain / scale), _rescale(b, bias_gain / lr_mul)


def _filter_ok(take: _Taker, key: str, expected: torch.Tensor) -> None:
    f = take(key, tuple(expected.shape))
    if not torch.allclose(f, expected, atol=1e-6):
        raise NadaError(
            f"snapshot uses resample filter {f.tolist()} at {key}: only the standard [1,3,3,1] filter is supported"
        )


def _check_activation(obj: PersistentObject, where: str, expected: str) -> None:
    act = obj.get("activation", expected)
    if act != expected:
        raise NadaError(
            f"snapshot layer {where} uses activation {act!r}, expected {expected!r}: this generator variant is not "
            "supported"
        )


def convert_generator(
    g: PersistentObject, path: str | os.PathLike = "<snapshot>"
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    """NVlabs `Generator` stand-in -> (GeneratorConfig kwargs, rosinality state dict without blur kernels, mean latent
    [w_dim])."""

    z_dim, w_dim, c_dim = (g.get(k) for k in ("z_dim", "w_dim", "c_dim"))
    size, img_channels = g.get("img_resolution"), g.get("img_channels", 3)
    if g.class_name != "Generator" or not all(isinstance(v, int) for v in (z_dim, w_dim, c_dim, size)):
        raise NadaError(
            f"{path}: {g.class_name} is not a stylegan2-ada-pytorch Generator (missing "
            "z_dim/w_dim/c_dim/img_resolution)"
        )
    if c_dim:
        raise NadaError(
            f"{path}: conditional generators (c_dim={c_dim}) are not supported: use an unconditional snapshot"
        )
    if z_dim != w_dim:
        raise NadaError(f"{path}: z_dim {z_dim} differs from w_dim {w_dim}, which the rosinality layout cannot express")
    if img_channels != 3:
        raise NadaError(f"{path}: the generator makes {img_channels}-channel images; only RGB generators are supported")
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if synthesis.get("block_resolutions") is None:
        raise NadaError(
            f"{path}: the synthesis network is not StyleGAN2's (e.g. a StyleGAN3 snapshot): only StyleGAN2 generators "
            "are supported"
        )

    take = _Taker(g.tensors())
    out: dict[str, torch.Tensor] = {}

    # Mapping network: fc{i} -> style.{i+1} (style.0 is the pixel norm); one shared lr multiplier.
    n_mlp = int(mapping.get("num_layers", 0))
    lr_mlp = float(mapping.child("fc0").get("bias_gain", 0.01))
    for i in range(n_mlp):
        fc = mapping.child(f"fc{i}")
        _check_activation(fc, f"mapping.fc{i}", "lrelu")
        if not math.isclose(float(fc.get("bias_gain", lr_mlp)), lr_mlp):
            raise NadaError(
                f"{path}: mapping layers use different learning-rate multipliers, which the rosinality layout cannot "
                "express"
            )
        w, b = _fc(take, fc, f"mapping.fc{i}.", w_dim, w_dim, lr_mlp / math.sqrt(w_dim), lr_mlp)
        out[f"style.{i + 1}.weight"], out[f"style.{i + 1}.bias"] = w, b
    mean_latent = take("mapping.w_avg", (w_dim,))

    # Synthesis network, block by block; block b{res} drives convs.{2j}, convs.{2j+1}, to_rgbs.{j}, j = log2(res) - 3.
    resolutions = [int(r) for r in synthesis.get("block_resolutions")]
    if resolutions != [2**i for i in range(2, int(math.log2(size)) + 1)]:
        raise NadaError(f"{path}: block resolutions {resolutions} do not run 4 .. {size} in powers of two")
    nv_filter = make_kernel((1, 3, 3, 1))  # NVlabs setup_filter: the outer product normalised to sum 1
    channels: dict[int, int] = {}
    clamps: set[float] = set()
    in_ch = 0
    for res in resolutions:
        blk, p = synthesis.child(f"b{res}"), f"synthesis.b{res}."
        if blk.get("architecture", "skip") != "skip":
            raise NadaError(
                f"{path}: block b{res} uses the {blk.get('architecture')!r} architecture; only 'skip' (the StyleGAN2 "
                "default) is supported"
            )
        _filter_ok(take, p + "resample_filter", nv_filter)
        # Channel counts come from the weights themselves: the const [C, 4, 4] at 4x4, conv0 [out, in, 3, 3] above.
        first = p + ("const" if res == 4 else "conv0.weight")
        if not take.has(first):
            raise NadaError(
                f"{path}: the snapshot generator lacks {first}: not a StyleGAN2 generator of stylegan2-ada-pytorch"
            )
        out_ch = int(take.tensors[first].shape[0])
        if res == 4:
            out["input.input"] = take(first, (out_ch, 4, 4))[None]
            _layer(
                take,
                out,
                blk.child("conv1"),
                p + "conv1.",
                "conv1.",
                0,
                out_ch,
                out_ch,
                w_dim,
                res,
                1,
                nv_filter,
                clamps,
            )
            _torgb(take, out, blk.child("torgb"), p + "torgb.", "to_rgb1.", out_ch, w_dim, clamps)
        else:
            j = int(math.log2(res)) - 3
            _layer(
                take,
                out,
                blk.child("conv0"),
                p + "conv0.",
                f"convs.{2 * j}.",
                2 * j + 1,
                in_ch,
                out_ch,
                w_dim,
                res,
                2,
                nv_filter,
                clamps,
            )
            _layer(
                take,
                out,
                blk.child("conv1"),
                p + "conv1.",
                f"convs.{2 * j + 1}.",
                2 * j + 2,
                out_ch,
                out_ch,
                w_dim,
                res,
                1,
                nv_filter,
                clamps,
            )
            _torgb(take, out, blk.child("torgb"), p + "torgb.", f"to_rgbs.{j}.", out_ch, w_dim, clamps)
        channels[res] = in_ch = out_ch

    if take.tensors:
        extra = sorted(take.tensors)
        raise NadaError(
            f"{path}: the generator has weights the StyleGAN2 layout has no place for "
            f"({', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''}): this variant is not supported"
        )
    if clamps:
        warnings.warn(
            f"{path}: the generator clamps activations at +-{max(clamps):g} (conv_clamp); nada does not clamp, "
            "so outputs can differ where activations exceed that bound (rare for trained models)",
            stacklevel=3,
        )
    config = dict(
        size=size,
        style_dim=w_dim,
        n_mlp=n_mlp,
        lr_mlp=lr_mlp,
        blur_kernel=(1, 3, 3, 1),
        **_channel_config(size, channels),
    )
    return config, out, mean_latent


def _layer(
    take: _Taker,
    out: dict[str, torch.Tensor],
    obj: PersistentObject,
    nv: str,
    r: str,
    noise_index: int,
    in_ch: int,
    out_ch: int,
    w_dim: int,
    res: int,
    up: int,
    nv_filter: torch.Tensor,
    clamps: set[float],
) -> None:
    """One NVlabs SynthesisLayer -> rosinality StyledConv `r` plus its noise buffer `noises.noise_{noise_index}`."""
    if int(obj.get("up", 1)) != up or int(obj.get("resolution", res)) != res:
        raise NadaError(
            f"snapshot layer {nv[:-1]} has up={obj.get('up')} at resolution {obj.get('resolution')}, expected up={up} "
            f"at {res}"
        )
    _check_activation(obj, nv[:-1], "lrelu")
    if obj.get("conv_clamp") is not None:
        clamps.add(float(obj.get("conv_clamp")))
    k = 3
    # Demodulation cancels the weight's scale; sqrt(fan_in) makes rosinality's `scale * weight` equal NVlabs' weight
    # exactly.
    weight = take(nv + "weight", (out_ch, in_ch, k, k))
    out[r + "conv.weight"] = (weight * math.sqrt(in_ch * k * k))[None]
    aw, ab = _fc(take, obj.child("affine"), nv + "affine.", in_ch, w_dim, 1 / math.sqrt(w_dim), 1.0)
    out[r + "conv.modulation.weight"], out[r + "conv.modulation.bias"] = aw, ab
    _filter_ok(take, nv + "resample_filter", nv_filter)
    if obj.get("use_noise", True):
        out[r + "noise.weight"] = take(nv + "noise_strength", ()).reshape(1)
        out[f"noises.noise_{noise_index}"] = take(nv + "noise_const", (res, res))[None, None]
    else:  # a layer without noise equals one whose noise strength is zero
        out[r + "noise.weight"] = torch.zeros(1)
        out[f"noises.noise_{noise_index}"] = torch.zeros(1, 1, res, res)
    out[r + "activate.bias"] = take(nv + "bias", (out_ch,))


def _torgb(
    take: _Taker,
    out: dict[str, torch.Tensor],
    obj: PersistentObject,
    nv: str,
    r: str,
    in_ch: int,
    w_dim: int,
    clamps: set[float],
) -> None:
    """NVlabs ToRGBLayer -> rosinality ToRGB `r`: NVlabs scales the styles, rosinality the weight, by 1/sqrt(in)."""
    if obj.get("conv_clamp") is not None:
        clamps.add(float(obj.get("conv_clamp")))
    weight_gain = float(obj.get("weight_gain", 1 / math.sqrt(in_ch)))
    weight = take(nv + "weight", (3, in_ch, 1, 1))
    out[r + "conv.weight"] = _rescale(weight, weight_gain * math.sqrt(in_ch))[None]
    aw, ab = _fc(take, obj.child("affine"), nv + "affine.", in_ch, w_dim, 1 / math.sqrt(w_dim), 1.0)
    out[r + "conv.modulation.weight"], out[r + "conv.modulation.bias"] = aw, ab
    out[r + "bias"] = take(nv + "bias", (3,)).reshape(1, 3, 1, 1)


def _channel_config(size: int, channels: dict[int, int]) -> dict[str, Any]:
    """`channel_multiplier` when the table is rosinality's default for one, else an explicit channel table."""

    for cm in (2, 1, 4):
        if default_channels(size, cm) == channels:
            return {"channel_multiplier": cm, "channels": None}
    return {"channel_multiplier": 2, "channels": dict(channels)}


def generator_from_snapshot(path: str | os.PathLike) -> "Generator":
    """Read a stylegan2-ada-pytorch snapshot safely and return its `G_ema` as a nada Generator (CPU, eval mode)."""

    config_kwargs, converted, mean_latent = convert_generator(snapshot_generator(read_snapshot(path), path), path)
    G = Generator.from_config(GeneratorConfig(**config_kwargs))
    target = G.state_dict()
    for key, t in converted.items():
        if key not in target or target[key].shape != t.shape:
            shape = list(target[key].shape) if key in target else None
            raise NadaError(
                f"{path}: converted tensor {key} {list(t.shape)} does not fit the generator (expects {shape}): "
                "unsupported snapshot"
            )
    # Only the fixed FIR kernels are not converted: they follow from the config and stay as constructed.
    left = [k for k in target if k not in converted and not k.endswith(".kernel")]
    if left:
        raise NadaError(f"{path}: the snapshot gives no value for {', '.join(left[:4])}: unsupported snapshot")
    target.update(converted)
    G.load_state_dict(target, strict=True)
    G.mean_latent.copy_(mean_latent)
    return G.eval()
