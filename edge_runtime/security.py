"""CURVE encryption and authentication for the runtime's sockets (docs/protocol.md, Security).

Serve is the CURVE *server* on every socket (input, output, control) whether it binds or connects:
it holds the server key pair (``--curve-secret``) and authenticates clients (cameras,
subscribers, control clients) against an allow-list of public keys (``--curve-allow DIR``) with a
ZAP handler (``zmq.auth.thread.ThreadAuthenticator``) that runs in serve's own ZeroMQ context over
``inproc://``, so it is not reachable from the network. Every refused peer is counted.

Keys are ZeroMQ certificate files as written by ``zmq.auth.create_certificates``: ``NAME.key``
(public key only: give it to peers) and ``NAME.key_secret`` (public and secret key: keep it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sdk.errors import RobisError

from .logs import CountedLog

log = logging.getLogger("robis_edge.auth")


class CurveKeyError(RobisError):
    """A key file that cannot be used, or CURVE that cannot be set up as asked."""

    code = "keys"


def create_keys(out: str | os.PathLike, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write ``out/NAME.key`` and ``out/NAME.key_secret`` (mode 0600); return both paths."""
    import zmq.auth

    out = Path(out)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if not name or "/" in name or name.startswith("."):
        raise CurveKeyError(f"invalid key name {name!r}")
    if not force and (public.exists() or secret.exists()):
        raise CurveKeyError(f"{public} or {secret} exists already (use --force to replace)")
    out.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(out), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def load_keypair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the key file {path}: {exc}") from None
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key (use the NAME.key_secret file)")
    return public, secret


def load_public(path: str | os.PathLike) -> bytes:
    """The public key from a ``.key`` or ``.key_secret`` file."""
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the key file {path}: {exc}") from None
    return public


def count_public_keys(folder: str | os.PathLike) -> int:
    p = Path(folder)
    if not p.is_dir():
        raise CurveKeyError(f"--curve-allow {folder}: not a folder")
    return sum(1 for f in p.glob("*.key"))


def server_keypair(secret: str | os.PathLike | None,
                   allow: str | os.PathLike | None) -> tuple[bytes, bytes] | None:
    """serve's key pair from ``--curve-secret`` (None without it), once ``--curve-allow`` is known to
    hold public keys."""
    if not secret:
        if allow:
            raise CurveKeyError("--curve-allow needs --curve-secret (the server key pair)")
        return None
    import zmq

    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq has no CURVE support")
    keypair = load_keypair(secret)
    if allow and count_public_keys(allow) == 0:
        raise CurveKeyError(f"--curve-allow {allow}: no public key files (*.key) in it")
    return keypair


def apply_server(sock, keypair: tuple[bytes, bytes]) -> None:
    """CURVE server options; set before bind/connect."""
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_server = True


def apply_client(sock, keypair: tuple[bytes, bytes], server_public: bytes) -> None:
    """CURVE client options; set before bind/connect."""
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_serverkey = server_public


def start_authenticator(ctx, allow_dir: str | os.PathLike | None, on_refused: Callable[[str], None]):
    """A started ZAP handler for ``ctx``: CURVE clients whose public key is in ``allow_dir`` (any
    client with a valid CURVE handshake when None); refused peers are reported to ``on_refused``."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    class CountingAuthenticator(ThreadAuthenticator):
        def _send_zap_reply(self, request_id, status_code, status_text, user_id="anonymous"):
            if status_code != b"200":
                text = status_text.decode("utf-8", "replace") if isinstance(status_text, bytes) \
                    else str(status_text)
                on_refused(text)
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    auth = CountingAuthenticator(ctx, log=logging.getLogger("robis_edge.auth.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(allow_dir) if allow_dir else zmq.auth.CURVE_ALLOW_ANY)
    return auth


def refusal_log() -> CountedLog:
    """Logs the first refusals, then one line per 100: a client retrying every 100 ms must not
    flood the log."""
    return CountedLog(log, "CURVE peer refused (%d so far): %s", first=10, every=100)
