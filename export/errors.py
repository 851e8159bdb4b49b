"""Errors of the export toolchain, as typed robis-edge errors the CLI reports in one line.

:class:`ExportError` is the family; its subclasses live beside the code that raises them:
``ArchitectureError`` (export.inpformer.arch), ``ExportMismatchError``
(export.inpformer.onnx_export), ``SamCheckpointError`` (export.sam.model) and
``SamExportMismatchError`` (export.sam.onnx_export)."""

from __future__ import annotations

from sdk.errors import RobisError


class ExportError(RobisError):
    """A checkpoint that cannot be exported as asked, or an export that failed verification."""

    code = "export"


def require_export_extra(what: str) -> None:
    """Fail with the install command when torch/onnx are missing."""
    missing = []
    for mod in ("torch", "onnx"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)}: install the export extra "
                          "(pip install 'robis-edge[export]'; on a CPU-only machine install "
                          "torch==2.13.0 first)")
