"""MQTT publisher of ``serve`` (``--mqtt mqtt://HOST:PORT``, ``--mqtt-prefix``), on paho-mqtt.

Topics (docs/integration.md): ``<prefix>/<camera>/result`` (QoS 1, not retained) carries the result
header JSON exactly as it left on ZeroMQ (the mask PNG is not sent); ``<prefix>/status`` (QoS 1,
retained) is ``online`` once connected and ``offline`` as the last will and on a clean shutdown.
paho's network thread reconnects with back-off (1 s doubling to 30 s). While the broker is away,
results are dropped and counted here, never handed to paho, so nothing is buffered without bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from urllib.parse import urlsplit

from sdk.vocabulary import MQTT_DEFAULT_PREFIX, is_valid_name

from ..config import ServiceError
from .base import Output, Update

log = logging.getLogger("robis_edge.mqtt")

QOS = 1
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
INFLIGHT = 64  # QoS 1 messages paho may hold unacknowledged; beyond, results are dropped


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` → (host, port); port 1883 by default."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/"):
        raise ServiceError(f"--mqtt {url!r}: expected mqtt://HOST:PORT (for example mqtt://127.0.0.1:1883)")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ServiceError(f"--mqtt {url!r}: the port is not a number in 1..65535") from None
    return parts.hostname, port


def check_prefix(prefix: str) -> str:
    """A topic prefix: printable ASCII without spaces or the wildcards ``+``/``#``, no empty level."""
    if not is_valid_name(prefix) or "+" in prefix or "#" in prefix or "" in prefix.split("/"):
        raise ServiceError(f"--mqtt-prefix {prefix!r}: expected topic levels of printable ASCII without "
                           "spaces, '+' or '#' (for example robis-edge or plant1/line3)")
    return prefix


class MqttOutput(Output):
    """Publishes every result to ``<prefix>/<camera>/result``; ``<prefix>/status`` tells if serve is up."""

    name = "mqtt"

    def __init__(self, url: str, prefix: str = MQTT_DEFAULT_PREFIX, queue_size: int = 64,
                 client_id: str | None = None) -> None:
        super().__init__(queue_size)
        self.host, self.port = parse_mqtt_url(url)
        self.prefix = check_prefix(prefix)
        self.endpoint = f"mqtt://{self.host}:{self.port}"
        self.status_topic = f"{self.prefix}/status"
        self._client_id = client_id or ""
        self._connected = threading.Event()
        self._connects = 0
        self._closing = False
        self._bad_cameras: set[str] = set()
        self._client = None

    def open(self) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ServiceError("--mqtt needs paho-mqtt: pip install 'robis-edge[integration]'") from None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id,
                        protocol=mqtt.MQTTv311)
        c.will_set(self.status_topic, b"offline", qos=QOS, retain=True)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        c.max_inflight_messages_set(INFLIGHT)
        c.max_queued_messages_set(INFLIGHT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.enable_logger(log)
        self._client = c
        # Asynchronous: serve starts whether or not the broker is there; paho keeps trying.
        c.connect_async(self.host, self.port, keepalive=10)
        c.loop_start()

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.endpoint, reason_code)
            return
        client.publish(self.status_topic, b"online", qos=QOS, retain=True)
        self._connects += 1
        self._connected.set()
        log.info("MQTT connected to %s (topics %s/...)", self.endpoint, self.prefix)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("MQTT broker %s lost (%s): reconnecting with back-off; results are dropped "
                        "meanwhile", self.endpoint, reason_code)
        self._connected.clear()

    def connected(self) -> bool:
        return self._connected.is_set()

    def extra_stats(self) -> dict:
        return {"connects": self._connects, "prefix": self.prefix}

    def handle(self, update: Update) -> None:
        if not self._connected.is_set():
            self.count("dropped")
            return
        camera = update.camera or "unknown"
        if "+" in camera or "#" in camera:  # MQTT wildcards cannot be in a topic one publishes to
            self.count("failed")
            if camera not in self._bad_cameras:
                self._bad_cameras.add(camera)
                log.error("camera %r cannot be an MQTT topic level ('+' and '#' are wildcards): its "
                          "results are not published on MQTT", camera)
            return
        info = self._client.publish(f"{self.prefix}/{camera}/result", update.header_json, qos=QOS)
        self.count("sent" if info.rc == 0 else "dropped")

    def close(self) -> None:
        c = self._client
        if c is None:
            return
        self._closing = True
        if self._connected.is_set():
            # RuntimeError/ValueError: the broker went away meanwhile, and the last will says it.
            with contextlib.suppress(RuntimeError, ValueError):
                c.publish(self.status_topic, b"offline", qos=QOS, retain=True).wait_for_publish(2.0)
        c.disconnect()
        c.loop_stop()
        self._client = None
