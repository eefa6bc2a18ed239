"""tools/bench_ops.py runs on CPU (fused path, reference and baselines) and writes its JSON
and Markdown."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = {
    "lift_down2d",
    "lift_up2d",
    "soft_pool2d",
    "lip2d",
    "max_pool2d_with_indices",
    "max_unpool2d",
    "interpolate_bilinear",
    "avg_pool2d",
}


def _load_tool():
    spec = importlib.util.spec_from_file_location("bench_ops", ROOT / "tools" / "bench_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.delenv("SEG_OPS_BACKEND", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SEG_OPS_CPP", "0")  # the code path is part of the printed command
    bench = _load_tool()
    bench.main(["--quick", "--device", "cpu", "--repeats", "2", "--out", str(tmp_path)])

    report = json.loads((tmp_path / "bench_ops.json").read_text())
    assert report["command"].startswith("SEG_OPS_CPP=0 python tools/bench_ops.py --quick")
    rows = report["results"]
    assert {r["op"] for r in rows} == OPERATORS
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert {r["impl"] for r in rows} == {"fused", "reference", "baseline"}
    fused = [r for r in rows if r["impl"] == "fused"]
    assert {r["op"] for r in fused} == set(bench.FUSED_OPS)  # ours all have one on the CPU
    assert all(r["speedup_vs_reference"] > 0 for r in fused)
    assert report["copy_GBps"] > 0
    for row in rows:
        assert row["median_ms"] > 0 and row["GBps"] > 0
        assert row["peak_MiB"] == "n/a"
        assert row["dtype"] == "float32"
    # every operator at every quick shape, forward and forward+backward
    assert (
        len(rows)
        == (len(OPERATORS) + len(fused_ops := bench.FUSED_OPS)) * len(bench.QUICK_SHAPES) * 2
        and len(fused_ops) == 4
    )

    table = (tmp_path / "bench_ops.md").read_text()
    assert table.startswith("# bench_ops")
    for op in OPERATORS:
        assert f"| {op} |" in table


def test_rejects_unknown_dtype(tmp_path):
    bench = _load_tool()
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--device", "cpu", "--dtype", "float8", "--out", str(tmp_path)])


def test_ratios_come_from_rows_of_the_same_run():
    bench = _load_tool()
    rows = [
        {
            "op": "lift_down2d",
            "impl": "reference",
            "shape": [1],
            "dtype": "f",
            "mode": "fwd",
            "median_ms": 6.0,
        },
        {
            "op": "lift_down2d",
            "impl": "triton",
            "shape": [1],
            "dtype": "f",
            "mode": "fwd",
            "median_ms": 2.0,
        },
        {
            "op": "max_pool2d_with_indices",
            "impl": "baseline",
            "shape": [1],
            "dtype": "f",
            "mode": "fwd",
            "median_ms": 1.0,
        },
    ]
    bench.add_ratios(rows)
    assert rows[1]["x_baseline"] == 2.0 and rows[1]["speedup_vs_reference"] == 3.0
    assert rows[0]["speedup_vs_reference"] == 1.0
    assert rows[2]["x_baseline"] is None and rows[2]["speedup_vs_reference"] is None
