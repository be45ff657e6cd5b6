"""The README's Python API example, and tune's thresholds file being picked up by predict."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import SAMPLE

import nucleiseg


def test_readme_api_example_on_a_sample_image():
    model = nucleiseg.load_model()
    item = next(p for p in sorted(SAMPLE.iterdir()) if p.is_dir())
    image = nucleiseg.read_image(item / "images" / f"{item.name}.png")
    labels = model.segment(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int32
    table = nucleiseg.measure(labels, image)
    assert len(table["label"]) == labels.max()
    assert set(table) >= {"label", "area", "centroid_y", "centroid_x", "eccentricity", "solidity", "mean_intensity"}
    np.testing.assert_array_equal(np.sort(table["area"]), np.sort(np.bincount(labels.ravel())[1:]))
    assert nucleiseg.score_image(labels, labels)["dsb"] == 1.0
    grey = model.segment(image[..., 0])  # a plain 2-D array works too
    assert grey.shape == image.shape[:2]


def test_tune_writes_thresholds_that_predict_loads(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    from nucleiseg.config import preset
    from nucleiseg.train import train

    run = train(synthetic_dsb, tmp_path / "run", dataclasses.replace(preset("tiny"), val_fraction=0.34, epochs=2))
    best = nucleiseg.tune(run, synthetic_dsb)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved == dataclasses.asdict(best)
    assert nucleiseg.load_model(run).post == best


def test_unknown_api_name():
    with pytest.raises(AttributeError):
        nucleiseg.does_not_exist


def test_api_functions_named_like_their_modules_survive_importing_the_modules():
    import importlib

    import nucleiseg

    for name in ("measure", "predict", "train", "evaluate", "tune"):
        importlib.import_module(f"nucleiseg.{name}")
        assert callable(getattr(nucleiseg, name)), name
    assert nucleiseg.measure is importlib.import_module("nucleiseg.measure").measure
