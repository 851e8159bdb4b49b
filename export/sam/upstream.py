"""Import segment-anything's model code (``segment_anything.build_sam`` and
``segment_anything.modeling``) whether or not torchvision is installed.

``segment_anything/__init__.py`` imports ``SamPredictor``, whose ``utils/transforms.py`` imports
torchvision, which has no CPU build for this project's torch pin. The model code itself needs only
torch. When torchvision imports the package is imported normally; when it is missing or broken (a
mismatched build raises ``RuntimeError``, not ``ImportError``) the package's
``__init__`` is bypassed: a bare stub parent module (``__path__`` = the installed package
directory, nothing executed) is registered in ``sys.modules`` ONLY for the duration of importing
the two submodules, then removed again, so that a later ``import segment_anything`` by someone
else still runs (and fails or succeeds) exactly as it would have. The submodules stay in
``sys.modules`` so that their classes keep one identity.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from dataclasses import dataclass

_PKG = "segment_anything"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Upstream:
    """The two upstream modules this project uses."""

    build_sam: types.ModuleType
    modeling: types.ModuleType


def _missing(what: str) -> ImportError:
    return ImportError(f"{what}: install the export extra (pip install 'robis-edge[export]', which "
                       "brings segment-anything)")


def load_upstream() -> Upstream:
    """``segment_anything.build_sam`` and ``segment_anything.modeling``, imported without running
    the package ``__init__`` when torchvision is missing or cannot be imported."""
    with _LOCK:
        pkg = sys.modules.get(_PKG)
        if pkg is not None and not getattr(pkg, "__robis_stub__", False):
            return Upstream(importlib.import_module(f"{_PKG}.build_sam"),
                            importlib.import_module(f"{_PKG}.modeling"))
        if importlib.util.find_spec("torchvision") is not None:
            try:
                importlib.import_module(_PKG)
            except Exception:  # noqa: BLE001 - a broken torchvision raises anything (RuntimeError:
                pass  # operator torchvision::nms does not exist, ...): take the stub route below
            else:
                return Upstream(importlib.import_module(f"{_PKG}.build_sam"),
                                importlib.import_module(f"{_PKG}.modeling"))
        spec = importlib.util.find_spec(_PKG)  # locates the package; executes nothing
        if spec is None or not spec.submodule_search_locations:
            raise _missing("segment-anything is not installed")
        # Stub parent, registered only while the submodules are imported (see the module doc).
        stub = types.ModuleType(_PKG)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__file__ = spec.origin
        stub.__robis_stub__ = True
        stub.__spec__ = importlib.util.spec_from_loader(_PKG, loader=None, is_package=True)
        stub.__spec__.submodule_search_locations = stub.__path__
        sys.modules[_PKG] = stub
        try:
            modeling = importlib.import_module(f"{_PKG}.modeling")
            build_sam = importlib.import_module(f"{_PKG}.build_sam")
        finally:
            if sys.modules.get(_PKG) is stub:
                del sys.modules[_PKG]
        return Upstream(build_sam, modeling)
