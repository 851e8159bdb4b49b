#!/usr/bin/env bash
# Issue 16 in one call on the GPU machine (docs/gpu-bench.md): install the carried wheels, then
# gpu_bench.py, pytest -m gpu, calibrate + selftest + bench on a ViT-B/518 bundle, serve 1/2/4 workers.
#
#   benchmarks/gpu/run_on_device.sh OUT            # on the GPU machine, OUT = $OUT of the device call
#   DRY_RUN=1 benchmarks/gpu/run_on_device.sh OUT  # anywhere: tiny model, ort-cpu, short steps
#
# Everything goes to OUT (at most 7 files, so that all of them come back): run.log (every step's
# output), summary.txt (one line per step: rc and seconds), results.json/results.md (gpu_bench),
# selftest.json, bench.json, serve.json. Work files (bundle, frames, fp16 copy) go to $WORK.
# Every step has a time limit and the whole run a deadline (DEADLINE_S, default 540 s after the
# start); a failing step is logged and the next one runs; the script always exits 0.
#
# Environment: PYTHON (python3), WHEELS (.gpu-wheels), SITE (.gpu-site), WORK (/tmp/robis-gpu),
# ARCH (dinov2reg_vit_base_14), BACKEND (ort-cuda), DEADLINE_S (540), BENCH_BUDGET_S (240),
# BENCH_SECONDS (1.0, timed seconds per gpu_bench row and batch), STEPS (all: a space-separated subset
# of install env gpu_bench pytest calibrate selftest bench serve).
set -u
OUT=${1:?usage: run_on_device.sh OUT}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 0
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-$REPO/.gpu-wheels}
SITE=${SITE:-$REPO/.gpu-site}
WORK=${WORK:-/tmp/robis-gpu}
DRY=${DRY_RUN:-0}
if [ "$DRY" = 1 ]; then
  WHEELS=${WHEELS_DRY:-/nonexistent}  # a dry run installs nothing unless WHEELS_DRY names a folder
  ARCH=${ARCH:-tiny}; BACKEND=${BACKEND:-ort-cpu}; BENCH_SECONDS=${BENCH_SECONDS:-0.2}
  FRAMES=${FRAMES:-3}; SERVE_FRAMES=${SERVE_FRAMES:-6}; SERVE_WORKERS=${SERVE_WORKERS:-1 2}
  SKIP=${SKIP:-torch-cpu-fp32}
else
  ARCH=${ARCH:-dinov2reg_vit_base_14}; BACKEND=${BACKEND:-ort-cuda}; BENCH_SECONDS=${BENCH_SECONDS:-1.0}
  FRAMES=${FRAMES:-10}; SERVE_FRAMES=${SERVE_FRAMES:-60}; SERVE_WORKERS=${SERVE_WORKERS:-1 2 4}
  SKIP=${SKIP:-torch-cpu-fp32 ort-cpu-fp16}
fi
DEADLINE_S=${DEADLINE_S:-540}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-240}
STEPS=${STEPS:-install env gpu_bench pytest calibrate selftest bench serve}
LOG=$OUT/run.log
SUMMARY=$OUT/summary.txt
T0=$(date +%s)
export PYTHONUNBUFFERED=1
: >"$SUMMARY"

say() { echo "$*" | tee -a "$LOG"; }
wants() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# step NAME LIMIT_S COMMAND...: run with a time limit (never past the deadline), log, record rc.
step() {
  local name=$1 limit=$2; shift 2
  wants "$name" || return 0
  local left=$(( DEADLINE_S - ($(date +%s) - T0) ))
  if [ "$left" -lt 15 ]; then
    say "=== $name: SKIPPED, deadline (${DEADLINE_S}s) reached"
    echo "$name skipped (deadline)" >>"$SUMMARY"; return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  local s=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - s ))
  [ "$rc" = 124 ] && rc="124 (time limit)"
  say "=== $name: rc=$rc in ${took}s"
  echo "$name rc=$rc ${took}s" >>"$SUMMARY"
  return 0
}

