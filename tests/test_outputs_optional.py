"""The outputs are optional: without --opcua/--mqtt a running serve has not imported asyncua or
paho-mqtt (a device without the integration extra runs it), and --http needs neither."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from edge_runtime.config import ServiceConfig
from edge_runtime.service import Service
svc = Service(ServiceConfig(bundles=[(None, sys.argv[1])], input="tcp://127.0.0.1:1",
                            output="tcp://127.0.0.1:*", backend="ort-cpu", http=sys.argv[2] or None)).start()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("asyncua", "paho"))
svc.stop(timeout=2)
print(json.dumps({"loaded": loaded, "outputs": [o.name for o in svc.outputs]}))
"""


def _probe(demo_bundle, http: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(demo_bundle), http], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_output_library_is_imported_unless_asked_for(demo_bundle):
    assert _probe(demo_bundle, "") == {"loaded": [], "outputs": []}
    assert _probe(demo_bundle, "127.0.0.1:0") == {"loaded": [], "outputs": ["http"]}
