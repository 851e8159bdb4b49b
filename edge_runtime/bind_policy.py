"""Which addresses serve may bind: loopback only, unless ``--allow-remote``."""

from __future__ import annotations

import ipaddress

from .config import ServiceConfig, ServiceError


def is_loopback_endpoint(addr: str) -> bool:
    """True for ``tcp://127.x.y.z:port``, ``tcp://localhost:port``, ``tcp://[::1]:port``, ``ipc://``
    and ``inproc://`` endpoints: nothing outside this host can reach them."""
    if addr.startswith(("ipc://", "inproc://")):
        return True
    if not addr.startswith("tcp://"):
        return False
    host = addr[len("tcp://"):].rsplit(":", 1)[0]
    if ";" in host:  # tcp://source;dest: the bound side is the destination
        host = host.split(";", 1)[1]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or '*'
        return False


def check_bind_addresses(cfg: ServiceConfig) -> None:
    """Refuse to bind anything but loopback unless ``allow_remote`` (``--allow-remote``)."""
    if cfg.allow_remote:
        return
    bound = [("--output", cfg.output), ("--control", cfg.control)]
    if cfg.metrics_port is not None:
        bound.append(("--metrics-host", f"tcp://{cfg.metrics_host}:{cfg.metrics_port}"))
    for opt, addr in bound:
        if addr and not is_loopback_endpoint(addr):
            raise ServiceError(f"{opt} {addr} is not a loopback address: serve binds to 127.0.0.1 by "
                               "default; pass --allow-remote to accept connections from other hosts "
                               "(and consider --curve-secret/--curve-allow)")
