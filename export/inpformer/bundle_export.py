"""Turn an INP-Former checkpoint into a bundle: load (strictly checked), export to ONNX, verify
with ONNX Runtime, write bundle.json with sha256s and provenance."""

from __future__ import annotations

import hashlib
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk import __version__ as robis_version
from sdk.bundle import Bundle, PreprocessSpec, VerdictSpec, create_bundle, sha256_file

from .arch import InpFormerArch

MODEL_FILE = "anomaly_model.onnx"


def export_inpformer_bundle(checkpoint: str | Path, arch: InpFormerArch, out: str | Path, *,
                            name: str, window: int | None = 1024, overlap: float = 0.1,
                            tolerance: float = 1e-4, verdict: VerdictSpec | None = None,
                            overwrite: bool = False, features: bool = False,
                            log: Callable[[str], None] = print) -> tuple[Bundle, dict[str, Any]]:
    """Export ``checkpoint`` (an upstream INP_Former state_dict) into a new bundle at ``out``.

    ``features`` adds the ``features`` output (the fused encoder feature, N×C×g×g) and a
    ``refine.ttt`` section with the default parameters, not enabled (``--refine ttt`` runs it).
    Returns the bundle and the export report (ORT-vs-torch max difference, ops, size)."""
    import onnx
    import torch

    from .model import INPFormer
    from .onnx_export import export_onnx

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            from ..errors import ExportError

            raise ExportError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    log(f"[1/3] loading {checkpoint}")
    ckpt_sha = sha256_file(checkpoint)
    model = INPFormer.from_checkpoint(checkpoint, arch)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"      {n_params / 1e6:.2f}M parameters in the graph; checkpoint sha256 {ckpt_sha[:16]}…")
    log(f"[2/3] exporting to ONNX and checking against torch with ONNX Runtime (S={arch.img_size}, "
        f"M={arch.map_size})")
    out.mkdir(parents=True, exist_ok=True)
    report = export_onnx(model, out / MODEL_FILE, tolerance=tolerance, features=features)
    log(f"      max |ORT - torch| = {report['max_abs_diff']:.2e} (tolerance {tolerance:g}); "
        f"{report['file_size_bytes'] / 2**20:.1f} MiB")
    if features:
        log(f"      features {report['features_shape']}: max |ORT - torch| = "
            f"{report['features_max_abs_diff']:.2e}")
    log("[3/3] writing bundle.json")
    (out / "arch.json").write_text(arch.to_json() + "\n")
    provenance = {
        "exporter": f"robis-edge {robis_version} export inpformer",
        "source_checkpoint": Path(checkpoint).name,
        "source_checkpoint_sha256": ckpt_sha,
        "architecture": arch.to_dict(),
        "torch": torch.__version__, "onnx": onnx.__version__, "opset": report["opset"],
        "python": platform.python_version(),
        "export_check": {"max_abs_diff": report["max_abs_diff"], "tolerance": tolerance,
                         **({"features_max_abs_diff": report["features_max_abs_diff"]} if features else {})},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_sha256": hashlib.sha256(arch.to_json().encode()).hexdigest(),
    }
    bundle = create_bundle(out, name, MODEL_FILE, arch.map_size,
                           preprocess=PreprocessSpec(size=arch.img_size), window=window, overlap=overlap,
                           verdict=verdict, provenance=provenance)
    if features:
        from dataclasses import asdict

        from sdk.bundle import TttRefineSpec

        bundle.set_model_fields(features="features")
        bundle.set_ttt({**asdict(TttRefineSpec()), "enabled": False})
        bundle.save()
    log(f"bundle {name!r} written to {out} in {time.perf_counter() - t0:.1f} s "
        "(uncalibrated: run `robis-edge calibrate`)")
    return bundle, report
