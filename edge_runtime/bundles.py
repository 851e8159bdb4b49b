"""The bundles serve runs: loading them at start, and re-reading their calibration (``reload``)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import RobisError

from .config import ServiceError

log = logging.getLogger("robis_edge.serve")


@dataclass
class LoadedBundle:
    """A bundle and the one ``Inspector`` that runs it for product ``product``."""

    product: str
    root: Path
    inspector: Any
    model: dict  # the results' ``model``: {"bundle", "hash"}
    sha256: str  # of the model file when loaded


def calibration_json(cal) -> dict | None:
    """What the control replies say of a calibration."""
    return None if cal is None else {"created": cal.created, "n_images": cal.n_images, "source": cal.source}


def load_bundles(specs: list[tuple[str | None, str]], backend: str, threads: int | None,
                 mask_scale: float | None, refine: str | None = None,
                 streams: int | None = None) -> dict[str, LoadedBundle]:
    """Each ``(product or None, path)`` loaded with its inspector, by product; the first is the default."""
    from sdk import Bundle, Inspector

    entries: dict[str, LoadedBundle] = {}
    for product, path in specs:
        bundle = Bundle.load(path)
        name = product or bundle.name
        if name in entries:
            raise ServiceError(f"two bundles answer to product {name!r}; name them with "
                               "--bundle PRODUCT=PATH")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            insp = Inspector(bundle, backend=backend, threads=threads, mask_scale=mask_scale, refine=refine,
                             streams=streams)
        for w in caught:
            log.warning("bundle %s: %s", name, w.message)
        d = insp.describe()
        log.info("bundle %s (%s, model %s) on %s/%s %s (%s); scope %s", name, bundle.name,
                 d["model_sha256"], d["backend"], d["provider"], d["precision"], d["reason"], d["scope"])
        model = {"bundle": bundle.name, "hash": d["model_sha256"]}
        entries[name] = LoadedBundle(name, bundle.root, insp, model, bundle.model_sha256)
    return entries


def reload_calibrations(entries: dict[str, LoadedBundle], names: list[str]) -> dict:
    """Re-read the calibration of each named bundle from its bundle.json and use it from the next
    frame on; the ``reload`` control reply."""
    from sdk import Bundle

    out, ok = {}, True
    for name in names:
        e = entries.get(name)
        if e is None:
            out[name] = {"ok": False, "message": f"no bundle {name!r} is loaded"}
            ok = False
            continue
        try:
            b = Bundle.load(e.root)
            if b.model_sha256 != e.sha256:
                raise ServiceError("the model file changed on disk; its calibration belongs to the "
                                   "new model: restart the service to load both")
            if e.inspector.scope != "calibrated":
                raise ServiceError(f"this bundle runs the {e.inspector.scope!r} scope (it was not "
                                   "calibrated at start); restart the service to use a calibration")
            cal = b.calibration
            if cal is None or cal.norm is None:
                raise ServiceError("bundle.json has no (complete) calibration")
            changed = cal != e.inspector.calibration
            e.inspector.set_calibration(cal)
            out[name] = {"ok": True, "changed": changed, "calibration": calibration_json(cal)}
            log.info("reload %s: calibration %s (%s)", name, "updated" if changed else "unchanged",
                     cal.created)
        except RobisError as exc:
            ok = False
            out[name] = {"ok": False, "message": str(exc)}
            log.error("reload %s failed: %s", name, exc)
    return {"ok": ok, "bundles": out}
