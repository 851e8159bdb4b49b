"""Careless inputs (issue 14): each ends with a non-zero exit and one clear line, never a traceback;
outputs never overwrite each other; tiny frames are refused; the README's example runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    """The one ``robis-edge ...: error: ...`` line on stderr (progress bars may share its line)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert len(lines) == 1 and "robis-edge" in lines[0], err
    return lines[0]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("kind", ["gray8", "gray16", "bgr"])
def test_readme_example_runs_on_gray_and_colour_frames(tmp_path, demo_bundle, monkeypatch, capsys, kind):
    rng = np.random.default_rng(0)
    frame = {"gray8": rng.integers(0, 255, (300, 420), dtype=np.uint8),
             "gray16": rng.integers(0, 65535, (300, 420), dtype=np.uint16),
             "bgr": rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)}[kind]
    cv2.imwrite(str(tmp_path / "part.png"), frame)
    code = _readme_example()
    assert '"path/to/bundle"' in code and '"part.png"' in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("path/to/bundle", str(demo_bundle)), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.split()[0] in ("pass", "fail")


_I = ["inspect", "--bundle", "{b}", "--images", "{t}/imgs", "--out", "{t}/o"]


@pytest.mark.parametrize("argv, needle", [
    ([*_I, "--mask-scale", "0"], "--mask-scale"),
    ([*_I, "--mask-scale", "-1"], "--mask-scale"),
    ([*_I, "--mask-scale", "50"], "--mask-scale"),
    ([*_I, "--threads", "-2"], "--threads"),
    (["inspect", "--bundle", "{b}", "--images", "{t}/imgs", "--out", "{t}/file.txt"], "not a folder"),
    (["inspect", "--bundle", "{b}", "--image", "{t}/imgs", "--out", "{t}/o"], "is a folder"),
    (["inspect", "--bundle", "{b}", "--images", "{t}/missing", "--out", "{t}/o"], "no such folder"),
    (["inspect", "--bundle", "{t}/missing", "--images", "{t}/imgs", "--out", "{t}/o"], "bundle"),
    (["calibrate", "--bundle", "{b}", "--images", "{t}/imgs", "--reference-tiles", "-3"],
     "--reference-tiles"),
    (["binarize", "--maps", "{t}/imgs", "--out", "{t}/file.txt"], "not a folder"),
    (["binarize", "--maps", "{t}/maps", "--out", "{t}/o", "--method", "fixed"], "--fixed-threshold"),
    (["binarize", "--maps", "{t}/nan", "--out", "{t}/o"], "nan.npy"),
    (["camera", "--synthetic", "--fps", "-1"], "--fps"),
    (["camera", "--synthetic", "--defect-rate", "5"], "--defect-rate"),
    (["camera", "--synthetic", "--width", "10"], "--width"),
    (["camera", "--source", "{t}/missing"], "no such folder"),
    (["camera", "--source", "{t}/junk", "--count", "1", "--loop", "--output", "tcp://127.0.0.1:0"],
     "can be read"),
    (["serve", "--bundle", "{b}", "--workers", "0"], "--workers"),
    (["evaluate", "--bundle", "{b}", "--dataset", "{t}/imgs", "--out", "{t}/o", "--fpr-limit", "2"],
     "--fpr-limit"),
    (["bench", "--bundle", "{b}", "--frames", "0"], "--frames"),
    (["keys", "--out", "{t}/file.txt"], "not a folder"),
    (["inspect", "--bundle", "{b}"], "required"),
    (["no-such-command"], "invalid choice"),
])
def test_careless_arguments_get_one_line_and_status_2(tmp_path, demo_bundle, capsys, argv, needle):
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((64, 64), np.uint8))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("not an image")
    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "m.npy", np.zeros((8, 8), np.float32))
    (tmp_path / "nan").mkdir()
    np.save(tmp_path / "nan" / "nan.npy", np.full((8, 8), np.nan, np.float32))
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{b}", str(demo_bundle)).replace("{t}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert needle in line


