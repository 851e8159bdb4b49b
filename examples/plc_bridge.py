"""A result subscriber that turns ``robis-edge serve`` verdicts into PLC-style output bits.

It subscribes to serve's results (protocol v1, docs/protocol.md) and keeps an output image of a
few bits, as a fieldbus gateway (Modbus/TCP, OPC UA, Profinet I/O...) would expose them to a PLC:

| bit / word | meaning |
|---|---|
| ``OK``     | the last part passed |
| ``NG``     | the last part failed (a defect was found) |
| ``ERR``    | the last frame could not be inspected (``error`` result; ``error_code`` says why) |
| ``ALARM``  | watchdog: no result for ``--watchdog`` seconds (serve, camera or network down) |
| ``TOGGLE`` | flips with every result, so that the PLC sees a new result even when the verdict repeats |
| ``seq``, ``camera`` | the frame the bits belong to |

Exactly one of OK/NG/ERR is set after a result. When the watchdog fires, OK, NG and ERR are
cleared and ALARM is set: a stale OK must never let a part through. The next result clears ALARM.

Every change is printed as one line (``seq=12 camera=cam0 verdict=fail OK=0 NG=1 ERR=0 ALARM=0
TOGGLE=1``) and, with ``--state FILE``, written atomically (temporary file + rename) as JSON for
whatever drives the real outputs.

Reconnects: ZeroMQ reconnects a SUB socket by itself when the publisher goes away and comes back
(here every 0.1 s, backing off to 2 s); the bridge logs ``link up``/``link down`` from the
socket's monitor. When the watchdog fires it also closes the socket and connects a new one (and
does so again every ``--watchdog`` seconds while the alarm lasts), which recovers from half-open
TCP connections that ZeroMQ cannot see. TCP keep-alive is on.

    python examples/plc_bridge.py --results tcp://127.0.0.1:5556 --watchdog 2 --state plc.json

A PLC with an OPC UA client needs no bridge: ``serve --opcua`` exposes the same handshake as nodes
(``RobisEdge.Cameras.<camera>.Seq`` as the trigger, ``Pass``/``Verdict``/``ErrorCode``), see
docs/integration.md, "Worked example".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

BITS = ("OK", "NG", "ERR", "ALARM", "TOGGLE")
VERDICT_BIT = {"pass": "OK", "fail": "NG", "error": "ERR"}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class PlcBridge:
    """SUB to ``endpoint``, keep the PLC output state, watch for missing results.

    ``run()`` blocks until ``stop`` is set, ``duration`` seconds have passed or ``max_results``
    results were seen. ``state`` (a dict) and ``events`` (the printed lines) may be read from
    another thread.
    """

    def __init__(self, endpoint: str, *, topic: str = "result.", watchdog_s: float = 5.0,
                 state_file: Path | None = None, out=sys.stdout, curve: dict | None = None) -> None:
        self.endpoint, self.topic = endpoint, topic.encode("ascii")
        self.watchdog_s = float(watchdog_s)
        self.state_file = Path(state_file) if state_file else None
        self.out = out
        self.curve = curve  # {"secret": (public, secret), "server": public} with CURVE, else None
        self.state: dict = {b: 0 for b in BITS}
        self.state.update(seq=None, camera=None, verdict=None, error_code=None, link="down", results=0,
                          alarms=0, reconnects=0, bad_messages=0, updated=None)
        self.events: list[str] = []
        self._lock = threading.Lock()
        self._ctx = None
        self._sock = None
        self._mon = None

    # -- output -------------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        with self._lock:
            self.state["updated"] = time.time()
            self.events.append(line)
            snapshot = dict(self.state)
        print(line, file=self.out, flush=True)
        if self.state_file is not None:
            write_atomic(self.state_file, json.dumps(snapshot, sort_keys=True).encode("utf-8"))

    def _bits(self) -> str:
        s = self.state
        return " ".join(f"{b}={s[b]}" for b in BITS)

    def on_result(self, header: dict) -> None:
        verdict = header.get("verdict")
        with self._lock:
            s = self.state
            alarm_was = s["ALARM"]
            for b in ("OK", "NG", "ERR", "ALARM"):
                s[b] = 0
            s[VERDICT_BIT[verdict]] = 1
            s["TOGGLE"] ^= 1
            s["seq"], s["camera"], s["verdict"] = header.get("seq"), header.get("camera"), verdict
            s["error_code"] = (header.get("error") or {}).get("code") if verdict == "error" else None
            s["results"] += 1
            line = f"seq={s['seq']} camera={s['camera']} verdict={verdict} {self._bits()}"
            if s["error_code"]:
                line += f" error_code={s['error_code']}"
        if alarm_was:
            self._emit("alarm cleared: results flow again")
        self._emit(line)

    def on_watchdog(self, silent_s: float) -> None:
        with self._lock:
            s = self.state
            for b in ("OK", "NG", "ERR"):
                s[b] = 0
            s["ALARM"] = 1
            s["alarms"] += 1
            line = f"alarm watchdog: no result for {silent_s:.1f} s {self._bits()}"
        self._emit(line)

    # -- socket -------------------------------------------------------------------------------
    def _connect(self) -> None:
        import zmq

        self._sock = s = self._ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        s.setsockopt(zmq.TCP_KEEPALIVE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
        s.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 5)
        if self.curve:
            s.curve_publickey, s.curve_secretkey = self.curve["secret"]
            s.curve_serverkey = self.curve["server"]
        s.setsockopt(zmq.SUBSCRIBE, self.topic)
        self._mon = s.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        s.connect(self.endpoint)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
            self._sock = self._mon = None

    def _reconnect(self) -> None:
        self._close()
        with self._lock:
            self.state["reconnects"] += 1
            self.state["link"] = "down"
        self._connect()
        self._emit(f"reconnect to {self.endpoint}")

    def _read_monitor(self) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while self._mon.poll(0):
            event = recv_monitor_message(self._mon)["event"]
            link = "up" if event == zmq.EVENT_CONNECTED else "down"
            with self._lock:
                changed = self.state["link"] != link
                self.state["link"] = link
            if changed:
                self._emit(f"link {link} ({self.endpoint})")

    def run(self, stop: threading.Event | None = None, *, duration: float | None = None,
            max_results: int | None = None) -> dict:
        import zmq

        stop = stop or threading.Event()
        self._ctx = zmq.Context()
        self._connect()
        t_end = None if duration is None else time.monotonic() + duration
        last = last_kick = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if t_end is not None and now >= t_end:
                    break
                self._read_monitor()
                if self._sock.poll(50):
                    parts = self._sock.recv_multipart()
                    try:
                        header = json.loads(parts[1]) if len(parts) == 3 else None
                    except (UnicodeDecodeError, ValueError):
                        header = None
                    if not isinstance(header, dict) or header.get("v") != 1 \
                            or header.get("verdict") not in VERDICT_BIT:
                        with self._lock:
                            self.state["bad_messages"] += 1
                        continue
                    self.on_result(header)
                    last = last_kick = time.monotonic()
                    if max_results is not None and self.state["results"] >= max_results:
                        break
                elif now - last_kick >= self.watchdog_s:
                    if not self.state["ALARM"]:
                        self.on_watchdog(now - last)
                    self._reconnect()  # again every watchdog period while the alarm lasts
                    last_kick = now
        finally:
            self._close()
            self._ctx.term()
        return dict(self.state)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="tcp://127.0.0.1:5556",
                    help="serve's --output (connected to; default tcp://127.0.0.1:5556)")
    ap.add_argument("--camera", help="only this camera's results (default: all)")
    ap.add_argument("--watchdog", type=float, default=5.0,
                    help="seconds without a result before ALARM (default 5)")
    ap.add_argument("--state", type=Path, help="JSON file with the output bits, rewritten atomically")
    ap.add_argument("--duration", type=float, help="exit after this many seconds (default: run until "
                    "SIGINT/SIGTERM)")
    ap.add_argument("--max-results", type=int, help="exit after this many results")
    ap.add_argument("--curve-secret", type=Path, help="this client's key pair (robis-edge keys), for a "
                    "serve started with --curve-secret")
    ap.add_argument("--curve-server-key", type=Path, help="serve's public key file")
    args = ap.parse_args(argv)
    curve = None
    if args.curve_secret or args.curve_server_key:
        if not (args.curve_secret and args.curve_server_key):
            ap.error("--curve-secret and --curve-server-key go together")
        import zmq.auth

        curve = {"secret": zmq.auth.load_certificate(args.curve_secret),
                 "server": zmq.auth.load_certificate(args.curve_server_key)[0]}
        if curve["secret"][1] is None:
            ap.error(f"{args.curve_secret} holds no secret key")
    bridge = PlcBridge(args.results, topic="result." + (args.camera or ""), watchdog_s=args.watchdog,
                       state_file=args.state, curve=curve)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = bridge.run(stop, duration=args.duration, max_results=args.max_results)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print("summary " + json.dumps({k: state[k] for k in ("results", "alarms", "reconnects", "bad_messages")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
