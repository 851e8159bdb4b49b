"""serve's control commands (REP socket, docs/protocol.md): ``health``, ``stats`` and ``reload``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .state import ServiceState

if TYPE_CHECKING:
    from .service import Service


def handle_control(service: Service, raw: bytes) -> dict:
    """The reply to one control request (a UTF-8 JSON object with ``cmd``)."""
    try:
        req = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"ok": False, "error": "request must be a UTF-8 JSON object like {\"cmd\": \"health\"}"}
    cmd = req.get("cmd") if isinstance(req, dict) else None
    if cmd == "health":
        return health_reply(service.snapshot())
    if cmd == "stats":
        return stats_reply(service.snapshot())
    if cmd == "reload":
        product = req.get("product")
        return service.reload(product if isinstance(product, str) else None)
    return {"ok": False, "error": f"unknown cmd {cmd!r}; use health, stats or reload"}


def health_reply(state: ServiceState) -> dict:
    """``{"cmd": "health"}``: is it running, what does it serve, is anything coming out."""
    c = state.counters
    return {"ok": True, "status": state.status, "health": state.health, "uptime_s": c.uptime_s,
            "bundles": [b.product for b in state.bundles], "default": state.default,
            "frames_in": c.frames_in, "frames_out": c.frames_out, "queue_depth": state.queue_depth,
            "subscribers": state.subscribers, "last_result_age_s": c.last_result_age_s}


def stats_reply(state: ServiceState) -> dict:
    """``{"cmd": "stats"}``: the counters, latencies, queues, endpoints, recording and bundles."""
    d = {"ok": True, "health": state.health, **state.counters.to_json()}
    d["queue"] = {"depth": state.queue_depth, "capacity": state.queue_capacity, "policy": state.policy,
                  "publish_depth": state.publish_depth, "workers": state.workers}
    d["subscribers"] = state.subscribers
    d["endpoints"] = dict(state.endpoints)
    if state.recording is not None:
        d["recording"] = dict(state.recording)
    if state.outputs:
        d["outputs"] = {name: dict(o) for name, o in state.outputs.items()}
    d["bundles"] = {b.product: {**b.info, "default": b.default, "calibration": b.calibration}
                    for b in state.bundles}
    return d
