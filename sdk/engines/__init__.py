"""On-device engines: what ``robis-edge build`` makes of a bundle on this machine, and checks.

- ``entries``: the engines a bundle lists, matched against this host (refusals say how to rebuild);
- ``reference``: the real tiles the parity gate runs;
- ``gate``: the parity gate, one for every engine builder (verdicts, map cosine and |Δ|, mask IoU;
  the precision ladder it walks down);
- ``tensorrt/``: plans, the TensorRT builder and the ``build`` flow for NVIDIA devices;
- ``selftest``: what is installed on this device and whether it runs;
- ``cli``: the ``build`` and ``selftest`` commands (argument definitions only).
"""

from .entries import (
    EngineEntry,
    check_engine,
    engine_entries,
    engine_mismatches,
    onnx_file_of,
    rebuild_command,
    select_engine,
    upsert_engine,
)

__all__ = ["EngineEntry", "check_engine", "engine_entries", "engine_mismatches", "onnx_file_of",
           "rebuild_command", "select_engine", "upsert_engine"]
