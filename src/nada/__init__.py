"""nada: text-driven domain adaptation of StyleGAN2 generators.

Importing the package is cheap: the heavy modules load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it; resolved lazily so `import nada` does no work.
_LAZY = {
    "Generator": "nada.generator.networks",
    "load_generator": "nada.generator.checkpoints",
    "save_checkpoint": "nada.generator.checkpoints",
    "NadaError": "nada.errors",
    "auto_layer_scores": "nada.adaptation.layers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nada' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
