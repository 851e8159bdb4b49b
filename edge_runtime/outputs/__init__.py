"""The outputs of ``serve`` beyond ZeroMQ (docs/integration.md): OPC UA (``opcua.py``), MQTT
(``mqtt.py``) and HTTP (``http.py``, with the operators' page in ``page.py``), each on its own
thread behind a bounded drop-oldest queue (``base.py``). Each is imported only when its option is
given, so asyncua and paho-mqtt (the ``integration`` extra) are needed only then."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Output, Picture, Update

if TYPE_CHECKING:
    from ..service import Service

__all__ = ["Output", "Picture", "Update", "open_outputs"]


def open_outputs(service: Service) -> list[Output]:
    """The outputs ``service.config`` asks for, made (bound, not started); ServiceError when one
    cannot be, after closing those already made."""
    cfg = service.config
    outs: list[Output] = []
    try:
        http = cfg.http_address()
        if http is not None:
            from ..control import stats_reply
            from ..metrics import render
            from .http import HttpOutput

            outs.append(HttpOutput(http[0], http[1], lambda: stats_reply(service.snapshot()),
                                   lambda: render(service.snapshot()), queue_size=cfg.output_queue))
        if cfg.mqtt:
            from .mqtt import MqttOutput

            outs.append(MqttOutput(cfg.mqtt, cfg.mqtt_prefix, queue_size=cfg.output_queue))
        if cfg.opcua:
            from .opcua import OpcUaOutput

            outs.append(OpcUaOutput(cfg.opcua, service.snapshot, service.reload, queue_size=cfg.output_queue,
                                    users=cfg.opcua_users, cert=cfg.opcua_cert, key=cfg.opcua_key,
                                    trust=cfg.opcua_trust))
    except BaseException:
        for out in outs:
            out.close()
        raise
    return outs
