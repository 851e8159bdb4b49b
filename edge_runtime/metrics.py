"""Prometheus metrics of ``robis-edge serve``: :func:`render` writes a snapshot in the text
exposition format (version 0.0.4), standard library only.

The HTTP output (``--http``, or its alias ``--metrics-port``; edge_runtime/outputs/http.py)
serves it as ``GET /metrics``, rendered on each scrape from ``Service.snapshot()``; it never
touches the sockets or the pipeline: a scrape costs a lock and a percentile over the latency
windows.
"""

from __future__ import annotations

from .state import ServiceState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "robis_edge_"


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value, **labels) -> None:
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        self.lines.append(f"{PREFIX}{name}{'{' + lab + '}' if lab else ''} {_num(value)}")

    def one(self, name: str, kind: str, help_: str, value, **labels) -> None:
        self.family(name, kind, help_)
        self.sample(name, value, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(state: ServiceState) -> str:
    """A service's snapshot (``Service.snapshot()``) in Prometheus text format."""
    c = state.counters
    w = _Writer()
    w.one("uptime_seconds", "gauge", "Seconds since the service started.", c.uptime_s)
    w.one("frames_in_total", "counter", "Frame messages received.", c.frames_in)
    w.one("frames_out_total", "counter", "Results published.", c.frames_out)
    w.family("results_total", "counter", "Results published, by verdict.")
    for verdict, n in c.results.items():
        w.sample("results_total", n, verdict=verdict)
    w.family("errors_total", "counter", "Error results, by error code.")
    for code, n in c.errors.items():
        w.sample("errors_total", n, code=code)
    w.one("dropped_total", "counter", "Frames dropped by the overload policy.", c.dropped)
    w.one("results_lost_total", "counter", "Results that could not be published.", c.results_lost)
    w.one("auth_refused_total", "counter", "Peers refused by CURVE authentication.", c.auth_refused)
    w.one("in_flight", "gauge", "Frames being inspected now.", c.in_flight)
    w.one("queue_depth", "gauge", "Frames waiting for a worker.", state.queue_depth)
    w.one("queue_capacity", "gauge", "Capacity of the work queue (--queue-size).", state.queue_capacity)
    w.one("publish_queue_depth", "gauge", "Results waiting for the publisher.", state.publish_depth)
    w.one("workers", "gauge", "Pipeline threads (--workers).", state.workers)
    w.one("subscribers", "gauge", "Result subscriptions on the output socket.", state.subscribers)
    if c.last_result_age_s is not None:
        w.one("last_result_age_seconds", "gauge", "Seconds since the last result was published.",
              c.last_result_age_s)
    w.family("bundle_info", "gauge", "Loaded bundles (value 1), by product.")
    for b in state.bundles:
        w.sample("bundle_info", 1, product=b.product, bundle=b.model["bundle"], hash=b.model["hash"],
                 default=str(b.default).lower())
    w.family("latency_seconds", "summary", "Per-stage latency (quantiles over the last 2048 inspected "
             "frames; sum and count since start).")
    for stage, (qs, total_ms, count) in c.latency_summary().items():
        for q, v in qs.items():
            w.sample("latency_seconds", round(v / 1000.0, 6), stage=stage, quantile=q)
        w.sample("latency_seconds_sum", round(total_ms / 1000.0, 6), stage=stage)
        w.sample("latency_seconds_count", count, stage=stage)
    if state.outputs:
        w.family("output_connected", "gauge", "1 while an output can deliver (broker connected, server up).")
        for name, o in state.outputs.items():
            w.sample("output_connected", bool(o["connected"]), output=name)
        for key, kind, help_ in (("sent", "counter", "Updates an output delivered."),
                                 ("dropped", "counter", "Updates an output dropped (slow or absent peer)."),
                                 ("failed", "counter", "Updates an output failed to deliver."),
                                 ("queued", "gauge", "Updates waiting in an output's queue.")):
            name_ = f"output_{key}_total" if kind == "counter" else f"output_{key}"
            w.family(name_, kind, help_)
            for name, o in state.outputs.items():
                w.sample(name_, o[key], output=name)
    w.one("health", "gauge", "1 when healthy, 0 when degraded or stopping.", state.health == "ok")
    r = state.recording
    if r is not None:
        w.one("record_written_total", "counter", "Records written by --record.", r["recorded"])
        w.one("record_dropped_total", "counter", "Records dropped because the recorder queue was full.",
              r["dropped"])
        w.one("record_failed_total", "counter", "Records that could not be written.", r["failed"])
        w.one("record_deleted_total", "counter", "Records deleted to stay under the quota.", r["deleted"])
        w.one("record_bytes", "gauge", "Bytes in the record folder.", r["bytes"])
        w.one("record_quota_bytes", "gauge", "The record folder's quota.", r["quota_bytes"])
        w.one("record_queue_depth", "gauge", "Records waiting to be written.", r["queue_depth"])
    return w.text()
