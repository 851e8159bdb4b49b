"""``robis-edge serve --mqtt --opcua --http`` as a process, checked from docs/integration.md's names
only: every result on MQTT with the ZeroMQ verdict, the OPC UA nodes equal to the last result, the
page and the JSON readable; the broker killed, frames keep coming on ZeroMQ; serve killed hard,
the broker publishes the retained last will ``offline``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("asyncua")
pytest.importorskip("paho.mqtt")
zmq = pytest.importorskip("zmq")

from outputs_peers import Broker, Listener, free_port, wait_for  # noqa: E402
from test_runtime_service import FRAMES  # noqa: E402

from edge_runtime import protocol as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_serve_process_with_all_three_outputs(demo_bundle, tmp_path):
    from asyncua import Client

    broker = Broker(tmp_path).start()
    ctx = zmq.Context()
    cam = ctx.socket(zmq.PUB)
    cam.setsockopt(zmq.LINGER, 0)
    cam_port = cam.bind_to_random_port("tcp://127.0.0.1")
    out_port, http_port, opc_port = free_port(), free_port(), free_port()
    listener = Listener(broker.port, "plant/line1/#")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.commands", "serve", "--bundle", str(demo_bundle),
         "--input", f"tcp://127.0.0.1:{cam_port}", "--output", f"tcp://127.0.0.1:{out_port}",
         "--backend", "ort-cpu", "--threads", "1", "--queue-size", "32",
         "--mqtt", broker.url, "--mqtt-prefix", "plant/line1", "--opcua", f"opc.tcp://127.0.0.1:{opc_port}",
         "--http", f"127.0.0.1:{http_port}"], env=env, stderr=subprocess.PIPE, text=True)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        line = proc.stderr.readline()
        while line and "serve: ready" not in line:
            line = proc.stderr.readline()
        assert "serve: ready" in line and f"opcua=opc.tcp://127.0.0.1:{opc_port}" in line, line
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        sub.connect(f"tcp://127.0.0.1:{out_port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"result.")
        listener.wait(lambda m: m[0] == "plant/line1/status" and m[1] == b"online")
        # Probe until the subscription is live, then stream.
        for _ in range(100):
            cam.send_multipart([b"frame.probe", b"probe", b""])
            if sub.poll(100):
                break
        while sub.poll(300):
            sub.recv_multipart()
        zres = []
        for seq in range(10):
            cam.send_multipart(P.encode_frame("cam0", seq, FRAMES[seq % 2]))
        while len(zres) < 10 and sub.poll(10000):
            zres.append(P.decode_result(sub.recv_multipart())[0])
        assert sorted(r["seq"] for r in zres) == list(range(10))

        def on_mqtt():
            return {json.loads(p)["seq"]: json.loads(p) for t, p, _q, _r in list(listener.messages)
                    if t == "plant/line1/cam0/result"}

        wait_for(lambda: set(range(10)) <= set(on_mqtt()), what="every result on MQTT")
        mq = on_mqtt()
        for r in zres:
            assert mq[r["seq"]]["verdict"] == r["verdict"] and mq[r["seq"]]["score"] == r["score"]
        # OPC UA holds the newest frame's result (frames were sent in seq order), even when two
        # workers publish the one before it after it on ZeroMQ
        last = max(zres, key=lambda r: r["seq"])

        async def read_opcua():
            async with Client(f"opc.tcp://127.0.0.1:{opc_port}") as client:
                ns = await client.get_namespace_index("urn:robis-edge")
                names = ("Seq", "Verdict", "Pass", "Score", "ErrorCode")
                nodes = [client.get_node(f"ns={ns};s=RobisEdge.Cameras.cam0.{n}") for n in names]
                for _ in range(100):  # the OPC UA output runs on its own thread: let it catch up
                    values = dict(zip(names, await client.read_values(nodes)))
                    if values["Seq"] == last["seq"]:
                        break
                    await asyncio.sleep(0.05)
                return values

        node = asyncio.run(read_opcua())
        assert node == {"Seq": last["seq"], "Verdict": last["verdict"], "Pass": last["verdict"] == "pass",
                        "Score": last["score"], "ErrorCode": ""}
        base = f"http://127.0.0.1:{http_port}/"
        with urllib.request.urlopen(base, timeout=10) as r:
            assert r.status == 200 and b"camera cam0" in r.read()
        with urllib.request.urlopen(base + "api/stats", timeout=10) as r:
            stats = json.loads(r.read())
        assert stats["frames_out"] >= 10 and stats["outputs"]["mqtt"]["connected"] is True
        with urllib.request.urlopen(base + "api/cameras/cam0/latest.jpg", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"

        broker.kill()  # frames must keep coming on ZeroMQ
        got = []
        for seq in range(100, 110):
            cam.send_multipart(P.encode_frame("cam0", seq, FRAMES[seq % 2]))
        while len(got) < 10 and sub.poll(10000):
            got.append(P.decode_result(sub.recv_multipart())[0]["seq"])
        assert sorted(got) == list(range(100, 110))

        def mqtt_stats():
            with urllib.request.urlopen(base + "api/stats", timeout=10) as r:
                return json.loads(r.read())["outputs"]["mqtt"]

        wait_for(lambda: mqtt_stats()["dropped"] >= 1, what="drops counted")
        assert mqtt_stats()["connected"] is False

        broker.start()
        wait_for(lambda: mqtt_stats()["connected"], timeout=20, what="reconnected")
        will = Listener(broker.port, "plant/line1/status")
        try:
            will.wait(lambda m: m[1] == b"online")
            proc.send_signal(signal.SIGKILL)  # no clean shutdown: the broker sends the last will
            proc.wait(10)
            msg = will.wait(lambda m: m[1] == b"offline")[0]
            assert msg[0] == "plant/line1/status"
        finally:
            will.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        listener.close()
        broker.kill()
        sub.close(0)
        cam.close(0)
        ctx.term()
