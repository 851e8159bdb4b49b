"""On-device engines: what ``robis-edge build`` makes of a bundle on this machine, and checks.

- ``entries``: the engines a bundle lists, matched against this host (refusals say how to rebuild);
- ``reference``: the real tiles the parity gate runs;
- ``gate``: the parity gate, one for every engine builder (verdicts, map cosine and |Δ|, mask IoU;
  the precision ladder it walks down);
- ``tensorrt/``: plans, the TensorRT builder and the ``build`` flow for NVIDIA devices;
- ``openvino/``: the OpenVINO build flow (f32/bf16 compile hints, NNCF int8) for Intel CPUs;
- ``selftest``: what is installed on this device and whether it runs;
- ``cli``: the ``build`` and ``selftest`` commands (argument definitions only).
"""

from .entries import (
    EngineEntry,
    OpenvinoHost,
    check_engine,
    check_openvino_engine,
    engine_entries,
    engine_mismatches,
    onnx_file_of,
    openvino_mismatches,
    rebuild_command,
    select_engine,
    select_openvino_engine,
    upsert_engine,
)

__all__ = ["EngineEntry", "OpenvinoHost", "check_engine", "check_openvino_engine", "engine_entries",
           "engine_mismatches", "onnx_file_of", "openvino_mismatches", "rebuild_command", "select_engine",
           "select_openvino_engine", "upsert_engine"]