install_wheels() {
  if [ -f "$SITE/.installed" ]; then echo "already installed in $SITE:"; cat "$SITE/.installed"; return 0; fi
  if [ ! -d "$WHEELS" ] || [ -z "$(ls -A "$WHEELS" 2>/dev/null)" ]; then
    echo "no wheels in $WHEELS: nothing to install (the system's packages are used)"; return 0
  fi
  cd "$WHEELS" || return 1
  local first whl ok=()
  for first in *.part-aa; do
    [ -e "$first" ] || continue
    whl=${first%.part-aa}
    echo "reassembling $whl from $(ls "$whl".part-* | wc -l) pieces"
    cat "$whl".part-* >"$whl"
  done
  if [ -f SHA256SUMS ]; then
    for whl in *.whl; do
      if grep -q " $whl\$" SHA256SUMS; then
        if grep " $whl\$" SHA256SUMS | sha256sum -c -; then ok+=("$whl"); else echo "CHECKSUM FAILED: $whl (piece missing?)"; fi
      else
        echo "not in SHA256SUMS, installed unchecked: $whl"; ok+=("$whl")
      fi
    done
  else
    ok=(*.whl)
  fi
  cd "$REPO" || return 1
  [ "${#ok[@]}" -gt 0 ] || { echo "no complete wheel"; return 1; }
  mkdir -p "$SITE"
  local w args=()
  for w in "${ok[@]}"; do args+=("$WHEELS/$w"); done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${args[@]}" \
    && printf "%s\n" "${ok[@]}" >"$SITE/.installed"
}

say "run_on_device.sh: repo $REPO, out $OUT, work $WORK, arch $ARCH, backend $BACKEND, dry run $DRY, $(date -u)"
wants install && { say "=== install"; install_wheels >>"$LOG" 2>&1; rc=$?; say "=== install: rc=$rc"; echo "install rc=$rc" >>"$SUMMARY"; }

# The carried packages first; the CUDA libraries of the nvidia-* wheels (torch's) for onnxruntime-gpu.
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
NVLIBS=$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = [p for p in (site.getsitepackages() + [site.getusersitepackages()] + sys.path) if os.path.isdir(p)]
dirs = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "nvidia", "*", "*", "lib"))):
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
)
[ -n "$NVLIBS" ] && export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

env_check() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch:", e)
for m in ("numpy", "cv2", "onnx", "zmq", "tifffile", "PIL"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as e:
        print(m, "MISSING:", e)
import ctypes, os
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
capi = os.path.join(os.path.dirname(ort.__file__), "capi")
for lib in ("libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so",
            "libonnxruntime_providers_tensorrt.so"):
    p = os.path.join(capi, lib)
    if os.path.exists(p):
        try:
            ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL)
            print("loads:", lib)
        except OSError as e:
            print("does not load:", lib, e)
if "CUDAExecutionProvider" in ort.get_available_providers():
    import numpy as np
    from sdk.backends.onnxruntime import open_session
    s = open_session("sdk/engines/data/selftest_tile.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
    print("CUDA EP smoke test:", s.get_providers(), s.run(None, {i.name: x})[0].shape)
EOF
}
export PY
step env 60 bash -c "$(declare -f env_check); env_check"

# shellcheck disable=SC2086
step gpu_bench $(( BENCH_BUDGET_S + 150 )) "$PY" benchmarks/gpu_bench.py --out "$OUT" --work "$WORK" --arch "$ARCH" \
  --seconds-per-row "$BENCH_SECONDS" --budget-s "$BENCH_BUDGET_S" --frames "$FRAMES" --skip $SKIP
step pytest 120 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests
RE=("$PY" -m edge_runtime.cli)
if [ -f "$WORK/bundle/bundle.json" ]; then
  step calibrate 120 "${RE[@]}" calibrate --bundle "$WORK/bundle" --images "$WORK/frames" --backend "$BACKEND" --min-images 3
else
  say "=== calibrate: no bundle at $WORK/bundle (gpu_bench failed?)"
fi
step selftest 120 "${RE[@]}" selftest --bundle "$WORK/bundle" --json "$OUT/selftest.json"
step bench 120 "${RE[@]}" bench --bundle "$WORK/bundle" --backend "$BACKEND" --frame-size 2448x2048 \
  --frames "$SERVE_FRAMES" --warmup 3 --json "$OUT/bench.json"
# shellcheck disable=SC2086
step serve 200 "$PY" benchmarks/gpu/serve_throughput.py --bundle "$WORK/bundle" --backend "$BACKEND" \
  --workers $SERVE_WORKERS --frames "$SERVE_FRAMES" --json "$OUT/serve.json"

say "=== done in $(( $(date +%s) - T0 ))s $(date -u)"
cat "$SUMMARY" | tee -a "$LOG"
[ -f "$OUT/results.md" ] && cat "$OUT/results.md"
exit 0
