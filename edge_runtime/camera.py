"""``robis-edge camera``: a camera simulator that speaks the frame protocol (docs/protocol.md).

Frames come from a folder of images or from ``sdk.tools.synthetic`` (with ground truth). In ``pub``
mode it binds an XPUB socket (PUB-compatible for subscribers) and waits until a subscriber for
``frame.`` is there before the first frame, so that no frame is lost to ZeroMQ's slow-joiner
effect; in ``push`` mode it binds PUSH, and sending waits for a connected worker.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import InputError
from sdk.vocabulary import is_valid_name

from . import protocol as P

log = logging.getLogger("robis_edge.camera")


@dataclass
class CameraConfig:
    output: str
    source: Path | None = None  # folder of images; None with synthetic=True
    synthetic: bool = False
    scene: str = "surface"  # synthetic: one of sdk.tools.synthetic.SCENES
    fps: float = 0.0  # 0: as fast as the socket takes them
    encoding: str = "raw"
    count: int | None = None  # default: every file once, or 20 synthetic frames
    camera: str = "cam0"
    product: str | None = None
    truth: Path | None = None
    mode: str = "pub"  # pub | push
    width: int = 1432
    height: int = 972
    defect_rate: float = 0.5
    seed: int = 0
    pool: int = 32  # distinct synthetic frames, generated up front and cycled
    wait_s: float = 10.0  # pub: how long to wait for a subscriber before sending anyway
    loop: bool = False  # folder: start again after the last file until --count
    curve_secret: Path | None = None  # this camera's key pair (CURVE client), with curve_server_key
    curve_server_key: Path | None = None  # serve's public key


@dataclass
class SourceFrame:
    name: str
    image: np.ndarray
    color: str
    mask: np.ndarray | None = None  # ground-truth 0/255 mask, when known
    defective: bool | None = None


def _folder_truth(files: list[Path]) -> dict[Path, bool] | None:
    """MVTec layout: when some files lie in a folder named ``good``, the others are defective."""
    if not any(f.parent.name == "good" for f in files):
        return None
    return {f: f.parent.name != "good" for f in files}


def _check_numbers(cfg: CameraConfig) -> None:
    """Refuse settings that cannot describe a camera (``ValueError`` naming the option)."""
    checks = [("--fps", cfg.fps, math.isfinite(cfg.fps) and cfg.fps >= 0, "a number >= 0 (0: no pacing)"),
              ("--count", cfg.count, cfg.count is None or cfg.count >= 1, "at least 1"),
              ("--width", cfg.width, cfg.width >= 1, "at least 1 pixel"),
              ("--height", cfg.height, cfg.height >= 1, "at least 1 pixel"),
              ("--defect-rate", cfg.defect_rate, 0.0 <= cfg.defect_rate <= 1.0, "a share from 0 to 1"),
              ("--pool", cfg.pool, cfg.pool >= 1, "at least 1"),
              ("--wait", cfg.wait_s, math.isfinite(cfg.wait_s) and cfg.wait_s >= 0, "seconds >= 0")]
    for name, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {value}")


class CameraSimulator:
    """``bind()`` then ``run()``; ``frames()`` yields what would be sent, with ground truth."""

    def __init__(self, config: CameraConfig) -> None:
        cfg = config
        if cfg.synthetic == (cfg.source is not None):
            raise ValueError("give exactly one of a source folder or synthetic=True")
        if cfg.synthetic:
            from sdk.tools.synthetic import SCENES

            if cfg.scene not in SCENES:
                raise ValueError(f"scene must be one of {SCENES}, got {cfg.scene!r}")
        if cfg.encoding not in P.ENCODINGS:
            raise ValueError(f"encoding must be one of {P.ENCODINGS}")
        if cfg.mode not in ("pub", "push"):
            raise ValueError("mode must be pub or push")
        if not is_valid_name(cfg.camera):
            raise ValueError(f"invalid camera name {cfg.camera!r}")
        if cfg.product is not None and not is_valid_name(cfg.product):
            raise ValueError(f"invalid product name {cfg.product!r} (printable ASCII without spaces)")
        _check_numbers(cfg)
        self.config = cfg
        self.endpoint: str | None = None
        self._ctx = None
        self._sock = None
        self._pool: list[SourceFrame] | None = None
        self._file_list: list[Path] | None = None
        self._unreadable: set[Path] = set()
        self.sent = 0

    # -- frames -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Generate the synthetic pool now (otherwise the first ``frames()`` call does)."""
        cfg = self.config
        if cfg.synthetic and self._pool is None:
            from sdk.tools.synthetic import make_scene_frames

            n = max(1, min(cfg.pool, self.total()))
            made = make_scene_frames(cfg.scene, n, cfg.height, cfg.width, cfg.defect_rate, cfg.seed)
            self._pool = [SourceFrame(f.name, f.image, "gray", f.mask, f.defective) for f in made]
        self.check_source()

    def total(self) -> int:
        cfg = self.config
        if cfg.count is not None:
            return cfg.count
        if cfg.synthetic:
            return 20
        return len(self._files())

    def _files(self) -> list[Path]:
        from sdk.imageio import IMAGE_EXTS, find_files

        if self._file_list is None:
            self._file_list = find_files(self.config.source, IMAGE_EXTS)
        return self._file_list

    def check_source(self) -> None:
        """Fail now, before binding or waiting for a subscriber, when the folder is missing or
        holds no readable image (an ``InputError`` saying so). Reads files until the first one
        that decodes; unreadable ones are warned about once and skipped from then on."""
        if self.config.synthetic:
            return
        from sdk.imageio import IMAGE_EXTS

        files = self._files()
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {self.config.source}")
        skipped: list[str] = []
        for f in files:
            if self._read(f, skipped) is not None:
                for reason in skipped:
                    log.warning("skipping %s", reason)
                return
        raise InputError(f"none of the {len(files)} image file(s) under {self.config.source} can be "
                         f"read (first: {skipped[0]}); give a folder of readable images")

    def _read(self, f: Path, skipped: list[str] | None = None):
        """(image, colour) of a file, or None once it proved unreadable: warned once (or its reason
        appended to ``skipped``), then skipped without reading it again."""
        from sdk.imageio import read_image

        if f in self._unreadable:
            return None
        try:
            return read_image(f)
        except InputError as exc:
            self._unreadable.add(f)
            if skipped is None:
                log.warning("skipping %s", exc)
            else:
                skipped.append(str(exc))
            return None

    def frames(self, stop: threading.Event | None = None) -> Iterator[SourceFrame]:
        cfg = self.config
        total = self.total()
        if cfg.synthetic:
            self.prepare()
            for i in range(total):
                yield self._pool[i % len(self._pool)]
            return
        self.check_source()
        files = self._files()
        truth = _folder_truth(files)
        i = 0
        while i < total:
            sent_this_pass = 0
            for f in files:
                if i >= total or (stop is not None and stop.is_set()):
                    return
                img = self._read(f)
                if img is None:
                    continue
                rel = f.relative_to(cfg.source).with_suffix("").as_posix()
                yield SourceFrame(rel, img[0], img[1], None, None if truth is None else truth[f])
                i += 1
                sent_this_pass += 1
            if not cfg.loop and cfg.count is None:
                return
            if sent_this_pass == 0:  # every file became unreadable: never spin
                raise InputError(f"no readable image left under {cfg.source}")

    # -- sockets ------------------------------------------------------------------------
    def bind(self) -> str:
        import zmq

        self._ctx = zmq.Context()
        cfg = self.config
        if cfg.mode == "pub":
            self._sock = self._ctx.socket(zmq.XPUB)
        else:
            self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 16)
        self._sock.setsockopt(zmq.LINGER, 2000)
        if cfg.curve_secret or cfg.curve_server_key:
            from .security import apply_client, load_keypair, load_public

            if not (cfg.curve_secret and cfg.curve_server_key):
                raise InputError("--curve-secret and --curve-server-key go together")
            apply_client(self._sock, load_keypair(cfg.curve_secret), load_public(cfg.curve_server_key))
        try:
            self._sock.bind(cfg.output)
        except zmq.ZMQError as exc:
            raise InputError(f"--output {cfg.output}: cannot bind ({exc}); give a free tcp://HOST:PORT "
                             "or ipc:// address") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def _wait_subscriber(self, stop: threading.Event) -> bool:
        import zmq

        deadline = time.monotonic() + self.config.wait_s
        while time.monotonic() < deadline and not stop.is_set():
            if self._sock.poll(100, zmq.POLLIN):
                msg = self._sock.recv()
                topic = msg[1:]
                wanted = P.FRAME_PREFIX.startswith(topic) or topic.startswith(P.FRAME_PREFIX)
                if msg[:1] == b"\x01" and wanted:
                    return True
        return False

    def _send(self, parts: list[bytes], stop: threading.Event) -> bool:
        import zmq

        if self.config.mode == "pub":
            while self._sock.poll(0, zmq.POLLIN):  # keep reading (un)subscriptions
                self._sock.recv()
            self._sock.send_multipart(parts)
            return True
        while not stop.is_set():
            if self._sock.poll(100, zmq.POLLOUT):
                self._sock.send_multipart(parts)
                return True
        return False

    def run(self, stop: threading.Event | None = None, on_sent=None) -> dict:
        """Send every frame; returns a summary. ``on_sent(seq, frame)`` is called after each."""
        cfg = self.config
        stop = stop or threading.Event()
        if self._sock is None:
            self.bind()
        self.prepare()
        if cfg.mode == "pub" and not self._wait_subscriber(stop) and not stop.is_set():
            log.warning("no subscriber after %.1f s on %s: sending anyway", cfg.wait_s, self.endpoint)
        truth_log = None
        if cfg.truth is not None:
            cfg.truth.mkdir(parents=True, exist_ok=True)
            truth_log = open(cfg.truth / "ground_truth.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        written: set[str] = set()
        t0 = time.perf_counter()
        seq = 0
        try:
            for frame in self.frames(stop):
                if stop.is_set():
                    break
                if cfg.fps > 0:
                    delay = t0 + seq / cfg.fps - time.perf_counter()
                    if delay > 0 and stop.wait(delay):
                        break
                try:
                    parts = P.encode_frame(cfg.camera, seq, frame.image, color=frame.color,
                                           encoding=cfg.encoding, product=cfg.product)
                except ValueError as exc:  # e.g. a 16-bit image with --encoding jpeg
                    raise InputError(f"{frame.name}: cannot send it as {cfg.encoding}: {exc} (use "
                                     "--encoding png or raw)") from None
                if not self._send(parts, stop):
                    break
                if truth_log is not None:
                    mask_rel = None
                    if frame.mask is not None:
                        mask_rel = f"masks/{frame.name}.png"
                        if frame.name not in written:
                            from sdk.imageio import write_mask

                            write_mask(cfg.truth / mask_rel, frame.mask)
                            written.add(frame.name)
                    truth_log.write(json.dumps({"camera": cfg.camera, "seq": seq, "name": frame.name,
                                                "defective": frame.defective, "mask": mask_rel}) + "\n")
                    truth_log.flush()
                if on_sent is not None:
                    on_sent(seq, frame)
                seq += 1
                self.sent = seq
        finally:
            if truth_log is not None:
                truth_log.close()
        wall = time.perf_counter() - t0
        return {"frames": seq, "seconds": round(wall, 3), "fps": round(seq / wall, 2) if wall > 0 else None,
                "endpoint": self.endpoint}

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket; queued frames still leave for up to 2 s (``linger_ms``: 0 after a stop
        signal, so that stopping never waits for a peer that is not there)."""
        if self._sock is not None:
            if linger_ms is not None:
                self._sock.setsockopt(__import__("zmq").LINGER, linger_ms)
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
