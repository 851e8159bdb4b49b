"""serve --opcua with a real asyncua client on loopback: the address space of
docs/integration.md, node values equal to the last ZeroMQ result of each camera, a subscription
to Seq that always reads one consistent result, ReloadCalibration, and user/password access that
refuses anonymous sessions."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("asyncua")
pytest.importorskip("zmq")

from outputs_peers import free_port  # noqa: E402
from test_runtime_service import Harness  # noqa: E402

from edge_runtime.config import ServiceError  # noqa: E402

CAMERA_NODES = ("Seq", "Verdict", "Pass", "Score", "Regions", "ErrorCode", "Product", "LatencyMs",
                "Timestamp")


@pytest.fixture
def rig(demo_bundle):
    made = []

    def make(**cfg):
        h = Harness([(None, str(demo_bundle))], opcua=f"opc.tcp://127.0.0.1:{free_port()}", **cfg)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


async def _read_camera(client, ns: int, camera: str) -> dict:
    from asyncua import ua

    nodes = [client.get_node(ua.NodeId(f"RobisEdge.Cameras.{camera}.{n}", ns)) for n in CAMERA_NODES]
    values = await client.read_values(nodes)
    return dict(zip(CAMERA_NODES, values))


def _expected(head: dict, min_area: int) -> dict:
    return {"Seq": head["seq"], "Verdict": head["verdict"], "Pass": head["verdict"] == "pass",
            "Score": head["score"] or 0.0, "ErrorCode": (head["error"] or {}).get("code") or "",
            "Regions": sum(1 for r in head["regions"] if r["area_px"] >= min_area)}


def test_nodes_equal_the_last_result_and_seq_triggers_a_consistent_read(rig):
    from asyncua import Client, ua

    h = rig(queue_size=32)
    url = h.svc.endpoints["opcua"]
    min_area = h.svc.entries["demo-surface"].inspector.verdict_spec.min_area_px

    async def scenario():
        async with Client(url) as client:
            ns = await client.get_namespace_index("urn:robis-edge")
            root = client.get_node(ua.NodeId("RobisEdge", ns))
            names = {(await c.read_browse_name()).Name for c in await root.get_children()}
            assert {"Health", "FramesIn", "ResultsOut", "Dropped", "Errors", "Backend", "Cameras",
                    "ReloadCalibration"} <= names
            cams = client.get_node(ua.NodeId("RobisEdge.Cameras", ns))
            before = {(await c.read_browse_name()).Name for c in await cams.get_children()}
            assert before == {"probe"}  # created on a camera's first frame (the harness' probe)

            # A subscription on cam0's Seq: on every change, read the whole camera at once.
            seen: list[dict] = []
            pending: list[asyncio.Task] = []

            class Handler:
                def datachange_notification(self, node, val, data):
                    pending.append(asyncio.ensure_future(_read_camera(client, ns, "cam0")))

            sub = await client.create_subscription(20, Handler())
            first = True
            results, order = {}, []
            for seq in range(8):
                for cam in ("cam0", "cam1"):
                    h.send(h.frame(seq, seq, camera=cam))
                if first:
                    got = await asyncio.to_thread(h.recv_n, 2)
                    first = False
                    seq_node = client.get_node(ua.NodeId("RobisEdge.Cameras.cam0.Seq", ns))
                    for _ in range(100):  # the output thread creates the node just after ZeroMQ sent
                        try:
                            await seq_node.read_value()
                            break
                        except ua.UaStatusCodeError:
                            await asyncio.sleep(0.05)
                    await sub.subscribe_data_change(seq_node)
                else:
                    got = await asyncio.to_thread(h.recv_n, 2)
                for head, _ in got:
                    results[(head["camera"], head["seq"])] = head
                    order.append((head["camera"], head["seq"]))
                await asyncio.sleep(0.05)
            bmp = {"v": 1, "camera": "cam1", "seq": 99, "ts_ns": 1, "shape": [4, 4], "dtype": "uint8",
                   "encoding": "bmp"}
            h.send([b"frame.cam1", json.dumps(bmp).encode(), b"\0" * 16])
            err = (await asyncio.to_thread(h.recv))[0]
            assert err["error"]["code"] == "unsupported_encoding"
            for _ in range(100):  # until the output's thread has written the last results
                if (await _read_camera(client, ns, "cam1"))["Seq"] == 99:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            for t in pending:
                seen.append(await t)
            await sub.delete()
            assert len({r["Seq"] for r in seen}) >= 2
            for r in seen:  # each read on a Seq change is one result, whichever it was
                head = results[("cam0", r["Seq"])]
                exp = _expected(head, min_area)
                assert {k: r[k] for k in exp} == pytest.approx(exp)
                assert r["Product"] == "demo-surface"

            # After the stream: each camera's nodes hold its last result.
            last0 = [k for k in order if k[0] == "cam0"][-1]  # ZeroMQ order, not always the highest seq
            r0 = await _read_camera(client, ns, "cam0")
            assert {k: r0[k] for k in _expected(results[last0], min_area)} == pytest.approx(
                _expected(results[last0], min_area))
            assert r0["Product"] == "demo-surface" and r0["LatencyMs"] > 0
            assert abs(r0["Timestamp"].timestamp() - time.time()) < 60
            r1 = await _read_camera(client, ns, "cam1")
            assert r1["Seq"] == 99 and r1["Verdict"] == "error" and r1["Pass"] is False
            assert r1["ErrorCode"] == "unsupported_encoding"
            assert {(await c.read_browse_name()).Name for c in await cams.get_children()} == {"probe", "cam0",
                                                                                              "cam1"}
            dtypes = {n: await client.get_node(ua.NodeId(f"RobisEdge.Cameras.cam0.{n}", ns)).read_data_type()
                      for n in ("Seq", "Regions", "Score", "Pass", "Timestamp")}
            ids = ua.ObjectIds
            assert dtypes == {"Seq": ua.NodeId(ids.UInt64), "Regions": ua.NodeId(ids.Int32),
                              "Score": ua.NodeId(ids.Double), "Pass": ua.NodeId(ids.Boolean),
                              "Timestamp": ua.NodeId(ids.DateTime)}

            # Service counters, refreshed twice a second.
            await asyncio.sleep(0.8)
            stats = await asyncio.to_thread(h.control, {"cmd": "stats"})
            names = ("FramesIn", "ResultsOut", "Dropped", "Errors", "Health", "Backend")
            svc = dict(zip(names, await client.read_values(
                [client.get_node(ua.NodeId(f"RobisEdge.{n}", ns)) for n in names])))
            assert svc["FramesIn"] == stats["frames_in"] and svc["ResultsOut"] == stats["frames_out"]
            assert svc["Errors"] == sum(stats["errors"].values()) and svc["Dropped"] == stats["dropped"]
            assert svc["Health"] == "ok" and "CPUExecutionProvider" in svc["Backend"]

            # A client cannot write the results.
            with pytest.raises(ua.UaStatusCodeError):
                await client.get_node(ua.NodeId("RobisEdge.Cameras.cam0.Pass", ns)).write_value(True)

            # ReloadCalibration does what the control socket's reload does.
            reply = await root.call_method(ua.NodeId("RobisEdge.ReloadCalibration", ns))
            assert json.loads(reply) == await asyncio.to_thread(h.control, {"cmd": "reload"})

    asyncio.run(scenario())
    s = h.control({"cmd": "stats"})["outputs"]["opcua"]
    assert s["connected"] is True and s["dropped"] == 0 and s["cameras"] == 3


def test_users_file_requires_a_password_and_refuses_anonymous(rig, tmp_path):
    from asyncua import Client, ua

    users = tmp_path / "users"
    users.write_text("# operators\nplc:s3cret\n")
    users.chmod(0o600)
    h = rig(opcua_users=str(users))
    url = h.svc.endpoints["opcua"]

    async def scenario():
        with pytest.raises(ua.UaStatusCodeError):
            async with Client(url) as client:  # anonymous
                await client.get_namespace_index("urn:robis-edge")
        bad = Client(url)
        bad.set_user("plc")
        bad.set_password("wrong")
        with pytest.raises(ua.UaStatusCodeError):
            async with bad:
                pass
        good = Client(url)
        good.set_user("plc")
        good.set_password("s3cret")
        async with good:
            ns = await good.get_namespace_index("urn:robis-edge")
            assert await good.get_node(ua.NodeId("RobisEdge.Health", ns)).read_value() in ("ok", "degraded")

    asyncio.run(scenario())


def test_bad_opcua_options_are_one_clear_error(demo_bundle, tmp_path):
    from edge_runtime.config import ServiceConfig
    from edge_runtime.service import Service

    def start(**kw):
        Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                              output="tcp://127.0.0.1:*", backend="ort-cpu", **kw)).start()

    with pytest.raises(ServiceError, match="--allow-remote"):
        start(opcua="opc.tcp://0.0.0.0:4840")
    with pytest.raises(ServiceError, match="opc.tcp://HOST:PORT"):
        start(opcua="http://127.0.0.1:4840")
    (tmp_path / "u").write_text("nobody\n")
    with pytest.raises(ServiceError, match="user:password"):
        start(opcua=f"opc.tcp://127.0.0.1:{free_port()}", opcua_users=str(tmp_path / "u"))
    with pytest.raises(ServiceError, match="go together"):
        start(opcua=f"opc.tcp://127.0.0.1:{free_port()}", opcua_cert=str(tmp_path / "c.der"))
    with pytest.raises(ServiceError, match="needs --opcua-cert"):
        start(opcua=f"opc.tcp://127.0.0.1:{free_port()}", opcua_trust=str(tmp_path))
    import socket

    with socket.socket() as busy:  # the port is taken: serve does not start, and says why
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ServiceError, match="cannot serve OPC UA"):
            start(opcua=f"opc.tcp://127.0.0.1:{busy.getsockname()[1]}")


def test_console_script_prints_one_line_for_bad_output_options(demo_bundle, capsys):
    from edge_runtime.cli import main

    for argv, words in ((["--http", "nonsense"], "--http 'nonsense': expected HOST:PORT"),
                        (["--mqtt", "tcp://127.0.0.1:1883"], "expected mqtt://HOST:PORT"),
                        (["--mqtt", "mqtt://127.0.0.1:1", "--mqtt-prefix", "a/#"], "--mqtt-prefix"),
                        (["--opcua", "opc.tcp://10.1.2.3:4840"], "--allow-remote"),
                        (["--http", "127.0.0.1:0", "--metrics-port", "0"], "alias of --http"),
                        (["--output-queue", "0", "--http", "127.0.0.1:0"], "--output-queue")):
        rc = main(["serve", "--bundle", str(demo_bundle), "--input", "tcp://127.0.0.1:1", "--output",
                   "tcp://127.0.0.1:*", "--backend", "ort-cpu", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("robis-edge serve: error: ") and words in err[-1], (argv, err)


def _certificate(folder, name: str, uri: str, server: bool):
    """A self-signed OPC UA application certificate (DER) and its key (PEM), by asyncua's generator."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")], use)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def test_certificate_offers_only_encrypted_endpoints_and_trust_refuses_strangers(rig, tmp_path):
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    from edge_runtime.outputs.opcua import APPLICATION_URI

    server_cert, server_key = _certificate(tmp_path, "serve", APPLICATION_URI, server=True)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    plc_cert, plc_key = _certificate(trusted, "plc", "urn:example:plc", server=False)
    plc_key = plc_key.rename(tmp_path / "plc.pem")
    (tmp_path / "other").mkdir()
    other_cert, other_key = _certificate(tmp_path / "other", "other", "urn:example:other", server=False)
    h = rig(opcua_cert=str(server_cert), opcua_key=str(server_key), opcua_trust=str(trusted))
    url = h.svc.endpoints["opcua"]

    async def secure(cert, key) -> Client:
        c = Client(url)
        c.application_uri = "urn:example:plc" if cert == plc_cert else "urn:example:other"
        await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                             server_certificate=str(server_cert), mode=ua.MessageSecurityMode.SignAndEncrypt)
        return c

    async def scenario():
        endpoints = await Client(url).connect_and_get_server_endpoints()  # no session needed
        assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.Sign,
                                                       ua.MessageSecurityMode.SignAndEncrypt}
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            async with Client(url):  # an unencrypted client finds no endpoint
                pass
        client = await secure(plc_cert, plc_key)
        async with client:
            ns = await client.get_namespace_index("urn:robis-edge")
            assert await client.get_node(ua.NodeId("RobisEdge.Health", ns)).read_value() in ("ok", "degraded")
        stranger = await secure(other_cert, other_key)
        with pytest.raises(Exception):  # noqa: B017 - refused at the secure channel, as asyncua reports it
            async with stranger:
                await stranger.get_namespace_index("urn:robis-edge")

    asyncio.run(scenario())


