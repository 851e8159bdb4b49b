"""The bundle: what export hands to the device (docs/bundle.md).

``schema`` owns the whole ``bundle.json`` format (typed sections, validation); ``store`` the
directory on disk (loading, hashes, atomic saves); ``cli`` the ``bundle`` command (standard
library only), ``wrap`` and ``check`` its work. Import the names from here: they are loaded on
first use, so that importing ``sdk.bundle.cli`` pulls neither numpy nor ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    **dict.fromkeys(("FORMAT", "FORMAT_MAJOR", "IMAGENET_MEAN", "IMAGENET_STD", "EngineEntry", "ModelSpec",
                     "MorphologySpec", "PreprocessSpec", "ReferenceSpec", "SamRefineSpec", "TilingSpec",
                     "TttRefineSpec", "VerdictSpec"), "schema"),
    **dict.fromkeys(("Bundle", "create_bundle", "sha256_file"), "store"),
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'sdk.bundle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
