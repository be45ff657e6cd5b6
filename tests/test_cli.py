"""End-to-end: the real CLI in a subprocess on the bundled sample and on synthetic data."""

import json
import subprocess
import sys

import numpy as np
import tifffile
from conftest import SAMPLE, run_cli
from PIL import Image

# DSB score of the bundled model on the bundled sample (measured 0.431 with `nucleiseg predict` defaults for
# the generalist, 0.502 for 0.1.0's model); re-measure when the bundled model changes
SAMPLE_DSB_FLOOR = 0.41


def run(*args, check=True):
    proc = run_cli(*args)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def test_help_imports_no_heavy_module():
    """--help stays instant: it imports no heavy module (its time is measured by bench/cli_startup.py, not
    asserted here)."""
    proc = run("--help")
    assert "predict" in proc.stdout and "train" in proc.stdout
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "nucleiseg", "--help"], capture_output=True,
                         text=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "onnxruntime", "scipy", "skimage"}, imported


def test_predict_then_evaluate_on_bundled_sample(tmp_path):
    out = tmp_path / "pred"
    run("predict", SAMPLE, "-o", out, "--overlay", "--measure", "--rle", tmp_path / "sub.csv")
    ids = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
    for image_id in ids:
        labels = tifffile.imread(out / f"{image_id}.tif")
        image = np.asarray(Image.open(SAMPLE / image_id / "images" / f"{image_id}.png"))
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint16
        assert (out / f"{image_id}_overlay.png").exists() and (out / f"{image_id}_nuclei.csv").exists()
    header = (tmp_path / "sub.csv").read_text().splitlines()[0]
    assert header == "ImageId,EncodedPixels"
    proc = run("evaluate", "--pred", out, "--truth", SAMPLE)
    assert "DSB score" in proc.stdout
    scores = json.loads((out / "scores.json").read_text())
    assert scores["overall"]["n_images"] == len(ids)
    assert scores["overall"]["dsb"] >= SAMPLE_DSB_FLOOR
    assert (out / "per_image.csv").read_text().count("\n") == len(ids) + 1


def test_bad_input_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = run("predict", bad, "-o", tmp_path / "out", check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert lines and "bad.png" in lines[0] and "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").glob("*.tif"))


def test_unknown_preset_is_refused(tmp_path):
    proc = run("train", "--data", SAMPLE, "--out", tmp_path / "r", "--preset", "huge", check=False)
    assert proc.returncode == 1 and "unknown preset" in proc.stderr and "Traceback" not in proc.stderr
