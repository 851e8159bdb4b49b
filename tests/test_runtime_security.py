"""CURVE security of ``robis-edge serve`` on loopback: ``robis-edge keys``, an allow-listed client
gets results and control answers, an unknown key is refused and counted."""

from __future__ import annotations

import json
import shutil
import stat
import time

import pytest

zmq = pytest.importorskip("zmq")
if not zmq.has("curve"):  # pragma: no cover
    pytest.skip("libzmq without CURVE", allow_module_level=True)

from edge_runtime import commands  # noqa: E402
from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.camera import CameraConfig, CameraSimulator  # noqa: E402
from edge_runtime.config import ServiceConfig, ServiceError  # noqa: E402
from edge_runtime.security import apply_client, load_keypair, load_public  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    for name in ("server", "cam", "bad"):
        assert commands.main(["keys", "--out", str(d), "--name", name]) == 0
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(d / "cam.key", allow / "cam.key")
    return d, allow


def test_keys_command_writes_a_key_pair_and_refuses_to_overwrite(keys, capsys):
    d, _ = keys
    public, secret = load_keypair(d / "server.key_secret")
    assert len(public) == len(secret) == 40 and load_public(d / "server.key") == public
    assert stat.S_IMODE((d / "server.key_secret").stat().st_mode) == 0o600
    assert "secret-key" not in (d / "server.key").read_text()
    assert commands.main(["keys", "--out", str(d), "--name", "server"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert commands.main(["keys", "--out", str(d), "--name", "server", "--force"]) == 0
    assert load_keypair(d / "server.key_secret")[0] != public


def _client(ctx, kind, keyfile, server_key, endpoint):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if keyfile is not None:
        apply_client(s, load_keypair(keyfile), server_key)
    return s


def test_curve_allows_listed_clients_and_refuses_and_counts_others(keys, demo_bundle):
    d, allow = keys
    server_key = load_public(d / "server.key")
    frames = [f.image for f in make_frames(1, 160, 200, seed=5)]
    with zmq.Context() as ctx:
        cam = _client(ctx, zmq.PUB, d / "cam.key_secret", server_key, None)
        cam.bind("tcp://127.0.0.1:*")
        svc = Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input=cam.getsockopt_string(
            zmq.LAST_ENDPOINT), output="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", backend="ort-cpu",
            threads=1, curve_secret=str(d / "server.key_secret"), curve_allow=str(allow))).start()
        socks = [cam]
        try:
            good = _client(ctx, zmq.SUB, d / "cam.key_secret", server_key, None)
            bad = _client(ctx, zmq.SUB, d / "bad.key_secret", server_key, None)
            plain = _client(ctx, zmq.SUB, None, None, None)
            socks += [good, bad, plain]
            for s in (good, bad, plain):
                s.connect(svc.endpoints["output"])
                s.setsockopt(zmq.SUBSCRIBE, b"result.")
            deadline = time.monotonic() + 8
            while not good.poll(100):
                assert time.monotonic() < deadline, "no result reached the allowed subscriber"
                cam.send_multipart([b"frame.probe", b"probe", b""])
            while good.poll(200):
                good.recv_multipart()
            cam.send_multipart(P.encode_frame("cam0", 1, frames[0]))
            assert good.poll(5000)
            head, _ = P.decode_result(good.recv_multipart())
            assert head["seq"] == 1 and head["verdict"] in ("pass", "fail")
            assert not bad.poll(300) and not plain.poll(0)  # nothing for the others
            assert svc.stats.auth_refused >= 1  # the bad key (the plain client fails before ZAP)

            req = _client(ctx, zmq.REQ, d / "cam.key_secret", server_key, None)
            socks.append(req)
            req.setsockopt(zmq.RCVTIMEO, 5000)
            req.connect(svc.endpoints["control"])
            req.send(json.dumps({"cmd": "stats"}).encode())
            stats = json.loads(req.recv())
            assert stats["ok"] and stats["auth_refused"] >= 1

            bad_req = _client(ctx, zmq.REQ, d / "bad.key_secret", server_key, None)
            socks.append(bad_req)
            n = svc.stats.auth_refused
            bad_req.connect(svc.endpoints["control"])
            bad_req.send(json.dumps({"cmd": "health"}).encode())
            assert not bad_req.poll(500)  # never answered
            assert svc.stats.auth_refused > n
        finally:
            svc.stop(timeout=5)
            for s in socks:
                s.close(0)


def test_curve_configuration_errors(keys, demo_bundle, tmp_path):
    d, allow = keys

    def start(**kw):
        Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                              output="tcp://127.0.0.1:*", backend="ort-cpu", **kw)).start()

    with pytest.raises(ServiceError, match="needs --curve-secret"):
        start(curve_allow=str(allow))
    with pytest.raises(ServiceError, match="no secret key"):
        start(curve_secret=str(d / "server.key"), curve_allow=str(allow))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServiceError, match="no public key files"):
        start(curve_secret=str(d / "server.key_secret"), curve_allow=str(tmp_path / "empty"))


def test_camera_simulator_with_curve_feeds_a_curve_service(keys, demo_bundle):
    import threading

    d, allow = keys
    server_key = load_public(d / "server.key")
    cam = CameraSimulator(CameraConfig(output="tcp://127.0.0.1:*", synthetic=True, count=3, width=200,
                                       height=160, pool=3, wait_s=5, curve_secret=d / "cam.key_secret",
                                       curve_server_key=d / "server.key"))
    endpoint = cam.bind()
    svc = Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input=endpoint, output="tcp://127.0.0.1:*",
                                backend="ort-cpu", threads=1, curve_secret=str(d / "server.key_secret"),
                                curve_allow=str(allow))).start()
    with zmq.Context() as ctx:
        sub = _client(ctx, zmq.SUB, d / "cam.key_secret", server_key, None)
        try:
            sub.connect(svc.endpoints["output"])
            sub.setsockopt(zmq.SUBSCRIBE, b"result.")
            time.sleep(0.3)  # the subscription travels before the camera's first frame
            t = threading.Thread(target=cam.run, daemon=True)
            t.start()
            seqs = []
            deadline = time.monotonic() + 8
            while len(seqs) < 3 and time.monotonic() < deadline:
                if sub.poll(100):
                    seqs.append(P.decode_result(sub.recv_multipart())[0]["seq"])
            t.join(5)
            assert sorted(seqs) == [0, 1, 2] and svc.stats.auth_refused == 0
        finally:
            svc.stop(timeout=5)
            cam.close()
            sub.close(0)
