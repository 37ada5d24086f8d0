"""Reading weights files as data: the one place where nada opens .pt/.pth/.bin/.safetensors files.

Nothing in a file ever runs: pickled files load with ``torch.load(weights_only=True)`` (plus the few plain
classes a caller allows by name), safetensors files as such, and TorchScript archives, which torch would
refuse under ``weights_only`` and ``torch.jit.load`` would compile, are unpickled with every TorchScript
class replaced by an inert attribute holder (`read_torchscript_tensors`). Every failure is one NadaError
line naming the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nada.errors import NadaError, one_line

_DAMAGED = "truncated, corrupt or not a weights file"
# Failures of torch.load on a truncated, foreign or damaged file; anything else is a bug worth its traceback.
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError)


def torch_load(
    path: str | os.PathLike | io.BytesIO,
    allow: Iterable[type] = (),
    mmap: bool = False,
    what: str = "",
    fix: str | None = None,
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, the classes in ``allow`` added to torch's allow-list.

    A refused Python object or a damaged file is a one-line NadaError naming ``path`` (after ``what``, e.g.
    "evaluator weights", when given; an in-memory blob is named by ``what`` alone) and ending in ``fix``
    (else the advice for a downloaded file).
    """
    named = what if isinstance(path, io.BytesIO) else f"{what} {path}" if what else str(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _READ_ERRORS as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused is not None:
            raise NadaError(
                f"{named} contains the Python object '{refused.group(1)}', which nada refuses to load because loading "
                f"it could run code: {fix or 'use a file that holds only tensors and plain data'}"
            ) from None
        raise NadaError(f"{named} is {_DAMAGED} ({_load_failure(e)}): {fix or 'download or copy it again'}") from None


def _load_failure(e: BaseException) -> str:
    """The part of a torch.load error that says what is wrong with the file, in one line."""
    # torch's weights-only refusal opens with paragraphs of advice; the cause follows this marker.
    _, marker, cause = str(e).partition("WeightsUnpickler error:")
    return one_line(RuntimeError(cause) if marker else e, first_line=True)


def read_state_dict(path: str | os.PathLike, what: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a weights file (torch pickle, safetensors or TorchScript archive), on the CPU.

    A nested ``"state_dict"`` is unwrapped and ``"module."`` prefixes are dropped; entries that are not
    tensors are left out. ``what`` names the file in error messages ("CLIP weights", "LPIPS weights").
    """
    path = Path(path)
    named = f"{what} {path}" if what else str(path)
    if path.suffix == ".safetensors":
        sd: Any = _read_safetensors(path, named)
    elif is_torchscript_archive(path):
        try:
            sd = read_torchscript_tensors(path)
        except (pickle.UnpicklingError, ValueError, KeyError, StopIteration, zipfile.BadZipFile, OSError) as e:
            raise NadaError(
                f"{named} is not a readable TorchScript archive ({one_line(e, typed=True)}): download it again"
            ) from None
    else:
        sd = torch_load(path, what=what)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise NadaError(f"{named} holds a {type(sd).__name__}, not a state dict: give the right weights file")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _read_safetensors(path: Path, named: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU."""

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NadaError(f"{named} is {_DAMAGED} ({one_line(e)}): download or copy it again") from None


# ---------------------------------------------------------------- TorchScript archives, read as data only

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a TorchScript class while unpickling: it only keeps the attributes it is given."""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """A tensor view of a flat storage, copied so it owns its memory."""
    return torch.as_strided(storage, size, stride, offset).clone()


def _first_argument(value: Any, *_: Any) -> Any:
    """TorchScript's type-tagging helpers (torch.jit._pickle) return their first argument unchanged."""
    return value


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript data.pkl allowing only tensor rebuilding; nothing from the file runs."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        """The few harmless callables a weights archive needs; any other global is refused."""
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _first_argument
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """A storage record -> the flat tensor of its bytes in the archive's data/ folder."""
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected storage record {pid!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype)[:numel] if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a zip holding TorchScript code (``<prefix>/code/``) beside its ``data.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n for n in archive.namelist())


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript module archive, as a flat dict with dotted names (CPU)."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1)
        prefix = pkl[: -len("data.pkl")]
        root = _TorchScriptUnpickler(archive.read(pkl), archive, prefix).load()
    if not isinstance(root, _ScriptObject):
        raise ValueError("the archive does not hold a TorchScript module")
    return _script_tensors(root, "")


def _script_tensors(obj: _ScriptObject, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of an unpickled TorchScript module tree, named by their attribute paths."""
    found: dict[str, torch.Tensor] = {}
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor) and key != "attn_mask":  # masks are rebuilt, not weights
            found[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            found.update(_script_tensors(value, f"{prefix}{key}."))
    return found
