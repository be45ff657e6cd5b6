"""Shared test helpers: synthetic disc images with known answers, the CLI in a subprocess, a tiny model folder,
the bundled sample, slow-test opt-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "nucleiseg" / "sample"
SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUCLEISEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_cli(*args: object, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m nucleiseg ARGS`` in a subprocess (captured text output; 2 threads and no data-loader workers
    unless ``env`` says otherwise; ``env`` adds to the current environment)."""
    full = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "NUCLEISEG_WORKERS": "0",
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "nucleiseg", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout)


def disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def disc_labels(shape: tuple[int, int], discs: list[tuple[float, float, float]]) -> np.ndarray:
    """Label image with one disc per (y, x, r); later discs overwrite earlier ones."""
    labels = np.zeros(shape, np.int32)
    for i, (y, x, r) in enumerate(discs, start=1):
        labels[disc(shape, (y, x), r)] = i
    return labels


def synthetic_image(rng: np.random.Generator, shape: tuple[int, int], n: int = 4,
                    radius: tuple[float, float] = (4, 8)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image of ``n`` bright noisy discs (radius drawn in ``radius``) on a dark background, and its
    labels."""
    h, w = shape
    discs = [(rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(*radius)) for _ in range(n)]
    labels = disc_labels(shape, discs)
    image = np.where(labels > 0, 200, 20) + rng.normal(0, 8, shape)
    return np.stack([np.clip(image, 0, 255).astype(np.uint8)] * 3, -1), labels


def write_dsb_folder(root: Path, image_id: str, image: np.ndarray, labels: np.ndarray) -> Path:
    """Write an image and its labels in the Kaggle DSB layout (one mask PNG per nucleus)."""
    from PIL import Image

    d = root / image_id
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(image).save(d / "images" / f"{image_id}.png")
    for i in range(1, labels.max() + 1):
        if (labels == i).any():
            Image.fromarray(((labels == i) * 255).astype(np.uint8)).save(d / "masks" / f"m{i:03d}.png")
    return d


@pytest.fixture
def synthetic_dsb(tmp_path: Path) -> Path:
    """Six 64x64 fluorescence-like images with 3-5 bright discs each, in DSB layout."""
    rng = np.random.default_rng(0)
    root = tmp_path / "dsb"
    for n in range(6):
        discs = [(rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(4, 8)) for _ in range(rng.integers(3, 6))]
        labels = disc_labels((64, 64), discs)
        image = np.where(labels > 0, 200, 20).astype(np.uint8)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        write_dsb_folder(root, f"img{n}", np.stack([image] * 3, -1), labels)
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with an untrained tiny network (config and weights, no model.onnx, no thresholds), one
    per test module (a module may add files to it)."""
    import torch

    from nucleiseg.checkpoint import save_weights
    from nucleiseg.config import preset, save_config
    from nucleiseg.model import UNet

    run = tmp_path_factory.mktemp("tiny") / "run"
    run.mkdir()
    config = preset("tiny")
    torch.manual_seed(0)
    save_weights(UNet(config.model), run / "model.safetensors")
    save_config(config, run / "config.json")
    return run


@pytest.fixture(scope="module")
def trained_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for one short epoch on three synthetic 64x64 disc images, one per test module."""
    import dataclasses

    from nucleiseg.config import preset
    from nucleiseg.train import train

    base = tmp_path_factory.mktemp("trained_tiny")
    rng = np.random.default_rng(0)
    for n in range(3):
        write_dsb_folder(base / "dsb", f"img{n}", *synthetic_image(rng, (64, 64)))
    config = dataclasses.replace(preset("tiny"), epochs=1, samples_per_epoch=4, batch_size=2, val_fraction=0.34)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUCLEISEG_WORKERS", "0")
        mp.setenv("NUCLEISEG_CACHE", str(base / "cache"))
        return train(base / "dsb", base / "run", config)
