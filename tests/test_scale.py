"""Scaling out: ONNX export and backend, sharded prediction, DDP training under torchrun.

A tiny model is trained once per module on synthetic discs (with the tiny preset's bf16 and channels-last
training settings), so nothing here needs the bundled model.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import run_cli, synthetic_image, write_dsb_folder
from PIL import Image

from nucleiseg.config import preset
from nucleiseg.data import Item
from nucleiseg.predict import predict, select_shard, shard_of

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUCLEISEG_WORKERS": "0"}


def cli(*args: object) -> subprocess.CompletedProcess:
    return run_cli(*args, env=ENV, timeout=300)


def write_dsb(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, labels = synthetic_image(rng, (64, 64))
        write_dsb_folder(root, f"img{i}", image, labels)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


@pytest.fixture(scope="module")
def run_dir(base: Path) -> Path:
    """A tiny model trained for one short epoch on three synthetic images (bf16 + channels-last training)."""
    from nucleiseg.train import train

    # trained with bf16 autocast and channels-last; inference runs fp32
    config = dataclasses.replace(preset("tiny"), epochs=1, samples_per_epoch=4, batch_size=2, val_fraction=0.34,
                                 bf16=True)
    assert config.channels_last
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUCLEISEG_WORKERS", "0")
        mp.setenv("NUCLEISEG_CACHE", str(base / "cache"))
        return train(write_dsb(base / "dsb", 3), base / "run", config)


@pytest.fixture(scope="module")
def images(base: Path) -> Path:
    """Nine small PNGs (one non-square) in a plain folder."""
    rng = np.random.default_rng(1)
    folder = base / "images"
    folder.mkdir()
    for i in range(9):
        image, _ = synthetic_image(rng, (48, 80) if i == 0 else (64, 64))
        Image.fromarray(image[..., 0]).save(folder / f"cells{i}.png")
    return folder


def read_tifs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


# --- ONNX ---------------------------------------------------------------------------------------------

def test_onnx_matches_torch(run_dir, base):
    from nucleiseg.runners import OnnxRunner, TorchRunner
    from nucleiseg.segmenter import load_model

    seg = load_model(run_dir, tta=False, backend="torch")
    onnx_seg = load_model(run_dir, tta=False)  # exports run_dir/model.onnx once
    assert (run_dir / "model.onnx").is_file() and not [p for p in run_dir.iterdir() if p.name.startswith(".model")]
    assert isinstance(onnx_seg.model, OnnxRunner) and isinstance(seg.model, TorchRunner)
    assert onnx_seg.model.device == seg.model.device == "cpu"
    rng = np.random.default_rng(2)
    shapes = [(64, 64), (48, 80), (37, 53), (64, 96)]  # non-square, and not multiples of the stride
    found = 0
    for shape in shapes:
        image, _ = synthetic_image(rng, shape)
        p_torch, p_onnx = seg.probabilities(image), onnx_seg.probabilities(image)
        assert p_torch.shape == p_onnx.shape == (2, *shape)
        assert np.abs(p_torch - p_onnx).max() <= 1e-4, shape
        labels = seg.segment(image)
        np.testing.assert_array_equal(labels, onnx_seg.segment(image))
        found += int(labels.max())
    assert found > 0  # the comparison is not between two empty label images
    # the tiled path too (a 24-px tile forces a 3x4 grid of overlapping tiles on a 48x80 image)
    image, _ = synthetic_image(rng, (48, 80))
    small_torch, small_onnx = seg.with_options(tile=24, overlap=8), onnx_seg.with_options(tile=24, overlap=8)
    assert np.abs(small_torch.probabilities(image) - small_onnx.probabilities(image)).max() <= 1e-4


def test_onnx_cli_export_and_predict(run_dir, images, base):
    out = base / "onnx_cli"
    onnx = out / "exported.onnx"
    out.mkdir()
    proc = cli("export", "--onnx", onnx, "--model", run_dir)
    assert proc.returncode == 0, proc.stderr
    assert onnx.stat().st_size > 0
    picks = [images / "cells0.png", images / "cells1.png"]
    proc = cli("predict", *picks, "-o", out / "torch", "--model", run_dir, "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    proc = cli("predict", *picks, "-o", out / "onnx", "--model", run_dir, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    a, b = read_tifs(out / "torch"), read_tifs(out / "onnx")
    assert sorted(a) == sorted(b) == ["cells0.tif", "cells1.tif"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


# --- sharded prediction -------------------------------------------------------------------------------

def test_shards_partition_the_inputs(run_dir, images, base):
    full = predict([images], base / "all", model_dir=run_dir, tta=False)
    assert not full.failed and len(full.written) == 9
    expected = read_tifs(base / "all")
    union: dict[str, np.ndarray] = {}
    for k in (1, 2, 3):
        part = predict([images], base / "shards", model_dir=run_dir, tta=False, shard=(k, 3))
        assert not part.failed
        names = {p.name for p in part.written}
        assert not names & set(union), "shards overlap"
        union.update({n: tifffile.imread(base / "shards" / n) for n in names})
    assert sorted(union) == sorted(expected)
    for name, labels in expected.items():
        np.testing.assert_array_equal(union[name], labels)


def test_shard_selection_is_stable_and_follows_torchrun(monkeypatch):
    items = [Item(f"id{i}", Path(f"id{i}.png")) for i in range(30)]
    shards = [select_shard(items, (k, 4)) for k in range(1, 5)]
    assert sorted(it.image_id for s in shards for it in s) == sorted(it.image_id for it in items)
    assert select_shard(list(reversed(items)), (2, 4)) == list(reversed(shards[1]))  # order-independent
    assert shard_of("id7", 4) == shard_of("id7", 4) and all(1 <= shard_of(it.image_id, 4) <= 4 for it in items)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert select_shard(items, None) == items
    monkeypatch.setenv("WORLD_SIZE", "4")
    for rank in range(4):
        monkeypatch.setenv("RANK", str(rank))
        assert select_shard(items, None) == shards[rank]
        assert select_shard(items, (1, 4)) == shards[0]  # an explicit --shard wins


# --- DDP ----------------------------------------------------------------------------------------------

def test_epoch_samples_are_split_across_ranks():
    from nucleiseg.training_data import epoch_indices

    for config in (preset("tiny"), dataclasses.replace(preset("seed"), seed=3)):
        for epoch in (0, 1):
            whole = epoch_indices(config, 10, epoch)
            parts = [epoch_indices(config, 10, epoch, rank, 2) for rank in range(2)]
            assert len(parts[0]) == len(parts[1]) == len(whole) // 2
            assert not set(parts[0]) & set(parts[1]) and parts[0] + parts[1] == whole
    assert epoch_indices(preset("tiny"), 10, 1, 0, 2) != epoch_indices(preset("tiny"), 10, 0, 0, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs `nucleiseg train` like `python -m nucleiseg`, then saves this rank's final network weights: a
# recording subclass of UNet catches the network train() builds.
RANK_DUMP_SCRIPT = """
import os, sys
from pathlib import Path
import importlib

