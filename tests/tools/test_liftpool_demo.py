"""tools/liftpool_demo.py (make demo-liftpool) runs on synthetic scenes and reports exact LiftPool round trips."""

import importlib.util
import math
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]


def test_demo_writes_table_and_picture(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "liftpool_demo", ROOT / "tools" / "liftpool_demo.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    results = demo.main(["--out", str(tmp_path), "--samples", "2", "--size", "48", "--stages", "2"])
    for exact in ("lift/lift (haar)", "lift/lift (legall53)"):
        assert math.isinf(results[exact]["psnr_db"]) and results[exact]["label_miou"] == 1.0
    # without the detail bands, or with max unpooling, thin structures are lost
    for lossy in ("lift without details", "max/maxunpool", "avg/bilinear"):
        assert results[lossy]["label_miou"] < 1.0 and math.isfinite(results[lossy]["psnr_db"])
    picture = cv2.imread(str(tmp_path / "liftpool_demo.png"))
    assert picture is not None and picture.shape[0] > 7 * 48  # input row + one row per pair
    assert "| max/maxunpool |" in (tmp_path / "liftpool_demo.md").read_text()
