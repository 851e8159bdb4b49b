"""What ``robis-edge serve`` is asked to do (:class:`ServiceConfig`) and the error it raises when it
cannot be done as asked (:class:`ServiceError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdk.errors import RobisError
from sdk.vocabulary import MQTT_DEFAULT_PREFIX, parse_product_bundle

from .work_queue import POLICIES

INPUT_MODES = ("sub", "pull")


class ServiceError(RobisError):
    """The service cannot start as configured (address in use, bad bundle list...)."""

    code = "service"


@dataclass
class ServiceConfig:
    """serve's options; the command line's names are in the comments and error messages."""

    bundles: list[tuple[str | None, str]]  # (product name or None: the bundle's own name, path)
    input: str
    output: str
    control: str | None = None
    input_mode: str = "sub"
    workers: int = 2
    queue_size: int = 8
    policy: str = "queue"
    max_payload_mb: float = 128.0
    backend: str = "auto"
    threads: int | None = None
    streams: int | None = None  # OpenVINO CPU streams per bundle (openvino backend only)
    mask_scale: float | None = None
    refine: str | None = None  # --refine none|sam|ttt; None: as each bundle says
    drain_timeout_s: float = 30.0
    rcvhwm: int = 64
    record_dir: str | None = None  # --record: frames/masks/results of chosen verdicts (recorder.py)
    record_quota_mb: float = 1024.0
    record_what: str = "fail"
    record_queue: int = 32
    metrics_port: int | None = None  # --metrics-port: Prometheus /metrics over HTTP (metrics.py)
    metrics_host: str = "127.0.0.1"
    http: str | None = None  # --http HOST:PORT: page, /api/*, /metrics (outputs/http.py)
    mqtt: str | None = None  # --mqtt mqtt://HOST:PORT (outputs/mqtt.py)
    mqtt_prefix: str = MQTT_DEFAULT_PREFIX
    opcua: str | None = None  # --opcua opc.tcp://HOST:PORT (outputs/opcua.py)
    opcua_users: str | None = None  # --opcua-users FILE: user:password lines, anonymous refused
    opcua_cert: str | None = None  # --opcua-cert / --opcua-key: encrypted endpoints only
    opcua_key: str | None = None
    opcua_trust: str | None = None  # --opcua-trust DIR: the client certificates accepted
    output_queue: int = 64  # --output-queue: updates waiting per output before the oldest is dropped
    allow_remote: bool = False  # bind non-loopback addresses only when this is set
    curve_secret: str | None = None  # --curve-secret: the server key pair (security.py)
    curve_allow: str | None = None  # --curve-allow: folder of allowed client public keys (*.key)
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`ServiceError` for options that cannot work together."""
        if self.input_mode not in INPUT_MODES:
            raise ServiceError(f"--input-mode must be sub or pull, got {self.input_mode!r}")
        if self.policy not in POLICIES:
            raise ServiceError(f"--overload must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.workers < 1 or self.queue_size < 1:
            raise ServiceError("--workers and --queue-size must be at least 1")
        if not self.bundles:
            raise ServiceError("give at least one --bundle")
        if self.http is not None and self.metrics_port is not None:
            raise ServiceError("--metrics-port is an alias of --http (which serves /metrics too): give one")
        if self.output_queue < 1:
            raise ServiceError("--output-queue must be at least 1")
        self.http_address()

    def http_address(self) -> tuple[str, int] | None:
        """(host, port) of the HTTP output: ``--http``, or ``--metrics-host``:``--metrics-port``."""
        if self.http is not None:
            from .outputs.http import parse_http_address

            return parse_http_address(self.http)
        if self.metrics_port is not None:
            return self.metrics_host, self.metrics_port
        return None


def parse_bundle_spec(spec: str) -> tuple[str | None, str]:
    """A ``--bundle`` value, ``PATH`` or ``PRODUCT=PATH`` (``sdk.vocabulary.parse_product_bundle``)."""
    try:
        return parse_product_bundle(spec, path_exists=lambda s: Path(s).exists())
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
