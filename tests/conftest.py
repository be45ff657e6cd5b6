"""Shared fixtures: synthetic disc images with known answers, the bundled sample, slow-test opt-in."""

from __future__ import annotations

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


def disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def disc_labels(shape: tuple[int, int], discs: list[tuple[float, float, float]]) -> np.ndarray:
    """Label image with one disc per (y, x, r); later discs overwrite earlier ones."""
    labels = np.zeros(shape, np.int32)
    for i, (y, x, r) in enumerate(discs, start=1):
        labels[disc(shape, (y, x), r)] = i
    return labels


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
