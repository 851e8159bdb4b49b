"""Pictures a person can look at: heat map and mask contours over the frame."""

from __future__ import annotations

import cv2
import numpy as np

from .inspector import Result

_FAIL = (40, 40, 230)  # BGR
_PASS = (60, 180, 60)


def render_overlay(frame_rgb: np.ndarray, result: Result, alpha: float = 0.45) -> np.ndarray:
    """BGR image: the frame, the anomaly heat map blended over it, mask contours, region
    boxes with their peak score and a verdict banner."""
    h, w = frame_rgb.shape[:2]
    base = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    heat = cv2.resize(np.clip(result.anomaly_map, 0, 255).astype(np.uint8), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(base, 1.0 - alpha, cv2.applyColorMap(heat, cv2.COLORMAP_JET), alpha, 0.0)
    thick = max(1, round(max(h, w) / 600))
    mask = cv2.resize(result.mask, (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), thick + 1)
    color = _FAIL if result.verdict == "fail" else _PASS
    font = max(0.4, max(h, w) / 1500)
    for r in result.regions:
        x0, y0, x1, y1 = r.bbox
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, thick)
        cv2.putText(out, f"{r.max:.0f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, font, color,
                    thick, cv2.LINE_AA)
    banner = f"{result.verdict.upper()}  score {result.score:.1f}  regions {len(result.regions)}"
    (tw, th), base_line = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base_line + 12), color, -1)
    cv2.putText(out, banner, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), thick,
                cv2.LINE_AA)
    return out
