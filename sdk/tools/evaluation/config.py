"""How an evaluation runs (``EvalConfig``: everything but the data and the bundles) and the metrics
it reports."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.errors import InputError
from sdk.vocabulary import SCOPES

from .metrics import FPR_LIMIT

# The metrics of metrics.json and of the table, in table order.
METRIC_NAMES = ("seg_f1", "au_pro", "class_f1", "image_auroc", "pixel_auroc", "pixel_f1_max")


@dataclass
class EvalConfig:
    """How to run an evaluation (everything but the data and the bundles)."""

    scope: str = "calibrated"
    backend: str = "auto"
    threads: int | None = None
    streams: int | None = None  # OpenVINO CPU streams (openvino backend only)
    fpr_limit: float = FPR_LIMIT
    report: bool = False
    gallery: int = 8
    save_maps: bool = False
    progress: bool = True
    refine: str | None = None  # none | sam | ttt; None: as each bundle says

    def validate(self) -> None:
        """Raise ``InputError`` for an unknown scope or an FPR limit outside (0, 1]."""
        if self.scope not in SCOPES:
            raise InputError(f"unknown scope {self.scope!r}; choose one of {', '.join(SCOPES)}")
        from sdk.vocabulary import REFINE_MODES

        if self.refine is not None and self.refine not in REFINE_MODES:
            raise InputError(f"unknown refine mode {self.refine!r}; choose one of {', '.join(REFINE_MODES)}")
        if not 0.0 < self.fpr_limit <= 1.0:
            raise InputError(f"the FPR limit must be in (0, 1], got {self.fpr_limit}")
