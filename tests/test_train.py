import dataclasses
import csv
import json

import numpy as np
import pytest
import torch

from nucleiseg.checkpoint import load_network
from nucleiseg.config import preset
from nucleiseg.errors import NucleisegError
from nucleiseg.train import learning_rate, train


def _tiny(**changes):
    import dataclasses

    return dataclasses.replace(preset("tiny"), **changes)


def test_training_smoke_writes_a_rebuildable_run(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    out = train(synthetic_dsb, tmp_path / "run", _tiny(val_fraction=0.34))
    for name in ("model.safetensors", "config.json", "history.csv", "loss_curve.png", "checkpoint.safetensors"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_dsb"} <= set(rows[0])
    model, config, _ = load_network(out)
    assert config == dataclasses.replace(_tiny(val_fraction=0.34), datasets=config.datasets)
    (record,) = config.datasets
    assert record["name"] == "dsb" and record["train_images"] + record["val_images"] == 6
    assert len(record["sha256"]) == 64
    assert json.loads((out / "config.json").read_text())["preset"] == "tiny"


def test_training_is_reproducible_and_resume_matches(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    config = _tiny(val_fraction=0.34, epochs=3)
    full = train(synthetic_dsb, tmp_path / "full", config)
    part = train(synthetic_dsb, tmp_path / "part", config, max_epochs_this_run=1)  # as if killed after epoch 1
    train(synthetic_dsb, part, config, resume=True)
    a = load_network(full)[0].state_dict()
    b = load_network(part)[0].state_dict()
    from safetensors.torch import load_file

    la = load_file(str(full / "checkpoint.safetensors"))
    lb = load_file(str(part / "checkpoint.safetensors"))
    assert la.keys() == lb.keys()
    for k in la:
        torch.testing.assert_close(la[k], lb[k], rtol=0, atol=0)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_training_loss_falls_on_a_tiny_run(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    out = train(synthetic_dsb, tmp_path / "run", _tiny(val_fraction=0.34, epochs=4, samples_per_epoch=16,
                                                         lr=5e-3))
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(out / "history.csv"))]
    # measured: 1.58, 1.30, 1.26, 1.20
    assert len(losses) == 4 and np.mean(losses[-2:]) < 0.9 * losses[0], losses


def test_existing_run_is_not_overwritten(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    config = _tiny(val_fraction=0.34, epochs=1)
    train(synthetic_dsb, tmp_path / "run", config)
    with pytest.raises(NucleisegError, match="resume"):
        train(synthetic_dsb, tmp_path / "run", config)
    with pytest.raises(NucleisegError, match="nothing to resume"):
        train(synthetic_dsb, tmp_path / "other", config, resume=True)


def test_schedules():
    cfg = _tiny(epochs=10, schedule="onecycle", lr=1.0)
    lrs = [learning_rate(cfg, s, 100) for s in range(101)]
    assert np.argmax(lrs) == 10 and lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.01)
    assert learning_rate(_tiny(schedule="constant", lr=0.5), 50, 100) == 0.5


@pytest.mark.slow
def test_torch_compile_option_trains(synthetic_dsb, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    out = train(synthetic_dsb, tmp_path / "run", _tiny(val_fraction=0.34, epochs=1, compile=True))
    model, config, _ = load_network(out)
    assert config.compile and (out / "model.safetensors").exists()
