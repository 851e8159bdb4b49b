"""RoBiS Edge SDK: run RoBiS / INP-Former anomaly detection on camera frames, in-process.

The public names are loaded on first use, so that ``sdk.vocabulary`` (standard library only) can
be imported by command definitions without pulling numpy, OpenCV or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Bundle": "bundle", "create_bundle": "bundle",
    "Inspector": "inspector", "Result": "inspector", "Region": "verdict",
    "RobisError": "errors", "InputError": "errors", "BundleError": "errors",
    "CalibrationError": "errors", "BackendError": "errors",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
