"""``robis-edge bench``: JSON keys, the table, frame-size parsing."""

from __future__ import annotations

import json

import pytest
from conftest import run_command  # noqa: E402

from sdk.errors import InputError
from sdk.geometry import parse_frame_size
from sdk.tools.evaluation.bench import format_table, run_bench


def test_bench_json_and_table(tmp_path, demo_bundle, capsys):
    out = tmp_path / "bench.json"
    rc = run_command(["bench", "--bundle", str(demo_bundle), "--frame-size", "640x480", "300x200",
                  "--frames", "4", "--warmup", "1", "--backend", "ort-cpu", "--metrics", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"bundle", "config", "host", "results", "created"}
    b = res["bundle"]
    assert b["backend"] == "onnxruntime" and b["provider"] == "CPUExecutionProvider"
    assert b["precision"] and b["reason"] and b["bundle"] == "demo-surface"
    h = res["host"]
    assert {"node", "platform", "cpu", "cpu_count", "memory_gib", "onnxruntime", "opencv", "numpy",
            "gpus"} <= set(h)
    assert res["config"]["scope"] == "calibrated" and res["config"]["frames"] == 4
    assert [r["frame_size"] for r in res["results"]] == [[640, 480], [300, 200]]
    for r in res["results"]:
        assert r["fps"] > 0 and r["frames"] == 4 and r["tiles"] >= 1
        lat = r["latency_ms"]
        stages = {"preprocess", "infer", "merge", "binarize", "regions", "total", "evaluate_metrics"}
        assert stages <= set(lat)
        for s in lat.values():
            assert set(s) == {"p50", "p99", "mean", "max"} and 0 <= s["p50"] <= s["p99"] <= s["max"]
    text = capsys.readouterr().out
    assert "frames/s" in text and "p99 ms" in text and "640x480" in text and "CPUExecutionProvider" in text


def test_bench_json_to_stdout(demo_bundle, capsys):
    assert run_command(["bench", "--bundle", str(demo_bundle), "--frame-size", "256x256", "--frames", "2",
                    "--warmup", "0", "--color", "bgr", "--json", "-"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["color"] == "bgr" and "evaluate_metrics" not in res["results"][0]["latency_ms"]
    assert "frames/s" in format_table(res)


def test_bench_rolling_scope_for_uncalibrated_bundle(make_bundle):
    res = run_bench(make_bundle(), [(96, 128)], frames=2, warmup=0, backend="ort-cpu")  # (H, W)
    assert res["config"]["scope"] == "rolling"


def test_parse_frame_size():
    assert parse_frame_size("2448x2048") == (2048, 2448)  # "WIDTHxHEIGHT" -> (height, width)
    assert parse_frame_size("640X480") == (480, 640)
    for bad in ("2448", "0x10", "axb", "10x-3"):
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            parse_frame_size(bad)