train_module = importlib.import_module("nucleiseg.train")
from nucleiseg.checkpoint import save_weights
from nucleiseg.cli import main

built = []

class RecordedUNet(train_module.UNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        built.append(self)

train_module.UNet = RecordedUNet
code = main(sys.argv[2:])
assert len(built) == 1, len(built)
save_weights(built[0], Path(sys.argv[1]) / f"rank{os.environ['RANK']}.safetensors")
sys.exit(code)
"""


def test_torchrun_ddp_training(tmp_path):
    from safetensors.torch import load_file

    data = write_dsb(tmp_path / "dsb", 6)
    out, dump = tmp_path / "run", tmp_path / "ranks"
    dump.mkdir()
    script = tmp_path / "train_and_dump.py"
    script.write_text(RANK_DUMP_SCRIPT)
    env = {**ENV, "NUCLEISEG_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           script, dump, "train", "--data", data, "--out", out, "--preset", "tiny", "--epochs", "2",
           "--samples-per-epoch", "8", "--val-fraction", "0.34"]
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for epoch in (1, 2):  # only rank 0 validates and logs
        assert proc.stderr.count(f"epoch {epoch}/2  train loss") == 1, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.safetensors", "config.json", "history.csv",
                                                     "loss_curve.png", "model.safetensors"]
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("1,") and rows[2].startswith("2,")  # each epoch logged once
    # the ranks end with the same weights (batch-norm statistics included)
    r0, r1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
    # the saved training state holds exactly the ranks' final weights
    state = load_file(str(out / "checkpoint.safetensors"))
    for k in r0:
        torch.testing.assert_close(state[f"model.{k}"], r0[k], rtol=0, atol=0, msg=k)
