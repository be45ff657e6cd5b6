"""End-to-end: the real CLI in a subprocess on the bundled sample and on synthetic data."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import tifffile
from conftest import SAMPLE
from PIL import Image

ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def test_help_is_fast():
    t = time.perf_counter()
    proc = run("--help")
    assert "predict" in proc.stdout and "train" in proc.stdout
    # importing torch alone takes over a second; --help must not import it
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "nucleiseg", "--help"], capture_output=True,
                         text=True)
    assert "torch" not in out.stderr
    assert time.perf_counter() - t < 10


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
    assert 0.2 < scores["overall"]["dsb"] <= 1.0  # a trained model, not noise
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
