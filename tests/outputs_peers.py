"""Real peers for the output tests: a Mosquitto broker on a free loopback port (started and killed
by the test), and a serve Harness with outputs (tests/test_runtime_service.py's Harness)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def mosquitto_binary() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")


class Broker:
    """``mosquitto`` on 127.0.0.1:``port``; ``kill()`` and ``start()`` again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class Listener:
    """A paho subscriber to ``topic`` that reconnects by itself; ``messages``: (topic, payload, qos,
    retain) in arrival order."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.client = c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
        c.reconnect_delay_set(1, 1)

        def on_connect(client, _u, _f, rc, _p):
            client.subscribe(topic, qos=1)

        def on_message(_client, _u, msg):
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

        c.on_connect, c.on_message = on_connect, on_message
        c.connect_async("127.0.0.1", port, keepalive=5)
        c.loop_start()

    def wait(self, pred, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [m for m in list(self.messages) if pred(m)]
            if got:
                return got
            time.sleep(0.02)
        raise AssertionError(f"no matching MQTT message in {timeout} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")