def test_argument_errors_are_one_line_from_the_console_script_and_the_module(tmp_path):
    for cmd in ([sys.executable, "-m", "edge_runtime.cli"], [sys.executable, "-m", "edge_runtime.commands"]):
        out = subprocess.run([*cmd, "camera", "--synthetic", "--pool", "0"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1 and "--pool" in out.stderr, out.stderr


def test_same_stem_inputs_get_distinct_outputs(tmp_path, demo_bundle, capsys):
    """The magnetic_tile layout: x.jpg beside its mask x.png; nothing is overwritten."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for name in ("x.jpg", "x.png", "y.jpg", "x.jpg.png"):
        cv2.imwrite(str(imgs / name), rng.integers(0, 255, (80, 90), dtype=np.uint8))
    (imgs / "z.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"
    assert main(["inspect", "--bundle", str(demo_bundle), "--images", str(imgs), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "z.jpg" in err and "not a readable image" in err  # the reason on the console, too
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    ok = [x for x in lines if x["verdict"] != "error"]
    assert len(ok) == 4
    masks = {x["file"]: x["mask"] for x in ok}
    assert masks == {"x.jpg": "masks/x.jpg.png", "x.png": "masks/x.png.png", "y.jpg": "masks/y.png",
                     "x.jpg.png": "masks/x.jpg.png.png"}
    assert len(list((out / "masks").iterdir())) == 4 and len(list((out / "overlays").iterdir())) == 4
    for x in ok:
        assert cv2.imread(str(out / x["overlay"])).shape[:2] == (80, 90)


def test_tiny_frames_are_refused_and_regions_never_exceed_the_frame(demo_bundle):
    from sdk import InputError, Inspector

    insp = Inspector(demo_bundle)
    with pytest.raises(InputError, match="at least 4x4"):
        insp.inspect(np.zeros((1, 1), np.uint8))
    with pytest.raises(InputError, match="at least 4x4"):
        insp.inspect(np.zeros((500, 3), np.uint8))
    for shape in ((4, 4), (5, 9), (7, 13)):
        r = insp.inspect(np.full(shape, 255, np.uint8))
        for reg in r.regions:
            x0, y0, x1, y1 = reg.bbox
            assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
            assert reg.area_px <= shape[0] * shape[1]
    with pytest.raises(InputError, match="mask_scale"):
        Inspector(demo_bundle, mask_scale=50)


def test_reason_names_regions_below_min_area():
    from sdk.bundle import VerdictSpec
    from sdk.verdict import Region, decide

    small = [Region((0, 0, 3, 3), 9, 200.0, 150.0)]
    verdict, reason = decide(small, 200.0, VerdictSpec(min_area_px=50))
    assert verdict == "pass" and "smaller than min_area_px 50" in reason and "9 px" in reason
    assert decide([], 10.0, VerdictSpec(min_area_px=50, score_threshold=100.0)) == \
        ("pass", "no region; score 10.00 below 100.0")


def test_output_names_rule():
    from sdk.imageio import output_names

    rels = [Path(p) for p in ("a/x.jpg", "a/x.png", "b/x.jpg", "x.tif", "x.npy", "q.jpg.png", "q.jpg")]
    names = output_names(rels)
    assert len(set(names.values())) == len(rels)
    assert names[Path("b/x.jpg")] == Path("b/x.png") and names[Path("a/x.jpg")] == Path("a/x.jpg.png")
    assert names == output_names(list(reversed(rels)))  # the order of the inputs does not matter


def _env() -> dict:
    import os

    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _camera(*argv: str):
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.commands", "camera", *argv,
                             "--output", f"tcp://127.0.0.1:{_free_port()}"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, text: str, limit_s: float = 60.0) -> None:
    """Read stderr lines until one holds ``text`` (the process is then in the state to test)."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{text!r} never appeared")


def test_camera_without_a_readable_image_exits_at_once(tmp_path):
    (tmp_path / "a.png").write_text("a text file named .png")
    (tmp_path / "b.jpg").write_bytes(b"")
    proc = _camera("--source", str(tmp_path), "--loop", "--count", "1", "--wait", "30")
    out, err = proc.communicate(timeout=30)  # no wait for a subscriber, no busy loop
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "none of the 2 image file(s)" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("signame, argv, state", [
    ("SIGTERM", ("--synthetic", "--width", "64", "--height", "48", "--count", "3", "--wait", "120"),
     "publishing on"),
    ("SIGINT", ("--synthetic", "--width", "64", "--height", "48", "--count", "100000", "--mode", "push"),
     "publishing on"),
    ("SIGTERM", ("--source", "{imgs}", "--loop", "--count", "100000000", "--wait", "0"), "sending anyway"),
])
def test_camera_stops_on_a_signal_in_every_state(tmp_path, signame, argv, state):
    import signal

    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "ok.png"), np.zeros((40, 50), np.uint8))
    (tmp_path / "imgs" / "junk.png").write_text("not an image")
    proc = _camera(*(a.replace("{imgs}", str(tmp_path / "imgs")) for a in argv))
    try:
        _wait_for(proc, state)
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=10)  # a hang guard, not a timing assertion
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "sent" in out and "Traceback" not in err
    assert err.count("skipping") <= 1  # an unreadable file is warned about once, not per loop


def test_export_unreadable_checkpoint_and_arch_are_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    jpg = tmp_path / "some.jpg"
    cv2.imwrite(str(jpg), np.zeros((8, 8), np.uint8))
    base = ["export", "inpformer", "--out", str(tmp_path / "b")]
    assert main([*base, "--checkpoint", str(jpg), "--preset", "dinov2reg_vit_small_14"]) == 2
    assert "not a PyTorch state_dict" in _one_error_line(capsys)
    assert main([*base, "--checkpoint", str(jpg), "--arch", str(tmp_path / "missing.json")]) == 2
    assert "no such architecture JSON file" in _one_error_line(capsys)
    (tmp_path / "bad.json").write_text("{not json")
    assert main([*base, "--checkpoint", str(jpg), "--arch", str(tmp_path / "bad.json")]) == 2
    assert "cannot be read as an architecture JSON" in _one_error_line(capsys)


def test_sam_model_code_imports_with_a_broken_torchvision(tmp_path):
    import importlib.util

    if importlib.util.find_spec("segment_anything") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("segment-anything / torch not installed")
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    env = _env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    code = ("from export.sam.upstream import load_upstream; u = load_upstream(); "
            "print(u.build_sam.__name__, hasattr(u.modeling, 'Sam'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["segment_anything.build_sam", "True"]


def test_bundle_json_with_a_bom_loads_and_absurd_frame_sizes_are_refused(demo_bundle, capsys):
    from sdk import Bundle

    meta = demo_bundle / "bundle.json"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())  # as Notepad saves it
    assert Bundle.load(demo_bundle).name == "demo-surface"
    argv = ["bench", "--bundle", str(demo_bundle), "--frame-size", "100000x100000", "--frames", "1"]
    assert main(argv) == 2
    assert "megapixels" in _one_error_line(capsys)
