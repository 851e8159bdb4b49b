#!/usr/bin/env bash
# Run HERE (a machine with PyPI), not on the GPU machine: download the wheels the GPU machine lacks
# (onnxruntime-gpu, the CUDA 13 build, and pyzmq for Python 3.12 x86_64) into .gpu-wheels/ (git-ignored),
# split the big one into pieces that fit one device call each, and write SHA256SUMS (whole wheels and
# pieces). docs/gpu-bench.md says which pieces each device call carries.
#
#   benchmarks/gpu/prepare_wheels.sh [DIR]       # default .gpu-wheels; MAX_PIECE_MIB (default 50)
#
# A device call carries at most 64 MiB together with the working tree (tracked + untracked files):
# keep MAX_PIECE_MIB + the tree (+ pyzmq, 1 MiB) under 64; the script prints the tree's size.
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-$REPO/.gpu-wheels}
MAX_PIECE_MIB=${MAX_PIECE_MIB:-50}
PY=${PYTHON:-python3}
ORT=${ORT_GPU:-onnxruntime-gpu==1.31.1}
ZMQ=${PYZMQ:-pyzmq==27.3.0}
mkdir -p "$DIR"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR" "$ORT" "$ZMQ"
cd "$DIR"
rm -f ./*.part-* SHA256SUMS
limit=$(( MAX_PIECE_MIB * 1048576 ))
for whl in *.whl; do
  size=$(stat -c %s "$whl")
  if [ "$size" -gt "$limit" ]; then
    n=$(( (size + limit - 1) / limit ))
    split -n "$n" -a 2 "$whl" "$whl.part-"   # n equal pieces: .part-aa, .part-ab, ...
    sha256sum "$whl" "$whl".part-* >>SHA256SUMS
    rm "$whl"                                  # only the pieces travel; run_on_device.sh reassembles
  else
    sha256sum "$whl" >>SHA256SUMS
  fi
done
ls -l "$DIR"
tree=$(cd "$REPO" && { git ls-files; git ls-files --others --exclude-standard; } | xargs -d '\n' du -cb 2>/dev/null | tail -1 | cut -f1)
echo "working tree that travels with every call: $(( tree / 1048576 )) MiB; largest piece: $(( $(ls -l ./* | awk '{print $5}' | sort -n | tail -1) / 1048576 )) MiB (keep the sum under 64)"
