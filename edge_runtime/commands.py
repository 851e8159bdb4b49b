"""The runtime's commands: ``robis-edge serve`` and ``robis-edge camera`` (docs/protocol.md).

Argument definitions only import the standard library; pyzmq, numpy and the SDK load when a
command runs. ``python -m edge_runtime.commands serve ...`` runs them without the console script.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sdk import options as opt
from sdk.vocabulary import (
    BACKEND_HELP,
    MQTT_DEFAULT_PREFIX,
    OPCUA_NAMESPACE,
    REFINE_MODES,
    SCENES,
    STREAMS_HELP,
)

DEFAULT_INPUT = "tcp://127.0.0.1:5555"  # the camera's PUB (robis-edge camera --output default)
DEFAULT_OUTPUT = "tcp://127.0.0.1:5556"  # serve's results
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"  # suggested --control address (no default: optional)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``camera`` and ``keys`` to the top-level parser."""
    p = sub.add_parser("serve", help="subscribe to camera frames, publish one result per frame (ZeroMQ)",
                       description="Subscribes to frames (protocol v1, docs/protocol.md), runs the bundle "
                       "chosen by each frame's 'product' (default: the first --bundle) and publishes one "
                       "result per frame: verdict, score, regions, PNG mask, timings. Bad input yields an "
                       "'error' result and the service goes on. SIGTERM/SIGINT: finish the frames already "
                       "received, publish their results, exit 0.")
    p.add_argument("--bundle", action="append", required=True, metavar="[PRODUCT=]PATH",
                   help="a bundle, optionally under a product name (repeat for several products; the "
                   "first is the default for frames without 'product')")
    p.add_argument("--input", default=DEFAULT_INPUT, metavar="ADDR",
                   help=f"where the camera publishes (connected to; default {DEFAULT_INPUT})")
    p.add_argument("--input-mode", choices=("sub", "pull"), default="sub",
                   help="sub: subscribe to a PUB camera (default); pull: share a PUSH stream between "
                   "several serve processes")
    p.add_argument("--output", default=DEFAULT_OUTPUT, metavar="ADDR",
                   help=f"where results are published (bound; default {DEFAULT_OUTPUT})")
    p.add_argument("--control", metavar="ADDR", help="REP socket for health/stats/reload (bound)")
    p.add_argument("--workers", type=opt.positive_int, default=2,
                   help="pipeline threads (default 2): decoding and post-processing of one frame "
                   "overlap inference of another")
    p.add_argument("--queue-size", type=opt.positive_int, default=8,
                   help="frames waiting for a worker (default 8)")
    p.add_argument("--overload", choices=("queue", "latest"), default="queue",
                   help="when frames come faster than they are inspected: 'queue' drops the oldest "
                   "waiting frame when the queue is full (default); 'latest' also replaces a camera's "
                   "waiting frame by its newest. Every dropped frame gets an 'overloaded' result")
    p.add_argument("--max-payload-mb", type=opt.positive_float, default=128.0,
                   help="largest accepted payload, and largest decoded PNG/JPEG in megapixels (default 128)")
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--threads", type=opt.positive_int, help="ONNX Runtime intra-op threads per bundle")
    p.add_argument("--streams", type=opt.positive_int, help=STREAMS_HELP + " (per bundle)")
    p.add_argument("--mask-scale", type=opt.mask_scale,
                   help="scale of the published masks (default: the map scale, 1/4 for RoBiS)")
    p.add_argument("--refine", choices=REFINE_MODES,
                   help="mask refinement for every bundle: none, sam (SAM-Finer) or ttt (TTT4AS; needs the "
                   "features output) (default: as each bundle says)")
    p.add_argument("--drain-timeout", type=opt.non_negative_float, default=30.0,
                   help="seconds to finish in-flight frames on SIGTERM/SIGINT (default 30)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding --output/--control/--http/--opcua/--metrics-host to non-loopback "
                   "addresses (by default serve refuses: only this host can reach it)")
    p.add_argument("--record", metavar="DIR", type=opt.output_dir,
                   help="record frames (PNG), masks (PNG) and result headers (JSON) of chosen results to "
                   "DIR, written by a separate thread (never slows the pipeline; dropped and counted "
                   "when it falls behind)")
    p.add_argument("--record-quota-mb", type=opt.positive_float, default=1024.0,
                   help="the oldest records are deleted to keep DIR under this size (default 1024)")
    p.add_argument("--record-what", choices=("fail", "error", "all"), default="fail",
                   help="fail: every result that is not a pass (fail and error; default); error: errors "
                   "only; all: every result")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="HTTP output (docs/integration.md): the operators' live page /, /api/stats, "
                   "/api/cameras, /api/cameras/<camera>/latest.jpg and Prometheus /metrics (port 0: any "
                   "free port)")
    p.add_argument("--metrics-port", type=opt.port, metavar="N",
                   help="alias of --http METRICS_HOST:N (the same server, Prometheus on /metrics)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--mqtt", metavar="mqtt://HOST:PORT",
                   help="publish every result to an MQTT broker: <prefix>/<camera>/result (QoS 1) and a "
                   "retained <prefix>/status online/offline with a last will; reconnects with back-off, "
                   "drops and counts results while the broker is away (needs the integration extra)")
    p.add_argument("--mqtt-prefix", default=MQTT_DEFAULT_PREFIX, metavar="PREFIX",
                   help=f"first topic levels of --mqtt (default {MQTT_DEFAULT_PREFIX})")
    p.add_argument("--opcua", metavar="opc.tcp://HOST:PORT",
                   help=f"OPC UA server (namespace {OPCUA_NAMESPACE}): service counters, one object per "
                   "camera with the latest result (Seq written last), method ReloadCalibration (needs the "
                   "integration extra)")
    p.add_argument("--opcua-users", metavar="FILE",
                   help="OPC UA: require a user name and password from FILE (user:password lines, keep it "
                   "mode 0600); anonymous sessions are refused")
    p.add_argument("--opcua-cert", metavar="FILE",
                   help="OPC UA: the server certificate (DER or PEM); with --opcua-key only the encrypted "
                   "Basic256Sha256 Sign and SignAndEncrypt endpoints are offered")
    p.add_argument("--opcua-key", metavar="FILE", help="OPC UA: the private key of --opcua-cert (PEM)")
    p.add_argument("--opcua-trust", metavar="DIR",
                   help="OPC UA, with --opcua-cert: accept only the client certificates (DER or PEM) in DIR; "
                   "without it any client certificate is accepted (encryption only)")
    p.add_argument("--output-queue", type=opt.positive_int, default=64, metavar="N",
                   help="updates waiting per output (OPC UA, MQTT, HTTP) before the oldest is dropped and "
                   "counted (default 64)")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="CURVE: serve's key pair (NAME.key_secret from robis-edge keys); encrypts and "
                   "authenticates every socket (input, output, control), serve being the CURVE server")
    p.add_argument("--curve-allow", metavar="DIR",
                   help="CURVE: folder of the client public keys (*.key) allowed to connect (cameras, "
                   "subscribers, control clients); others are refused and counted (stats.auth_refused). "
                   "Without it any client key is accepted (encryption only)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("camera", help="camera simulator: publish frames from a folder or synthetic parts",
                       description="Publishes protocol-v1 frames (docs/protocol.md) from a folder of images "
                       "or from synthetic surfaces with defects. --truth writes ground_truth.jsonl (seq → "
                       "name, defective, mask) and the synthetic defect masks.")
    p.add_argument("--output", default=DEFAULT_INPUT, metavar="ADDR",
                   help=f"address to bind (default {DEFAULT_INPUT})")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", type=opt.existing_dir, help="folder of images (any nesting)")
    src.add_argument("--synthetic", action="store_true", help="synthetic frames (see --scene)")
    p.add_argument("--scene", choices=SCENES, default="surface",
                   help="synthetic: 'surface' (textured gray surfaces, default) or 'sheet' (the brushed "
                   "sheet of the INP-Former demo bundle, examples/demo/bundle, 1892x1432)")
    p.add_argument("--fps", type=opt.non_negative_float, default=0.0,
                   help="frames per second (default 0: as fast as possible)")
    p.add_argument("--encoding", choices=("raw", "png", "jpeg"), default="raw")
    p.add_argument("--count", type=opt.positive_int,
                   help="frames to send (default: every file once / 20 synthetic)")
    p.add_argument("--camera", default="cam0", help="camera name (topic frame.<camera>)")
    p.add_argument("--product", help="'product' header field (which bundle serve uses)")
    p.add_argument("--truth", type=opt.output_dir, help="folder for ground_truth.jsonl and masks")
    p.add_argument("--mode", choices=("pub", "push"), default="pub",
                   help="pub (default; for serve --input-mode sub) or push (for --input-mode pull)")
    p.add_argument("--loop", action="store_true",
                   help="folder: start again after the last file (with --count)")
    p.add_argument("--width", type=opt.integer(minimum=16, maximum=65535), default=1432,
                   help="synthetic frame width")
    p.add_argument("--height", type=opt.integer(minimum=16, maximum=65535), default=972,
                   help="synthetic frame height")
    p.add_argument("--defect-rate", type=opt.fraction, default=0.5,
                   help="synthetic: share of defective frames")
    p.add_argument("--seed", type=opt.non_negative_int, default=0, help="synthetic: random seed")
    p.add_argument("--pool", type=opt.positive_int, default=32,
                   help="synthetic: distinct frames, generated first and cycled")
    p.add_argument("--wait", type=opt.non_negative_float, default=10.0,
                   help="pub: seconds to wait for a subscriber before the first frame (default 10)")
    p.add_argument("--curve-secret", type=opt.existing_file, metavar="FILE",
                   help="CURVE: this camera's key pair (its public key must be in serve's --curve-allow)")
    p.add_argument("--curve-server-key", type=opt.existing_file, metavar="FILE",
                   help="CURVE: serve's public key (.key)")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("keys", help="generate a CURVE key pair for serve, a camera or a subscriber",
                       description="Writes DIR/NAME.key (public key: hand it to peers; put client keys "
                       "in serve's --curve-allow folder) and DIR/NAME.key_secret (public + secret key, "
                       "mode 0600: keep it on its machine).")
    p.add_argument("--out", required=True, type=opt.output_dir, metavar="DIR",
                   help="folder for the key files")
    p.add_argument("--name", default="server", help="file name stem (default 'server')")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=cmd_keys)


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import ServiceConfig, parse_bundle_spec
    from .service import Service

    _logging(args.log_level)
    cfg = ServiceConfig(bundles=[parse_bundle_spec(b) for b in args.bundle], input=args.input,
                        output=args.output, control=args.control, input_mode=args.input_mode,
                        workers=args.workers, queue_size=args.queue_size, policy=args.overload,
                        max_payload_mb=args.max_payload_mb, backend=args.backend, threads=args.threads,
                        streams=args.streams,
                        mask_scale=args.mask_scale, refine=args.refine, drain_timeout_s=args.drain_timeout,
                        allow_remote=args.allow_remote, record_dir=args.record and str(args.record),
                        record_quota_mb=args.record_quota_mb, record_what=args.record_what,
                        metrics_port=args.metrics_port, metrics_host=args.metrics_host, http=args.http,
                        mqtt=args.mqtt, mqtt_prefix=args.mqtt_prefix, opcua=args.opcua,
                        opcua_users=args.opcua_users, opcua_cert=args.opcua_cert, opcua_key=args.opcua_key,
                        opcua_trust=args.opcua_trust, output_queue=args.output_queue,
                        curve_secret=args.curve_secret, curve_allow=args.curve_allow)
    service = Service(cfg).start()
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()
        for s in (signal.SIGTERM, signal.SIGINT):  # a second signal stops at once
            signal.signal(s, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"serve: ready output={service.endpoints['output']} control={service.endpoints.get('control')}"
              f" metrics={service.endpoints.get('metrics')}"
              + "".join(f" {k}={service.endpoints[k]}" for k in ("http", "mqtt", "opcua")
                        if k in service.endpoints),
              file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        logging.getLogger("robis_edge.serve").info("signal %s received", received[0])
        drained = service.stop()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0 if drained else 1


def cmd_camera(args: argparse.Namespace) -> int:
    import signal
    import threading

    from sdk.errors import InputError

    from .camera import CameraConfig, CameraSimulator

    _logging("INFO")
    if bool(args.curve_secret) != bool(args.curve_server_key):
        raise InputError("--curve-secret and --curve-server-key go together")
    try:
        cam = CameraSimulator(CameraConfig(
            output=args.output, source=args.source, synthetic=args.synthetic, scene=args.scene, fps=args.fps,
            encoding=args.encoding, count=args.count, camera=args.camera, product=args.product,
            truth=args.truth, mode=args.mode, width=args.width, height=args.height,
            defect_rate=args.defect_rate, seed=args.seed, pool=args.pool, wait_s=args.wait, loop=args.loop,
            curve_secret=args.curve_secret, curve_server_key=args.curve_server_key))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    # Before any socket or signal handler: a folder without a readable image fails at once, and
    # generating the synthetic pool can still be interrupted by the default SIGTERM/SIGINT.
    cam.prepare()
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        endpoint = cam.bind()
        print(f"camera: publishing on {endpoint}", file=sys.stderr, flush=True)
        summary = cam.run(stop)
    finally:
        cam.close(linger_ms=0 if stop.is_set() else None)
        for s, h in old.items():
            signal.signal(s, h)
    print(f"camera {args.camera}: sent {summary['frames']} frame(s) in {summary['seconds']} s "
          f"({summary['fps']} frames/s) on {summary['endpoint']}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .security import create_keys

    public, secret = create_keys(args.out, args.name, force=args.force)
    print(f"public key: {public}\nkey pair:   {secret} (keep it secret)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``serve``, ``camera`` or ``keys`` without the console script (same behaviour)."""
    from sdk.options import OneLineParser

    parser = OneLineParser(prog="python -m edge_runtime.commands")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    from edge_runtime.cli import dispatch

    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
