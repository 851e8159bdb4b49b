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


def _tcp(host: str, port: int) -> str:
    return f"tcp://{host if ':' not in host else f'[{host}]'}:{port}"


def check_bind_addresses(cfg: ServiceConfig) -> None:
    """Refuse to bind anything but loopback unless ``allow_remote`` (``--allow-remote``): the ZeroMQ
    sockets, the HTTP output (``--http`` or ``--metrics-host``) and the OPC UA server (``--opcua``)."""
    if cfg.allow_remote:
        return
    bound = [("--output", cfg.output, cfg.output), ("--control", cfg.control, cfg.control)]
    http = cfg.http_address()
    if http is not None:
        shown = f"--http {cfg.http}" if cfg.http is not None else f"--metrics-host {cfg.metrics_host}"
        opt, addr = shown.split(" ", 1)
        bound.append((opt, addr, _tcp(*http)))
    if cfg.opcua:
        from .outputs.opcua import parse_opcua_url

        bound.append(("--opcua", cfg.opcua, _tcp(parse_opcua_url(cfg.opcua)[0], 0)))
    for opt, shown, addr in bound:
        if addr and not is_loopback_endpoint(addr):
            raise ServiceError(f"{opt} {shown} is not a loopback address: serve binds to 127.0.0.1 by "
                               "default; pass --allow-remote to accept connections from other hosts "
                               "(and consider --curve-secret/--curve-allow)")
