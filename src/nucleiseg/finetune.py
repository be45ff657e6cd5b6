"""Fine-tuning: continue training a trained model (the bundled one by default) on a few of your own images.

The network, targets, normalisation and input scale come from the starting model's ``config.json``, so the
result is a normal model folder that ``predict``, ``tune``, ``export`` and napari take; only the schedule
changes: a lower learning rate, a short warm-up, few samples per epoch, early stopping on the validation part
and a time limit. At about 5 crops/s (256 px, 2 CPU cores, fp32) the defaults train for at most 9 minutes.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .checkpoint import THRESHOLDS, default_model_dir, load_settings
from .config import TrainConfig

log = logging.getLogger(__name__)

# 8 epochs x 256 crops ~ 410 s of training at 5 crops/s; one-cycle warms up over the first 10 % of steps
SCHEDULE: dict[str, Any] = dict(
    preset="finetune", lr=5e-4, schedule="onecycle", epochs=8, samples_per_epoch=256, val_every=1,
    patience=3, time_limit=540.0, bf16=False, compile=False, augment=True,
)


def model_folder(init: str | Path | None) -> Path:
    """The folder of ``init``: ``None`` or ``"default"`` is the bundled model."""
    return default_model_dir() if init in (None, "default") else Path(init)


def finetune_config(init: str | Path | None = "default", **changes: Any) -> TrainConfig:
    """The starting model's configuration with the fine-tuning schedule (``changes`` override either)."""
    _, config, _ = load_settings(model_folder(init))
    settings = {"init": str(init or "default"), **SCHEDULE, **changes}
    return dataclasses.replace(config, datasets=(), **settings)


def finetune(data: str | Path | list, out_dir: str | Path, init: str | Path | None = "default",
             config: TrainConfig | None = None, **changes: Any) -> Path:
    """Fine-tune ``init`` on ``data`` (folders as for ``train``) into ``out_dir``; returns ``out_dir``.

    ``config`` (default: ``finetune_config(init, **changes)``) is the run's configuration. The starting model's
    thresholds.json is copied into the new folder, so its post-processing settings carry over until
    ``nucleiseg tune`` replaces them.
    """
    from .train import train

    config = finetune_config(init, **changes) if config is None else config
    out = train(data, out_dir, config)
    thresholds = model_folder(config.init or init) / THRESHOLDS
    if thresholds.is_file() and not (out / THRESHOLDS).exists():
        write_text_atomic(out / THRESHOLDS, thresholds.read_text())
    return out
