"""One snapshot of a running service (:class:`ServiceState`): the ``health`` and ``stats`` control
replies and the Prometheus ``/metrics`` page are all written from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stats import Counters


@dataclass(frozen=True)
class BundleState:
    """A loaded bundle, as the replies show it."""

    product: str
    model: dict  # the results' ``model``: {"bundle", "hash"}
    info: dict  # ``Inspector.describe()``
    calibration: dict | None  # ``bundles.calibration_json``
    default: bool  # frames without ``product`` go to this one


@dataclass(frozen=True)
class ServiceState:
    """What the service holds and has counted, at ``counters.taken``."""

    status: str  # "running" or "stopping"
    counters: Counters
    queue_depth: int  # frames waiting for a worker
    queue_capacity: int  # --queue-size
    policy: str  # --overload
    publish_depth: int  # results waiting for the publisher
    workers: int
    subscribers: int
    endpoints: dict[str, str | None]
    bundles: tuple[BundleState, ...]  # in --bundle order
    default: str | None
    recording: dict | None  # ``Recorder.stats()`` with --record, else None
    outputs: dict[str, dict] = field(default_factory=dict)  # ``Output.stats()`` by output name
    health: str = "ok"  # "ok", "degraded" (a worker or an output stalled) or "stopping"