def test_a_stalled_opcua_client_does_not_delay_zeromq(rig):
    """A client subscribed to every camera variable whose event loop then freezes, and a raw TCP
    peer that opens a connection and never speaks: ZeroMQ results keep coming, the nodes keep up."""
    import socket
    import threading

    from asyncua import Client, ua

    h = rig(queue_size=32)
    url = h.svc.endpoints["opcua"]
    host, port = url[len("opc.tcp://"):].rsplit(":", 1)
    h.send(h.frame(0, 0))
    h.recv()
    subscribed, release = threading.Event(), threading.Event()

    def frozen_client():
        async def run():
            async with Client(url) as client:
                ns = await client.get_namespace_index("urn:robis-edge")

                class Sink:
                    def datachange_notification(self, node, val, data):
                        pass

                sub = await client.create_subscription(10, Sink())
                nodes = [client.get_node(ua.NodeId(f"RobisEdge.Cameras.cam0.{name}", ns))
                         for name in CAMERA_NODES]
                for _ in range(100):  # created by the output's thread just after ZeroMQ sent
                    try:
                        await nodes[-1].read_value()
                        break
                    except ua.UaStatusCodeError:
                        await asyncio.sleep(0.05)
                await sub.subscribe_data_change(nodes)
                subscribed.set()
                release.wait(30)  # blocks this client's event loop: it reads nothing more

        asyncio.run(run())

    t = threading.Thread(target=frozen_client, daemon=True)
    t.start()
    mute = socket.create_connection((host, int(port)))
    try:
        assert subscribed.wait(30)
        n = 30
        for seq in range(1, n + 1):
            h.send(h.frame(seq, seq))
        got = h.recv_n(n, timeout=30)
        assert sorted(r[0]["seq"] for r in got) == list(range(1, n + 1))

        async def read_seq():
            async with Client(url) as client:
                ns = await client.get_namespace_index("urn:robis-edge")
                return await client.get_node(ua.NodeId("RobisEdge.Cameras.cam0.Seq", ns)).read_value()

        # Two workers may finish frames out of order; the nodes hold the newest frame's result
        # (by arrival at serve: here the highest seq), never an older one published after it.
        last = n
        deadline = time.monotonic() + 10
        while asyncio.run(read_seq()) != last and time.monotonic() < deadline:
            time.sleep(0.1)
        assert asyncio.run(read_seq()) == last
        s = h.control({"cmd": "stats"})["outputs"]["opcua"]
        assert s["dropped"] == 0 and s["failed"] == 0 and not s["stalled"]
    finally:
        release.set()
        mute.close()
        t.join(10)
