"""The int8 network: the bundled model.int8.onnx stays in step with its weights and segments like fp32;
`nucleiseg export --int8` makes one; --precision picks it, and a missing or stale file is handled."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLE, write_dsb_folder

from nucleiseg.checkpoint import INT8_ONNX, ONNX, default_model_dir
from nucleiseg.data import list_dataset, load_item
from nucleiseg.errors import NucleisegError
from nucleiseg.export import DIGEST_KEY, weights_digest
from nucleiseg.metrics import score_image
from nucleiseg.runners import OnnxRunner
from nucleiseg.segmenter import load_model


def test_bundled_int8_is_current_and_segments_like_fp32():
    folder = default_model_dir()
    assert OnnxRunner(folder / INT8_ONNX).metadata[DIGEST_KEY] == weights_digest(folder)
    int8, fp32 = load_model(tta=False, device="cpu"), load_model(tta=False, precision="fp32")
    assert int8.model.path.name == INT8_ONNX and fp32.model.path.name == ONNX  # auto picks int8 on the CPU
    agreement, truth_int8, truth_fp32 = [], [], []
    for item in list_dataset(SAMPLE):
        image, truth = load_item(item)
        p8, p32 = int8.probabilities(image), fp32.probabilities(image)
        assert np.abs(p8 - p32).mean() < 0.01, item.image_id
        a, b = int8.segment(image), fp32.segment(image)
        agreement.append(score_image(b, a)["dsb"])
        truth_int8.append(score_image(truth, a)["dsb"])
        truth_fp32.append(score_image(truth, b)["dsb"])
    assert np.mean(agreement) > 0.8, agreement  # int8 labels match fp32's nucleus for nucleus, mostly
    assert np.mean(truth_int8) >= np.mean(truth_fp32) - 0.02, (truth_int8, truth_fp32)


@pytest.fixture(scope="module")
def quantized_run(tiny_run, tmp_path_factory):
    """The tiny model exported and quantised by the CLI, calibrated on synthetic disc images."""
    from conftest import synthetic_image

    data = tmp_path_factory.mktemp("calibration") / "dsb"
    rng = np.random.default_rng(0)
    for n in range(5):
        write_dsb_folder(data, f"img{n}", *synthetic_image(rng, (64, 64)))
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "export", "--model", str(tiny_run), "--int8",
                           "--data", str(data), "--calibration-images", "3"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(tiny_run / INT8_ONNX) in proc.stdout
    return tiny_run


def test_export_int8_makes_a_current_int8_network(quantized_run):
    meta = OnnxRunner(quantized_run / INT8_ONNX).metadata
    assert meta[DIGEST_KEY] == weights_digest(quantized_run)
    assert "3 training images" in meta["nucleiseg.calibration"]
    batch = np.random.default_rng(1).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    p8 = load_model(quantized_run, precision="int8").model.run(batch)
    p32 = load_model(quantized_run, precision="fp32").model.run(batch)
    assert p8.shape == p32.shape and np.abs(p8 - p32).mean() < 0.05
    assert (quantized_run / INT8_ONNX).stat().st_size < (quantized_run / ONNX).stat().st_size


def test_missing_or_stale_int8_network(quantized_run, tmp_path, caplog):
    import torch

    from nucleiseg.checkpoint import save_weights
    from nucleiseg.model import UNet

    run = tmp_path / "run"
    shutil.copytree(quantized_run, run)
    (run / INT8_ONNX).unlink()
    assert load_model(run).model.path.name == ONNX  # auto: fp32 when there is no int8 file
    with pytest.raises(NucleisegError, match="no model.int8.onnx.*nucleiseg export --int8"):
        load_model(run, precision="int8")
    shutil.copy(quantized_run / INT8_ONNX, run / INT8_ONNX)
    torch.manual_seed(5)
    save_weights(UNet(load_model(run).config.model), run / "model.safetensors")  # new weights: int8 is stale
    assert load_model(run).model.path.name == ONNX  # re-exported fp32, the stale int8 file left alone
    assert "out of date" in caplog.text
    with pytest.raises(NucleisegError, match="out of date"):
        load_model(run, precision="int8")


def test_export_int8_without_data_is_a_one_line_error(tiny_run):
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "export", "--model", str(tiny_run), "--int8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "export --int8 needs --data" in proc.stderr
