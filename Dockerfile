# RoBiS Edge for x86-64 hosts with an NVIDIA RTX / data-centre GPU: `robis-edge serve` on TensorRT.
#
#   docker build -t robis-edge:x86 .
#
# Running it, building the engine inside the container first, the health check: docs/docker.md.
# Jetson: Dockerfile.jetson. This file is linted (hadolint) and checked by tests/test_dockerfiles.py;
# the image itself was not built in CI (no access to nvcr.io there).
#
# Base image: nvcr.io/nvidia/tensorrt:25.06-py3 ships TensorRT 10.11.0.33 with CUDA 12.9, Ubuntu 24.04
# and Python 3.12; the host needs an NVIDIA driver for CUDA 12.9 (R575 or newer) and the NVIDIA
# Container Toolkit. Why this release:
#   - it avoids the two TensorRT releases known to miscompile DINO ViTs (INP-Former's encoder is one):
#     10.3 builds wrong fp16 engines of DINOv3 ViT-B (NVIDIA/TensorRT#4723) and 10.4 is wrong on the
#     same model even in fp32 (#4742); NGC's 24.08 and 24.09 TensorRT releases carry those two;
#   - it knows Blackwell (RTX 50xx, sm_120; TensorRT 10.8 and later);
#   - it is CUDA 12: onnxruntime-gpu 1.26.0 is the last release on PyPI built for CUDA 12 (1.27 and
#     later are CUDA 13 builds), and ONNX Runtime's CUDA provider must match the image's CUDA.
# Still open as of TensorRT 10.16: fused attention in fp16 gives wrong results on sm_120 (#4837).
# `robis-edge build` therefore gates every engine it builds: it runs the bundle's reference tiles through
# the new engine and through ONNX Runtime fp32 and compares maps and verdicts. When fp16 fails it rebuilds
# as fp16 with more layers kept in fp32, then as fp32; if fp32 also fails it refuses to write an engine.
# Build the engine inside this container, on the GPU that will run it, with the timing cache on the bundle
# volume (--timing-cache /bundle/timing.cache): engines and caches do not move between GPUs or TensorRT
# releases.

ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.06-py3

# ---------------------------------------------------------------------------------------------------
# builder: a pycuda wheel compiled against this image's CUDA, and the robis-edge wheel.
FROM ${TRT_IMAGE} AS builder

ARG DEBIAN_FRONTEND=noninteractive
ARG PYCUDA_VERSION=2026.1
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]

# pycuda finds the toolkit through nvcc on PATH (CUDA_ROOT for good measure) and links libcuda; inside
# `docker build` there is no driver, so the linker takes the toolkit's stub (the real libcuda.so.1 is
# mounted by the NVIDIA Container Toolkit when the container runs).
ENV CUDA_ROOT=/usr/local/cuda \
    PATH=/usr/local/cuda/bin:${PATH} \
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs

# Not pinned: these come from the Ubuntu 24.04 archive the base image is made for, and the archive drops
# superseded versions, so exact pins would break rebuilds; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY edge_runtime ./edge_runtime
COPY export ./export

RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "pycuda==${PYCUDA_VERSION}" .

# ---------------------------------------------------------------------------------------------------
# runtime: the core install + the gpu extra (onnxruntime-gpu, pycuda); no torch, not the export extra.
# TensorRT itself comes from the base image.
FROM ${TRT_IMAGE} AS runtime

ARG DEBIAN_FRONTEND=noninteractive
ARG ORT_GPU_VERSION=1.26.0
# serve's OPC UA and MQTT outputs (the integration extra; docs/integration.md)
ARG ASYNCUA_VERSION=2.1.0
ARG PAHO_VERSION=2.2.0
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]

LABEL org.opencontainers.image.title="robis-edge (x86-64, TensorRT)" \
      org.opencontainers.image.description="RoBiS anomaly detection service (robis-edge serve) on TensorRT, x86-64 NVIDIA GPUs" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      robis-edge.platform="x86-64" \
      robis-edge.tensorrt="10.11"

# Not pinned, for the same reason as in the builder stage: the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /wheels /tmp/wheels

# A venv that also sees the system site-packages, where the base image's tensorrt module lives (and that
# keeps pip away from the system Python, which Ubuntu 24.04 marks as externally managed). The spec check
# fails the build (instead of the first health check) when the base image lacks the TensorRT bindings,
# without loading them (no GPU during `docker build`).
# The gpu extra is spelled out (onnxruntime-gpu pinned, pycuda from the wheel built above). The core
# dependency onnxruntime and onnxruntime-gpu install the same `onnxruntime` package, so the CPU build
# is removed again and the GPU build reinstalled over what the removal took away.
RUN python3 -m venv --system-site-packages /opt/robis-edge \
    && /opt/robis-edge/bin/python -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('tensorrt') else 'no tensorrt module in the base image: use an NGC TensorRT image')" \
    && /opt/robis-edge/bin/pip install --no-cache-dir /tmp/wheels/*.whl "onnxruntime-gpu==${ORT_GPU_VERSION}" \
       "asyncua==${ASYNCUA_VERSION}" "paho-mqtt==${PAHO_VERSION}" \
    && /opt/robis-edge/bin/pip uninstall -y onnxruntime \
    && /opt/robis-edge/bin/pip install --no-cache-dir --no-deps --force-reinstall "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && rm -rf /tmp/wheels

# Non-root user robis, uid/gid 10001 (x86 GPU device nodes are world-accessible once the NVIDIA
# Container Toolkit has mounted them). /bundle is the mount point of the bundle volume; the engine and
# the timing cache are written there.
RUN groupadd --gid 10001 robis \
    && useradd --uid 10001 --gid robis --home-dir /home/robis --create-home --shell /usr/sbin/nologin robis \
    && install -d -o robis -g robis /bundle

ENV PATH=/opt/robis-edge/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/opt/robis-edge/numba-cache

# Binarisation's component counting is compiled by numba on first use; compiled here once, into a cache
# the user robis owns (numba compiles again, into the same cache, on a CPU other than the build host's).
RUN /opt/robis-edge/bin/python -c "from sdk.postprocess.levelsets import compile_counts; compile_counts()" \
    && chown -R robis:robis /opt/robis-edge/numba-cache

USER 10001
WORKDIR /home/robis

# 5556: results (--output). 5557: the control socket, when you add --control tcp://0.0.0.0:5557.
EXPOSE 5556 5557

# Healthy = the installed stack is complete: TensorRT, pycuda, the CUDA driver and the GPU (no engine build).
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["robis-edge", "selftest", "--quick", "--require", "tensorrt,pycuda,gpu"]

ENTRYPOINT ["robis-edge", "serve"]
# serve refuses to bind anything but loopback without --allow-remote; in a container the results have to
# be reachable from outside it. Replace the whole CMD to change an address (docs/docker.md).
CMD ["--bundle", "/bundle", "--input", "tcp://camera:5555", "--output", "tcp://0.0.0.0:5556", "--allow-remote"]
