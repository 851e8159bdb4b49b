"""Recording of frames, masks and result headers to a folder (``serve --record DIR``).

The hot path only calls :meth:`Recorder.offer`, which puts references (the decoded frame, the
result message) into a bounded queue and never blocks: when the queue is full the record is
dropped and counted. One daemon thread encodes the PNGs and writes the files. Each file is written
to a temporary name in the same folder and renamed into place, so a reader never sees a partial
file; the JSON header is written last and marks a complete record. After each record the oldest
records are deleted until the folder is under the quota (records found in the folder at start
count too).

Files of one record share a stem ``<UTC time>_<camera>_<seq>_<verdict>``:

- ``STEM.json``: ``{"result": <result header>, "frame_header": <frame header or null>, "files": [...]}``
- ``STEM.frame.png``: the frame as decoded (gray, or colour in standard RGB order; 8 or 16 bit),
  or ``STEM.frame.bin``: the raw payload when the frame could not be decoded
- ``STEM.mask.png``: the published mask (results with a verdict only)
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("robis_edge.record")

WHAT = ("fail", "error", "all")
_STOP = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # no dots: the stem ends at the first dot


def wanted(what: str, verdict: str) -> bool:
    """``fail``: every result that is not a pass (fail and error); ``error``: errors only; ``all``."""
    if what == "all":
        return True
    if what == "error":
        return verdict == "error"
    return verdict != "pass"


@dataclass
class _Record:
    result: list  # the result message (topic, header JSON, mask PNG)
    image: np.ndarray | None  # decoded frame, or None
    color: str | None
    frame_header: bytes | None  # the frame's header JSON as received
    payload: object | None  # the frame payload when it could not be decoded
    t: float


class Recorder:
    def __init__(self, folder: str | os.PathLike, quota_mb: float = 1024.0, what: str = "fail",
                 queue_size: int = 32, max_payload: int = 128 * 1024 * 1024) -> None:
        if what not in WHAT:
            raise ValueError(f"--record-what must be one of {', '.join(WHAT)}, got {what!r}")
        if quota_mb <= 0:
            raise ValueError("--record-quota-mb must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.quota = int(quota_mb * 1024 * 1024)
        self.what = what
        self.max_payload = max_payload
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.counts = {"recorded": 0, "dropped": 0, "failed": 0, "deleted": 0, "bytes": 0}
        self._records: collections.OrderedDict[str, int] = collections.OrderedDict()  # stem → bytes
        self._scan()
        self._thread = threading.Thread(target=self._run, name="serve-recorder", daemon=True)
        self._thread.start()

    # -- hot path --------------------------------------------------------------------------
    def offer(self, verdict: str, result: list, *, image=None, color: str | None = None,
              frame_parts: list | None = None) -> bool:
        """Queue a record if ``verdict`` is wanted. Never blocks; False when it was dropped."""
        if not wanted(self.what, verdict):
            return False
        fh = payload = None
        if frame_parts is not None and len(frame_parts) == 3:
            fh = bytes(frame_parts[1])[:65536]
            payload = frame_parts[2] if image is None else None
        try:
            self._q.put_nowait(_Record(result, image, color, fh, payload, time.time()))
            return True
        except queue.Full:
            with self._lock:
                self.counts["dropped"] += 1
            return False

    # -- bookkeeping -----------------------------------------------------------------------
    def _scan(self) -> None:
        """Account for records already in the folder (oldest first), and remove stale temporaries."""
        groups: dict[str, list] = {}
        for p in self.folder.iterdir():
            if not p.is_file():
                continue
            if p.name.startswith(".rec-") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                continue
            stem = p.name.split(".", 1)[0]
            st = p.stat()
            g = groups.setdefault(stem, [st.st_mtime, 0])
            g[0], g[1] = min(g[0], st.st_mtime), g[1] + st.st_size
        for stem, (_, size) in sorted(groups.items(), key=lambda kv: (kv[1][0], kv[0])):
            self._records[stem] = size
        self.counts["bytes"] = sum(self._records.values())
        self._enforce_quota()

    def _enforce_quota(self) -> None:
        while self.counts["bytes"] > self.quota and len(self._records) > 1:
            stem, size = self._records.popitem(last=False)
            for p in self.folder.glob(glob_escape(stem) + ".*"):
                p.unlink(missing_ok=True)
            with self._lock:
                self.counts["bytes"] -= size
                self.counts["deleted"] += 1

    def stats(self) -> dict:
        with self._lock:
            return {**self.counts, "queue_depth": self._q.qsize(), "quota_bytes": self.quota,
                    "what": self.what, "folder": str(self.folder)}

    # -- writer thread ---------------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> int:
        tmp = self.folder / f".rec-{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.folder / name)
        return len(data)

    def _save(self, rec: _Record) -> None:
        import cv2

        header = json.loads(bytes(rec.result[1]))
        camera = _UNSAFE.sub("_", str(header.get("camera") or "unknown"))[:64]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(rec.t)) + f"{rec.t % 1:.6f}"[1:].replace(".", "")
        stem = f"{stamp}_{camera}_{header.get('seq')}_{header['verdict']}"
        n, i = stem, 1
        while n in self._records:
            n, i = f"{stem}-{i}", i + 1
        stem = n
        files, size = [], 0
        if rec.image is not None:
            img = rec.image
            if rec.color == "rgb" and img.ndim == 3:
                img = img[:, :, ::-1]  # PNG files hold RGB; OpenCV writes BGR arrays
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if ok:
                files.append(f"{stem}.frame.png")
                size += self._write(files[-1], buf.tobytes())
        elif rec.payload is not None:
            data = bytes(memoryview(rec.payload).cast("B")[:self.max_payload])
            if data:
                files.append(f"{stem}.frame.bin")
                size += self._write(files[-1], data)
        if len(rec.result) == 3 and len(rec.result[2]):
            files.append(f"{stem}.mask.png")
            size += self._write(files[-1], bytes(rec.result[2]))
        fh = None
        if rec.frame_header is not None:
            try:
                fh = json.loads(rec.frame_header)
            except (UnicodeDecodeError, ValueError):
                fh = rec.frame_header.decode("utf-8", "replace")[:4096]
        doc = {"result": header, "frame_header": fh, "files": files, "recorded_at": rec.t}
        size += self._write(f"{stem}.json", json.dumps(doc, indent=1).encode("utf-8"))
        self._records[stem] = size
        with self._lock:
            self.counts["recorded"] += 1
            self.counts["bytes"] += size
        self._enforce_quota()

    def _run(self) -> None:
        while True:
            rec = self._q.get()
            if rec is _STOP:
                return
            try:
                self._save(rec)
            except Exception as exc:  # a full disk must not stop the service
                with self._lock:
                    self.counts["failed"] += 1
                log.error("cannot record a result: %s: %s", type(exc).__name__, exc)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self._q.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    return
        self._thread.join(max(0.1, deadline - time.monotonic()))


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)
