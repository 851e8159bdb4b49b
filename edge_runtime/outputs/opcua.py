"""OPC UA server of ``serve`` (``--opcua opc.tcp://HOST:PORT``), on asyncua.

The address space is the contract of docs/integration.md: namespace ``urn:robis-edge``, string node
ids made of the browse path joined with dots (``RobisEdge.Cameras.cam0.Seq``). A camera's object is
created when its first result arrives. The variables of one result are written in one write call
to the server's attribute service, ``Seq`` last, so a client triggering on ``Seq`` reads one result.
The server's event loop runs on a thread of its own; the output's thread hands each update to it
and waits (a stalled loop shows as ``stalled`` and its queue drops the oldest update).

Access: anonymous by default; ``--opcua-users FILE`` (``user:password`` lines) requires a user name
and password and refuses anonymous sessions; ``--opcua-cert``/``--opcua-key`` give the server a
certificate and offer only Basic256Sha256 Sign and SignAndEncrypt endpoints (no unencrypted one);
``--opcua-trust DIR`` then accepts only client certificates found in DIR (others are refused).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from sdk.vocabulary import OPCUA_NAMESPACE

from ..config import ServiceError
from .base import NewestPerCamera, Output, Update

log = logging.getLogger("robis_edge.opcua")

NAMESPACE = OPCUA_NAMESPACE  # urn:robis-edge
APPLICATION_URI = "urn:robis-edge:serve"  # the server's; its certificate's subjectAltName URI
ROOT = "RobisEdge"
SERVICE_REFRESH_S = 0.5  # the service-level variables (Health, counters) at most this often
WRITE_TIMEOUT_S = 5.0

# (browse name, OPC UA type name, initial value) of a camera's variables, in write order: Seq last.
CAMERA_VARIABLES = (("Verdict", "String", ""), ("Pass", "Boolean", False), ("Score", "Double", 0.0),
                    ("Regions", "Int32", 0), ("ErrorCode", "String", ""), ("Product", "String", ""),
                    ("LatencyMs", "Double", 0.0), ("Timestamp", "DateTime", None), ("Seq", "UInt64", 0))
SERVICE_VARIABLES = (("Health", "String", "ok"), ("FramesIn", "UInt64", 0), ("ResultsOut", "UInt64", 0),
                     ("Dropped", "UInt64", 0), ("Errors", "UInt64", 0), ("Backend", "String", ""))


def parse_opcua_url(url: str) -> tuple[str, int]:
    """``opc.tcp://HOST:PORT`` → (host, port); port 4840 by default."""
    parts = urlsplit(url)
    if parts.scheme != "opc.tcp" or not parts.hostname or parts.path not in ("", "/"):
        raise ServiceError(f"--opcua {url!r}: expected opc.tcp://HOST:PORT (for example "
                           "opc.tcp://127.0.0.1:4840)")
    try:
        port = 4840 if parts.port is None else parts.port
    except ValueError:
        raise ServiceError(f"--opcua {url!r}: the port is not a number in 0..65535") from None
    return parts.hostname, port


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """``--opcua-users FILE``: one ``user:password`` a line (``#`` comments); user → password."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"--opcua-users {path}: cannot read it ({exc})") from None
    users = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ServiceError(f"--opcua-users {path}, line {n}: expected user:password")
        users[user] = password
    if not users:
        raise ServiceError(f"--opcua-users {path}: no user:password line")
    if os.name == "posix" and p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--opcua-users %s can be read by other users of this host: chmod 600 it", path)
    return users


class _PasswordUsers:
    """asyncua user manager: the ``--opcua-users`` accounts; anonymous and unknown users refused."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.server.user_managers import User, UserRole

        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected.encode("utf-8"), str(password).encode("utf-8")):
            return None
        return User(role=UserRole.User, name=username)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class OpcUaOutput(Output):
    """The OPC UA server: service variables, one object per camera, ``ReloadCalibration``."""

    name = "opcua"

    def __init__(self, url: str, snapshot: Callable, reload: Callable[[], dict], queue_size: int = 64,
                 users: str | None = None, cert: str | None = None, key: str | None = None,
                 trust: str | None = None) -> None:
        super().__init__(queue_size)
        self.host, port = parse_opcua_url(url)
        self.port = port or _free_port(self.host)
        self.endpoint = f"opc.tcp://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"
        if bool(cert) != bool(key):
            raise ServiceError("--opcua-cert and --opcua-key go together")
        if trust and not cert:
            raise ServiceError("--opcua-trust needs --opcua-cert and --opcua-key (client certificates are "
                               "checked on encrypted endpoints only)")
        if trust and not Path(trust).is_dir():
            raise ServiceError(f"--opcua-trust {trust}: not a folder")
        self._users = read_users(users) if users else None
        self._cert, self._key, self._trust = cert, key, trust
        self._snapshot, self._reload = snapshot, reload
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server = None
        self._ns = 0
        self._cameras: dict[str, dict] = {}  # camera → {browse name: NodeId}
        self._newest = NewestPerCamera()  # a result older than the one the nodes show is not written
        self._service_nodes: dict[str, object] = {}
        self._cameras_node = None
        self._last_service = 0.0
        self._up = False

    # -- start / stop -------------------------------------------------------------------------------
    def open(self) -> None:
        try:
            import asyncua  # noqa: F401
        except ImportError:
            raise ServiceError("--opcua needs asyncua: pip install 'robis-edge[integration]'") from None
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="serve-output-opcua-loop",
                                             daemon=True)
        self._loop_thread.start()
        try:
            self._call(self._start(), 30.0)
        except Exception as exc:
            self._stop_loop()
            if isinstance(exc, ServiceError):
                raise
            raise ServiceError(f"cannot serve OPC UA on {self.endpoint}: {exc}") from exc
        self._up = True
        log.info("OPC UA server on %s (namespace %s, %s)", self.endpoint, NAMESPACE,
                 "user/password" if self._users else "anonymous")

    def _call(self, coro, timeout: float = WRITE_TIMEOUT_S):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        from asyncua import Server, ua

        server = Server(user_manager=_PasswordUsers(self._users) if self._users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("robis-edge serve")
        await server.set_application_uri(APPLICATION_URI)
        if self._cert:
            try:
                await server.load_certificate(self._cert)
                await server.load_private_key(self._key)
            except (OSError, ValueError) as exc:
                raise ServiceError(f"--opcua-cert {self._cert} / --opcua-key {self._key}: {exc}") from exc
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Basic256Sha256_Sign])
            if self._trust:
                from asyncua.crypto.truststore import TrustStore
                from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

                store = TrustStore([Path(self._trust)], [])
                await store.load()
                opts = CertificateValidatorOptions
                server.set_certificate_validator(CertificateValidator(
                    opts.TIME_RANGE | opts.TRUSTED | opts.PEER_CLIENT, store))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.UserNameIdentityToken] if self._users else [ua.AnonymousIdentityToken])
        self._ns = ns = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(ua.NodeId(ROOT, ns), ua.QualifiedName(ROOT, ns))
        for name, kind, value in SERVICE_VARIABLES:
            node = await root.add_variable(ua.NodeId(f"{ROOT}.{name}", ns), ua.QualifiedName(name, ns),
                                           value, getattr(ua.VariantType, kind))
            self._service_nodes[name] = node.nodeid
        self._cameras_node = await root.add_object(ua.NodeId(f"{ROOT}.Cameras", ns),
                                                   ua.QualifiedName("Cameras", ns))
        await root.add_method(ua.NodeId(f"{ROOT}.ReloadCalibration", ns),
                              ua.QualifiedName("ReloadCalibration", ns), self._reload_method, [],
                              [ua.VariantType.String])
        await server.start()
        self._server = server

    def _reload_method(self, _parent):  # runs in asyncua's executor: may block
        from asyncua import ua

        try:
            reply = self._reload()
        except Exception as exc:  # the caller gets the reason, the server goes on
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return [ua.Variant(json.dumps(reply), ua.VariantType.String)]

    def close(self) -> None:
        if self._server is not None and self._loop is not None:
            try:
                self._call(self._server.stop(), 5.0)
            except Exception:  # pragma: no cover - shutting down anyway
                log.exception("OPC UA server did not stop cleanly")
            self._server = None
        self._up = False
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            self._loop.close()
            self._loop = None

    def connected(self) -> bool:
        return self._up

    def extra_stats(self) -> dict:
        return {"cameras": len(self._cameras)}

    # -- writing ------------------------------------------------------------------------------------
    def handle(self, update: Update) -> None:
        self._call(self._write_result(update))
        self.count("sent")
        self._refresh_service()

    def idle(self) -> None:
        self._refresh_service()

    def _refresh_service(self) -> None:
        now = time.monotonic()
        if now - self._last_service < SERVICE_REFRESH_S or self._server is None:
            return
        self._last_service = now
        self._call(self._write_service(self._snapshot()))

    async def _camera_nodes(self, camera: str) -> dict:
        nodes = self._cameras.get(camera)
        if nodes is None:
            from asyncua import ua

            ns, base = self._ns, f"{ROOT}.Cameras.{camera}"
            obj = await self._cameras_node.add_object(ua.NodeId(base, ns), ua.QualifiedName(camera, ns))
            nodes = {}
            for name, kind, value in CAMERA_VARIABLES:
                vtype = getattr(ua.VariantType, kind)
                if value is None:
                    value = datetime.now(timezone.utc)
                node = await obj.add_variable(ua.NodeId(f"{base}.{name}", ns), ua.QualifiedName(name, ns),
                                              value, vtype)
                nodes[name] = (node.nodeid, vtype)
            self._cameras[camera] = nodes
            log.info("OPC UA: camera %s added (%s.*)", camera, base)
        return nodes

    async def _write_result(self, update: Update) -> None:
        h = update.header
        camera = h.get("camera")
        if not camera or not self._newest.take(camera, update):  # no node to go to / an older frame
            return
        nodes = await self._camera_nodes(camera)
        error = h.get("error") or {}
        values = {"Verdict": update.verdict, "Pass": update.verdict == "pass",
                  "Score": float(h.get("score") or 0.0), "Regions": update.counted_regions(),
                  "ErrorCode": error.get("code") or "", "Product": update.product or "",
                  "LatencyMs": float(update.latency_ms()),
                  "Timestamp": datetime.fromtimestamp(update.published, timezone.utc),
                  "Seq": int(h.get("seq") or 0)}
        await self._write(nodes, values, values["Timestamp"])

    async def _write_service(self, state) -> None:
        c = state.counters
        backends = "; ".join(f"{b.product}: {b.info.get('backend')} {b.info.get('provider')} "
                             f"{b.info.get('precision')}" for b in state.bundles)
        values = {"Health": state.health, "FramesIn": c.frames_in, "ResultsOut": c.frames_out,
                  "Dropped": c.dropped, "Errors": sum(c.errors.values()), "Backend": backends}
        kinds = {name: kind for name, kind, _ in SERVICE_VARIABLES}
        from asyncua import ua

        nodes = {k: (self._service_nodes[k], getattr(ua.VariantType, kinds[k])) for k in values}
        await self._write(nodes, values)

    async def _write(self, nodes: dict, values: dict, now: datetime | None = None) -> None:
        """One write call to the attribute service, in ``values``' order (a result's Seq is last),
        every value with the source timestamp ``now`` (default: the current time)."""
        from asyncua import ua

        now = now or datetime.now(timezone.utc)
        params = ua.WriteParameters()
        for name, value in values.items():
            nodeid, vtype = nodes[name]
            wv = ua.WriteValue()
            wv.NodeId = nodeid
            wv.AttributeId = ua.AttributeIds.Value
            wv.Value = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now)
            params.NodesToWrite.append(wv)
        codes = await self._server.iserver.attribute_service.write(params)
        bad = [str(code) for code in codes if not code.is_good()]
        if bad:
            raise RuntimeError(f"OPC UA write refused: {bad}")
