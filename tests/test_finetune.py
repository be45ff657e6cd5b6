"""Fine-tuning: the starting model's configuration, the few-image policy, early stopping."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")


def test_finetune_config_takes_the_network_and_targets_from_the_starting_model():
    from nucleiseg.checkpoint import load_settings
    from nucleiseg.finetune import SCHEDULE, finetune_config

    _, bundled, _ = load_settings()
    config = finetune_config("default")
    assert config.model == bundled.model and config.targets == bundled.targets
    assert config.canonical_diameter == bundled.canonical_diameter and config.init == "default"
    assert config.lr == SCHEDULE["lr"] < bundled.lr and config.patience > 0 and 0 < config.time_limit <= 600


def test_few_images_train_on_all_and_say_so(synthetic_dsb, tmp_path, caplog):
    import json

    from nucleiseg import load_model
    from nucleiseg.finetune import finetune

    for extra in sorted(synthetic_dsb.iterdir())[3:]:  # keep 3 images
        shutil.rmtree(extra)
    with caplog.at_level("INFO", logger="nucleiseg"):
        out = finetune(synthetic_dsb, tmp_path / "run", epochs=1, samples_per_epoch=4, batch_size=4, input_size=64)
    record = json.loads((out / "config.json").read_text())["datasets"][0]
    assert record["train_images"] == 3 and record["validated_on_training_images"]
    assert "validation score is on the training images" in caplog.text
    assert "scored on the training images" in caplog.text
    assert (out / "thresholds.json").is_file()
    assert load_model(out, backend="torch").segment(np.zeros((64, 64), np.uint8)).shape == (64, 64)  # a model folder


def test_stale_validations_count_since_the_best():
    from nucleiseg.train import _stale_validations

    assert _stale_validations([]) == 0
    assert _stale_validations([{"val_dsb": "0.5"}, {"val_dsb": 0.7}, {"val_dsb": 0.6}, {"val_dsb": 0.65}]) == 2
    assert _stale_validations([{"val_dsb": 0.5}, {"val_dsb": 0.7}]) == 0


def test_training_stops_early_without_improvement(synthetic_dsb, tmp_path, caplog):
    import dataclasses

    from nucleiseg.config import preset
    from nucleiseg.history import read_history
    from nucleiseg.train import train

    config = dataclasses.replace(preset("tiny"), epochs=6, lr=1e-9, patience=1, samples_per_epoch=4)
    with caplog.at_level("INFO", logger="nucleiseg"):
        out = train(synthetic_dsb, tmp_path / "run", config)
    assert len(read_history(out / "history.csv")) < 6
    assert "stopping after epoch" in caplog.text
