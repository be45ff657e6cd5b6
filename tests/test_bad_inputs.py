"""A battery of bad inputs: each gets a correct result or a one-line error naming the file and the problem.

A tiny model is trained once per module on synthetic discs, so prediction needs no bundled model.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import disc_labels, run_cli, write_dsb_folder
from PIL import Image

import nucleiseg.io
from nucleiseg.config import preset
from nucleiseg.data import list_dataset, load_item
from nucleiseg.errors import InputError, NucleisegError
from nucleiseg.io import ensure_output_dir, read_image
from nucleiseg.predict import predict

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUCLEISEG_WORKERS": "0"}


def cli(*args: object) -> subprocess.CompletedProcess:
    return run_cli(*args, env=ENV, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, status: int = 1) -> None:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert errors, proc.stderr
    assert any(all(n in ln for n in needles) for ln in errors), proc.stderr


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def run_dir(trained_tiny_run: Path) -> Path:
    return trained_tiny_run


@pytest.fixture(scope="module")
def seg(run_dir: Path):
    from nucleiseg.segmenter import load_model

    return load_model(run_dir)


def good_png(path: Path, shape: tuple[int, int] = (40, 48)) -> Path:
    labels = disc_labels(shape, [(shape[0] / 2, shape[1] / 2, 8)])
    Image.fromarray(np.where(labels > 0, 200, 20).astype(np.uint8)).save(path)
    return path


# --- unreadable files: a one-line error naming the file ---------------------------------------------------

def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png: empty file"):
        read_image(tmp_path / "empty.png")


def test_truncated_png(tmp_path):
    data = good_png(tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png: cannot read image.*truncated"):
        read_image(tmp_path / "cut.png")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(InputError, match=r"notes\.png: cannot read image"):
        read_image(tmp_path / "notes.png")


def test_3d_stack_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(InputError, match=r"stack\.tif: multi-page TIFF \(5 pages\)"):
        read_image(tmp_path / "stack.tif")
    tifffile.imwrite(tmp_path / "planes.tif", np.zeros((32, 32, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(InputError, match=r"planes\.tif: .*3-D stacks are not supported"):
        read_image(tmp_path / "planes.tif")


def test_multi_page_tiff_is_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        tw.write(np.zeros((32, 32), np.uint8))
        tw.write(np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match=r"pages\.tif: multi-page TIFF \(2 pages\)"):
        read_image(tmp_path / "pages.tif")


def test_all_nan_float_image_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((16, 16), np.nan, np.float32))
    with pytest.raises(InputError, match=r"nan\.tif: image holds no finite values"):
        read_image(tmp_path / "nan.tif")


def test_memory_guard_refuses_before_decoding(tmp_path, monkeypatch):
    path = good_png(tmp_path / "huge.png")
    decoded = []
    monkeypatch.setattr(nucleiseg.io, "available_memory", lambda: 1000)
    monkeypatch.setattr(nucleiseg.io, "_decode", lambda p: decoded.append(p))
    with pytest.raises(InputError, match=r"huge\.png: image of shape \(40, 48, 1\) needs .*tiles"):
        read_image(path)
    assert not decoded


# --- odd but valid images: a correct label image ----------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 70)], ids=["1x1", "3x5", "2x70"])
def test_tiny_images_are_padded_and_cropped_back(tmp_path, run_dir, shape):
    Image.fromarray(np.full(shape, 120, np.uint8)).save(tmp_path / "small.png")
    summary = predict([tmp_path / "small.png"], tmp_path / "out", model_dir=run_dir)
    assert not summary.failed
    labels = tifffile.imread(tmp_path / "out" / "small.tif")
    assert labels.shape == shape


def _finite_labels(seg, image: np.ndarray) -> np.ndarray:
    labels = seg.segment(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int32 and labels.min() >= 0
    return labels


def test_16bit_png_and_tiff(tmp_path, seg):
    rng = np.random.default_rng(1)
    arr = (disc_labels((40, 40), [(20, 20, 8)]) * 40000 + rng.integers(0, 2000, (40, 40))).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "u16.png")
    tifffile.imwrite(tmp_path / "u16.tif", arr)
    for name in ("u16.png", "u16.tif"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint16 and image.shape == (40, 40, 3)
        np.testing.assert_array_equal(image[..., 0], arr)
        _finite_labels(seg, image)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_with_nan_and_inf(tmp_path, seg, dtype):
    arr = (disc_labels((40, 40), [(20, 20, 8)]) * 0.8 + 0.1).astype(dtype)
    arr[0, 0], arr[1, 1], arr[2, 2] = np.nan, np.inf, -np.inf
    tifffile.imwrite(tmp_path / "f.tif", arr)
    image = read_image(tmp_path / "f.tif")
    assert image.dtype == np.float32 and np.isfinite(image).all()
    _finite_labels(seg, image)


@pytest.mark.parametrize("value", [0, 255], ids=["all-black", "saturated"])
def test_flat_images_give_no_nuclei(tmp_path, value):
    # the bundled model: an untrained test network outputs ~0.5 everywhere, on either side of the threshold
    from nucleiseg.segmenter import load_model

    Image.fromarray(np.full((48, 48, 3), value, np.uint8)).save(tmp_path / "flat.png")
    labels = _finite_labels(load_model(), read_image(tmp_path / "flat.png"))
    assert labels.max() == 0


# --- annotations -----------------------------------------------------------------------------------------

def test_mask_of_another_size(tmp_path):
    d = write_dsb_folder(tmp_path, "a", np.zeros((20, 20, 3), np.uint8), disc_labels((20, 20), [(10, 10, 4)]))
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(d / "masks" / "small.png")
    (item,) = list_dataset(tmp_path)
    with pytest.raises(InputError, match=r"small\.png: mask shape \(12, 20\) differs from image shape \(20, 20\)"):
        load_item(item)


def test_label_image_of_another_size(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "images" / "a.png")
    tifffile.imwrite(tmp_path / "labels" / "a.tif", np.zeros((20, 21), np.uint16))
    (item,) = list_dataset(tmp_path)
    with pytest.raises(InputError, match=r"a\.tif: label shape"):
        load_item(item)


def test_overlapping_masks_load_with_a_warning(tmp_path, caplog):
    d = write_dsb_folder(tmp_path, "a", np.zeros((20, 20, 3), np.uint8), disc_labels((20, 20), [(8, 8, 4)]))
    second = disc_labels((20, 20), [(11, 11, 4)]) > 0
    Image.fromarray((second * 255).astype(np.uint8)).save(d / "masks" / "m002.png")
    (item,) = list_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        _, labels = load_item(item)
    assert labels.max() == 2 and (labels[second] == 2).all()  # the later mask keeps shared pixels
    assert "more than one mask" in caplog.text and "masks" in caplog.text


def test_empty_masks_folder_is_an_image_without_nuclei(tmp_path, caplog):
    d = write_dsb_folder(tmp_path, "a", np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.int32))
    assert not list((d / "masks").iterdir())
    with caplog.at_level(logging.WARNING):
        (item,) = list_dataset(tmp_path)
    assert "empty masks folder" in caplog.text and str(d / "masks") in caplog.text
    _, labels = load_item(item)
    assert labels.shape == (20, 20) and labels.max() == 0


def test_label_image_with_gaps_in_ids_scores_correctly(tmp_path):
    from nucleiseg.evaluate import evaluate

    truth = disc_labels((40, 40), [(10, 10, 5), (28, 12, 5), (20, 30, 6)])
    gappy = np.choose(truth, [0, 3, 17, 250]).astype(np.uint16)
    (tmp_path / "truth" / "images").mkdir(parents=True)
    (tmp_path / "truth" / "labels").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "truth" / "images" / "a.png")
    tifffile.imwrite(tmp_path / "truth" / "labels" / "a.tif", gappy)
    tifffile.imwrite(tmp_path / "pred" / "a.tif", truth.astype(np.uint16))
    summary = evaluate(tmp_path / "pred", tmp_path / "truth", quiet=True)
    assert summary["overall"]["dsb"] == pytest.approx(1.0)
    assert summary["overall"]["n_true"] == 3


# --- output folder and write errors ----------------------------------------------------------------------

def test_missing_output_folder_is_created(tmp_path, run_dir):
    good_png(tmp_path / "a.png")
    out = tmp_path / "deep" / "er" / "out"
    summary = predict([tmp_path / "a.png"], out, model_dir=run_dir)
    assert summary.written == [out / "a.tif"] and not summary.failed


def test_read_only_output_folder(tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: emulate what access(2) says to other users
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
    try:
        with pytest.raises(NucleisegError, match=r"ro: output folder is not writable"):
            ensure_output_dir(out)
    finally:
        out.chmod(0o755)


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(NucleisegError, match=r"out: cannot create output folder"):
        ensure_output_dir(tmp_path / "out")


def test_disk_full_part_way_leaves_no_half_written_file(tmp_path, run_dir, monkeypatch, caplog):
    for name in ("a", "b"):
        good_png(tmp_path / f"{name}.png")
    real = tifffile.imwrite

    def full_disk(path, data, **kwargs):
        if Path(path).name.startswith(".b."):  # a's label image is written, b's runs out of space
            Path(path).write_bytes(b"II*\x00partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        summary = predict([tmp_path / "a.png", tmp_path / "b.png"], out, model_dir=run_dir)
    assert summary.written == [out / "a.tif"]
    assert [p for p, _ in summary.failed] == [tmp_path / "b.png"]
    assert f"{out / 'b.tif'}: cannot write output (No space left on device)" == summary.failed[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]  # no b.tif, no temporary file
    assert "1 failed" in caplog.text


def test_atomic_write_error_names_the_target(tmp_path):
    from nucleiseg.atomic import atomic_path

    with pytest.raises(OSError) as info, atomic_path(tmp_path / "x.csv") as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "x.csv")
    assert not list(tmp_path.iterdir())


# --- models and options ----------------------------------------------------------------------------------

def _copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def test_corrupt_weights_file(tmp_path, run_dir):
    from nucleiseg.segmenter import load_model

    bad = _copy_run(run_dir, tmp_path / "run")
    (bad / "model.safetensors").write_bytes(os.urandom(64) + b"garbage" * 50)
    with pytest.raises(NucleisegError, match=r"model\.safetensors: corrupt or unreadable weights file"):
        load_model(bad)
    (bad / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes()[:500])  # truncated
    with pytest.raises(NucleisegError, match=r"model\.safetensors: corrupt or unreadable weights file"):
        load_model(bad)


@pytest.mark.parametrize("change", [
    {"widths": [16, 32, 64]},
    {"widths": [8, 16, 32, 64], "dropout": [0, 0, 0, 0]},
    {"norm": "none"},
], ids=["widths", "depth", "norm"])
def test_weights_of_another_configuration(tmp_path, run_dir, change):
    from nucleiseg.segmenter import load_model

    other = _copy_run(run_dir, tmp_path / "run")
    config = json.loads((other / "config.json").read_text())
    config["model"].update(change)
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(NucleisegError, match=r"model\.safetensors: weights do not fit the model configuration"):
        load_model(other)


@pytest.mark.parametrize("name,text,problem", [
    ("config.json", "{not json", "cannot read model config"),
    ("config.json", "[1, 2]", "invalid model config"),
    ("config.json", '{"model": {"widths": ["x", 16, 32], "dropout": [0, 0, 0]}}', "invalid model config"),
    ("config.json", '{"model": {"norm": "weird"}}', "invalid model config"),
    ("thresholds.json", '{"mask_threshold": 2}', "invalid thresholds"),
], ids=["not-json", "list", "bad-width", "bad-norm", "threshold-range"])
def test_invalid_model_files_are_named(tmp_path, run_dir, name, text, problem):
    from nucleiseg.segmenter import load_model

    bad = _copy_run(run_dir, tmp_path / "run")
    (bad / name).write_text(text)
    with pytest.raises(NucleisegError, match=rf"{name.replace('.', r'[.]')}: {problem}"):
        load_model(bad)


def test_unknown_preset():
    with pytest.raises(NucleisegError, match="unknown preset 'huge': choose one of"):
        preset("huge")


@pytest.mark.parametrize("args,needle", [
    (("train", "--data", "d", "--out", "o", "--epochs", "0"), "--epochs: must be >= 1"),
    (("train", "--data", "d", "--out", "o", "--val-fraction", "1.5"), "--val-fraction: must lie strictly"),
    (("predict", "x.png", "-o", "o", "--shard", "3/2"), "--shard: need 1 <= K <= N"),
    (("predict", "x.png", "-o", "o", "--tile", "-1"), "--tile: must be >= 1"),
    (("predict", "x.png", "-o", "o", "--backend", "tpu"), "--backend: invalid choice"),
], ids=["epochs-0", "val-fraction", "shard", "tile", "backend"])
def test_invalid_option_values(args, needle):
    proc = cli(*args)
    assert_one_line_error(proc, needle, status=2)


# --- the command line: one-line errors, batches finish, summary at the end -------------------------------

def test_cli_batch_with_one_broken_file(tmp_path, run_dir):
    images = tmp_path / "images"
    images.mkdir()
    good_png(images / "a.png")
    good_png(images / "c.png", (33, 47))
    (images / "b.png").write_bytes(good_png(tmp_path / "b.png").read_bytes()[:60])
    out = tmp_path / "out"
    proc = cli("predict", images, "-o", out, "--model", run_dir, "--overlay", "--measure")
    assert_one_line_error(proc, "nucleiseg: error:", str(images / "b.png"), "cannot read image")
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.tif", "c.tif"]
    assert tifffile.imread(out / "c.tif").shape == (33, 47)
    assert no_temp_files(out)
    tail = proc.stderr.strip().splitlines()[-2:]
    assert "predicted 2 image(s)" in tail[0] and "1 failed" in tail[0]
    assert "failed:" in tail[1] and "b.png" in tail[1]


def test_cli_corrupt_weights(tmp_path, run_dir):
    bad = _copy_run(run_dir, tmp_path / "run")
    (bad / "model.safetensors").write_bytes(b"\0" * 100)
    good_png(tmp_path / "a.png")
    proc = cli("predict", tmp_path / "a.png", "-o", tmp_path / "out", "--model", bad)
    assert_one_line_error(proc, str(bad / "model.safetensors"), "corrupt")
    assert not list((tmp_path / "out").glob("*.tif"))


def test_cli_output_is_a_file(tmp_path, run_dir):
    good_png(tmp_path / "a.png")
    (tmp_path / "out").write_text("a file")
    proc = cli("predict", tmp_path / "a.png", "-o", tmp_path / "out", "--model", run_dir)
    assert_one_line_error(proc, str(tmp_path / "out"), "cannot create output folder")


def test_cli_missing_input_file(tmp_path):
    proc = cli("predict", tmp_path / "nope.png", "-o", tmp_path / "out")
    assert_one_line_error(proc, str(tmp_path / "nope.png"), "no such file")


def test_rle_into_a_read_only_place_fails_before_predicting(tmp_path, run_dir):
    good_png(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NucleisegError, match=r"file: cannot create output folder"):
        predict([tmp_path / "a.png"], tmp_path / "out", model_dir=run_dir, rle=tmp_path / "file" / "sub.csv")
    assert not list((tmp_path / "out").iterdir())


def test_unexpected_error_on_one_image_does_not_stop_the_batch(tmp_path, run_dir, monkeypatch):
    from nucleiseg.segmenter import Segmenter

    good_png(tmp_path / "a.png")
    good_png(tmp_path / "b.png", (30, 30))
    real = Segmenter.segment_with_diameter

    def flaky(self, image):
        if image.shape[0] == 30:
            raise RuntimeError("boom")
        return real(self, image)

    monkeypatch.setattr(Segmenter, "segment_with_diameter", flaky)
    summary = predict([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out", model_dir=run_dir)
    assert summary.written == [tmp_path / "out" / "a.tif"]
    assert summary.failed == [(tmp_path / "b.png", f"{tmp_path / 'b.png'}: failed (RuntimeError: boom)")]
