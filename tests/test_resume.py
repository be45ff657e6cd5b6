"""Resume after a hard kill: a run killed with SIGKILL mid-training and resumed ends bit-identical to an
uninterrupted run with the same seed, and leaves no temporary files behind."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import disc_labels, write_dsb_folder

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUCLEISEG_WORKERS": "0"}


def train_cmd(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nucleiseg", "train", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--epochs", str(epochs), "--samples-per-epoch", "8", "--val-fraction", "0.34", *extra]


def state_epoch(run: Path) -> int:
    """Epochs completed according to checkpoint.safetensors (0 when there is none yet)."""
    from safetensors import safe_open

    if not (run / "checkpoint.safetensors").exists():
        return 0
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
        return int(json.loads(f.metadata()["info"])["epoch"])


def history_rows(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def kill_after_first_epoch(cmd: list[str], run: Path, env: dict) -> tuple[int, bool]:
    """Start ``cmd``, SIGKILL it once a checkpoint of epoch >= 1 exists; (epoch at kill, killed before exit)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "history.csv").exists() and state_epoch(run) >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            if proc.poll() is None:
                pytest.fail("training made no checkpoint within 120 s")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0, err
    return state_epoch(run), proc.returncode == -signal.SIGKILL


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = load(a), load(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=f"{a.name}: {k}")


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "dsb"
    for n in range(6):
        labels = disc_labels((64, 64), [(rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(4, 8))
                                        for _ in range(4)])
        image = np.clip(np.where(labels > 0, 200, 20) + rng.normal(0, 8, labels.shape), 0, 255).astype(np.uint8)
        write_dsb_folder(data, f"img{n}", np.stack([image] * 3, -1), labels)
    env = {**ENV, "NUCLEISEG_CACHE": str(tmp_path / "cache")}

    # a tiny epoch takes well under a second, so the kill may land several epochs in; if the run already
    # finished (or wrote its last checkpoint) before the kill, retry with more epochs
    for attempt, epochs in enumerate((6, 12, 24)):
        run = tmp_path / f"killed{attempt}"
        done, killed = kill_after_first_epoch(train_cmd(data, run, epochs), run, env)
        if killed and 1 <= done < epochs:
            break
    else:
        pytest.fail(f"could not kill a run before it finished (last: {done}/{epochs} epochs, killed={killed})")
    print(f"killed at epoch {done}/{epochs} (attempt {attempt + 1})")
    assert len(history_rows(run)) >= done  # history is written before the checkpoint that marks an epoch done

    # a kill during a write leaves a temporary file beside its target; resume must clear it up
    (run / ".checkpoint.k1ll3d__.safetensors").write_bytes(b"half a checkpoint")
    resumed = subprocess.run(train_cmd(data, run, epochs, "--resume"), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} at epoch {done + 1}" in resumed.stderr

    full = tmp_path / "full"
    proc = subprocess.run(train_cmd(data, full, epochs), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    assert_identical(full / "model.safetensors", run / "model.safetensors")
    assert_identical(full / "checkpoint.safetensors", run / "checkpoint.safetensors")
    assert state_epoch(run) == epochs
    assert (run / "config.json").read_text() == (full / "config.json").read_text()
    same = ("epoch", "train_loss", "val_loss", "val_dsb", "val_ap50", "lr")  # all but the timing
    assert [[r[k] for k in same] for r in history_rows(run)] == [[r[k] for k in same] for r in history_rows(full)]
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix in (".part", ".tmp")]
    assert not leftovers, leftovers
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in full.iterdir())
