"""Network runners: one interface for onnxruntime and torch, the bundled model.onnx kept in step with its
weights, export, devices, and prediction without torch."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

from nucleiseg.checkpoint import ONNX, default_model_dir
from nucleiseg.errors import NucleisegError
from nucleiseg.export import DIGEST_KEY, weights_digest
from nucleiseg.io import read_image
from nucleiseg.runners import OnnxRunner, TorchRunner, torch_runner
from nucleiseg.segmenter import load_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# a Python prelude that makes torch (and the packages that only the train extra brings) unimportable
NO_TORCH = ("import sys\n"
            "for name in ('torch', 'safetensors', 'onnxscript'):\n"
            "    sys.modules[name] = None\n")


def sample_images() -> list[Path]:
    return sorted(SAMPLE.glob("*/images/*.png"))


def python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=timeout)


def cli_without_torch(*args: object) -> subprocess.CompletedProcess:
    code = NO_TORCH + f"from nucleiseg.cli import main\nsys.exit(main({[str(a) for a in args]!r}))\n"
    return python(code)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert any(all(n in ln for n in needles) for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr


def test_runners_share_one_interface():
    onnx, torch_ = OnnxRunner(default_model_dir() / ONNX, device="cpu"), torch_runner(device="cpu")
    batch = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 96)).astype(np.float32)
    for runner in (onnx, torch_):
        assert runner.device == "cpu"
        prob = runner.run(batch)
        assert prob.shape == (2, load_model().config.model.out_channels, 64, 96) and prob.dtype == np.float32
        assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert np.abs(onnx.run(batch) - torch_.run(batch)).max() <= 1e-4


def test_bundled_onnx_matches_its_weights_on_the_sample():
    """model.onnx and model.safetensors can never drift apart: same probabilities, same labels."""
    assert OnnxRunner(default_model_dir() / ONNX).metadata[DIGEST_KEY] == weights_digest(default_model_dir())
    onnx, torch_ = load_model(tta=False, precision="fp32"), load_model(tta=False, backend="torch")
    assert isinstance(onnx.model, OnnxRunner) and isinstance(torch_.model, TorchRunner)
    found = 0
    for path in sample_images():
        image = read_image(path)
        p_onnx, p_torch = onnx.probabilities(image), torch_.probabilities(image)
        assert np.abs(p_onnx - p_torch).max() <= 1e-4, path.name
        labels = onnx.segment(image)
        np.testing.assert_array_equal(labels, torch_.segment(image), err_msg=path.name)
        found += int(labels.max())
    assert found > 100


def test_tta_agrees_across_runners():
    image = read_image(sample_images()[0])[:96, :128]
    onnx, torch_ = load_model(tta=True, precision="fp32"), load_model(tta=True, backend="torch")
    assert np.abs(onnx.probabilities(image) - torch_.probabilities(image)).max() <= 1e-4


def test_export_regenerates_the_folder_onnx(tiny_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "export", "--model", str(tiny_run)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path = tiny_run / ONNX
    assert str(path) in proc.stdout and OnnxRunner(path).metadata[DIGEST_KEY] == weights_digest(tiny_run)
    # new weights make the export stale: loading exports again (torch is here), in place
    import torch

    from nucleiseg.checkpoint import save_weights
    from nucleiseg.model import UNet

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", ONNX):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    torch.manual_seed(1)
    save_weights(UNet(load_model(tiny_run).config.model), run / "model.safetensors")
    seg = load_model(run)
    assert seg.model.metadata[DIGEST_KEY] == weights_digest(run) != weights_digest(tiny_run)
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    assert np.abs(seg.probabilities(image) - load_model(run, backend="torch").probabilities(image)).max() <= 1e-4


def test_run_folder_without_onnx_and_without_torch(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    (tmp_path / "a.png").write_bytes(sample_images()[0].read_bytes())
    proc = cli_without_torch("predict", tmp_path / "a.png", "-o", tmp_path / "out", "--model", run)
    one_line_error(proc, str(run), "no model.onnx", "nucleiseg export --model")
    assert not (run / ONNX).exists()


def test_commands_that_need_torch_say_what_to_install(tiny_run, tmp_path):
    for args in (("train", "--data", tmp_path, "--out", tmp_path / "run"), ("export", "--model", tiny_run),
                 ("predict", sample_images()[0], "-o", tmp_path / "out", "--backend", "torch")):
        proc = cli_without_torch(*args)
        one_line_error(proc, 'pip install torch==2.13.0 "nucleiseg[train]"')


def test_predict_and_report_import_no_torch(tmp_path):
    """The core install's path: predict (overlay, measurements) and evaluate --report never import torch."""
    image = sample_images()[0]
    truth = tmp_path / "truth"
    shutil.copytree(image.parents[1], truth / image.stem)
    code = NO_TORCH + (
        "from nucleiseg.cli import main\n"
        f"assert main(['predict', {str(truth)!r}, '-o', {str(tmp_path / 'out')!r}, '--overlay', '--measure']) == 0\n"
        f"assert main(['evaluate', '--pred', {str(tmp_path / 'out')!r}, '--truth', {str(truth)!r}, "
        f"'--report', {str(tmp_path / 'report')!r}]) == 0\n"
        "import nucleiseg\n"
        "from nucleiseg.measure import measure\n"
        "labels = nucleiseg.load_model().segment(nucleiseg.read_image(" f"{str(image)!r}))\n"
        "assert len(measure(labels)['label']) == labels.max() > 0\n"
        "assert sys.modules.get('torch') is None, 'torch was imported'\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / f"{image.stem}.tif").is_file() and (tmp_path / "report").is_dir()


def test_predict_imports_no_torch_even_when_installed(tmp_path):
    image = sample_images()[0]
    code = ("import sys\nfrom nucleiseg.cli import main\n"
            f"assert main(['predict', {str(image)!r}, '-o', {str(tmp_path / 'out')!r}]) == 0\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'onnx', 'safetensors') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime has a CUDA provider here")
    with pytest.raises(NucleisegError, match="--device cuda"):
        OnnxRunner(default_model_dir() / ONNX, device="cuda")
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "predict", str(sample_images()[0]), "-o",
                           str(tmp_path / "out"), "--device", "cuda"], capture_output=True, text=True, env=ENV,
                          timeout=300)
    one_line_error(proc, "--device cuda")


def test_unknown_backend():
    with pytest.raises(NucleisegError, match="unknown backend 'tpu'"):
        load_model(backend="tpu")


def test_segmenter_wraps_a_bare_torch_module():
    """A torch module passed by code written before runners (a running training process) still works."""
    seg = load_model(tta=False, backend="torch")
    bare = dataclasses.replace(seg, model=seg.model.model)
    assert isinstance(bare.model, TorchRunner)
    image = read_image(sample_images()[0])[:64, :64]
    np.testing.assert_array_equal(bare.probabilities(image), seg.probabilities(image))


def test_pipelined_prediction_matches_one_image_at_a_time(tmp_path):
    import tifffile

    from nucleiseg.predict import predict

    one = predict([SAMPLE], tmp_path / "one", workers=1, rle=tmp_path / "one.csv")
    many = predict([SAMPLE], tmp_path / "many", workers=3, rle=tmp_path / "many.csv")
    assert not one.failed and [p.name for p in one.written] == [p.name for p in many.written]
    for a, b in zip(one.written, many.written):
        np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "many.csv").read_text()  # rows in input order
