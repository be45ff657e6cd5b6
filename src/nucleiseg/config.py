"""Configuration: frozen dataclasses validated on creation, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NucleisegError

NORMS = ("none", "batch", "group")
INPUT_MODES = ("resize", "native")
NORMALIZATIONS = ("scale255", "percentile")
SCHEDULES = ("constant", "cosine", "onecycle")
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("bce", "bce_dice")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise NucleisegError(f"invalid {name} {value!r}: choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelConfig:
    """U-Net shape: one width and one dropout rate per level."""

    in_channels: int = 3
    out_channels: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3)
    norm: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "dropout", tuple(float(d) for d in self.dropout))
        if len(self.widths) < 2:
            raise NucleisegError("model needs at least 2 levels (widths)")
        if len(self.widths) != len(self.dropout):
            raise NucleisegError("model widths and dropout need the same number of levels")
        if any(w <= 0 for w in self.widths) or self.in_channels <= 0 or self.out_channels <= 0:
            raise NucleisegError("model widths and channel counts must be positive")
        if any(not 0.0 <= d < 1.0 for d in self.dropout):
            raise NucleisegError("dropout rates must lie in [0, 1)")
        _check_choice("norm", self.norm, NORMS)

    @property
    def stride(self) -> int:
        """Input sides must be multiples of this: the network halves the resolution once per level below the top."""
        return 2 ** (len(self.widths) - 1)


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds that turn probability maps into instances (tuned by ``nucleiseg tune``)."""

    mask_threshold: float = 0.5
    seed_threshold: float = 0.7
    border_threshold: float = 0.4
    min_seed_size: int = 4
    min_size: int = 10
    tta: bool = False  # the model's default for test-time augmentation (predict --tta/--no-tta overrides)

    def __post_init__(self) -> None:
        for name in ("mask_threshold", "seed_threshold", "border_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise NucleisegError(f"{name} must lie in [0, 1]")
        if self.min_size < 0 or self.min_seed_size < 0:
            raise NucleisegError("minimum sizes must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; the model is rebuilt from ``model``."""

    preset: str = "seed"
    model: ModelConfig = field(default_factory=ModelConfig)
    targets: str = "foreground"
    input_mode: str = "resize"  # resize: whole image to input_size; native: random crops of input_size
    input_size: int = 128
    normalization: str = "scale255"
    augment: bool = False
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "constant"
    loss: str = "bce"
    samples_per_epoch: int = 0  # 0: one pass over the training images
    val_fraction: float = 0.2
    seed: int = 0
    bf16: bool = False  # bf16 autocast for training (CPUs with AVX512-BF16/AMX, and GPUs)
    channels_last: bool = False
    compile: bool = False  # torch.compile the network for training
    # scale normalisation: each training image is rescaled so its median nucleus diameter (from the labels) maps
    # to this many pixels, jittered by up to scale_jitter either way; prediction rescales images to match
    # (``--diameter``). 0 keeps every image at its own resolution.
    canonical_diameter: float = 0.0
    scale_jitter: float = 1.4
    val_every: int = 1  # validate (and checkpoint) every N epochs, and after the last one
    # the training datasets as trained on: name, path, sampling weight, image counts, content fingerprint
    datasets: tuple[dict[str, Any], ...] = ()
    init: str = ""  # the model folder whose weights training started from ("" = from scratch)
    # early stopping: stop after this many validations in a row without a better DSB score (0: never), or
    # before an epoch that would end past time_limit seconds of training (0: no limit)
    patience: int = 0
    time_limit: float = 0.0

    def __post_init__(self) -> None:
        from .representations import representation

        object.__setattr__(self, "datasets", tuple(dict(d) for d in self.datasets))
        expected = representation(self.targets).out_channels
        _check_choice("input_mode", self.input_mode, INPUT_MODES)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("loss", self.loss, LOSSES)
        if self.model.out_channels != expected:
            raise NucleisegError(f"targets {self.targets!r} need out_channels={expected}")
        stride = self.model.stride
        if self.input_size <= 0 or self.input_size % stride:
            raise NucleisegError(f"input_size must be a positive multiple of the network stride {stride}")
        if self.epochs < 1 or self.batch_size < 1:
            raise NucleisegError("epochs and batch_size must be >= 1")
        if not self.lr > 0:
            raise NucleisegError("learning rate must be > 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise NucleisegError("val_fraction must lie in (0, 1)")
        if self.canonical_diameter < 0 or self.scale_jitter < 1.0 or self.val_every < 1:
            raise NucleisegError("canonical_diameter must be >= 0, scale_jitter >= 1 and val_every >= 1")
        if self.patience < 0 or self.time_limit < 0:
            raise NucleisegError("patience and time_limit must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise NucleisegError(f"unknown config keys: {', '.join(sorted(unknown))}")
        data["model"] = ModelConfig(**data.get("model", {}))
        return cls(**data)


def seed_preset() -> TrainConfig:
    """The seed Kaggle U-Net: 128x128 resize, foreground only, Adam 1e-3, BCE, batch 32, 25 epochs."""
    return TrainConfig(preset="seed")


def default_preset() -> TrainConfig:
    """The generalist model: foreground + border + distance targets, nuclei rescaled to a canonical diameter,
    native-resolution crops with microscopy augmentation, batch norm, AdamW one-cycle, BCE + Dice."""
    return TrainConfig(
        preset="default",
        model=ModelConfig(out_channels=3, widths=(16, 32, 64, 128, 256), dropout=(0.0, 0.0, 0.0, 0.1, 0.2),
                          norm="batch"),
        targets="distance",
        input_mode="native",
        input_size=256,
        normalization="percentile",
        augment=True,
        epochs=36,
        batch_size=8,
        lr=2e-3,
        weight_decay=1e-4,
        optimizer="adamw",
        schedule="onecycle",
        loss="bce_dice",
        samples_per_epoch=2048,
        bf16=False,  # bf16 autocast pays only on CPUs with AVX512-BF16/AMX (2.6x there, 0.4x without)
        channels_last=True,
        canonical_diameter=16.0,  # 20 px would rescale most DSB images (2.3x the pixels; 16 px: 1.6x)
        scale_jitter=1.4,
        val_every=2,
    )


def release_010_preset() -> TrainConfig:
    """The recipe of the model bundled with 0.1.0: body + border targets, no scale normalisation."""
    return dataclasses.replace(
        default_preset(), preset="release-0.1.0",
        model=ModelConfig(out_channels=2, widths=(16, 32, 64, 128, 256), dropout=(0.0, 0.0, 0.0, 0.1, 0.2),
                          norm="batch"),
        targets="body_border", epochs=40, samples_per_epoch=1024, canonical_diameter=0.0, val_every=1)


def tiny_preset() -> TrainConfig:
    """A small body+border network for tests and smoke runs (64-px crops)."""
    return dataclasses.replace(
        release_010_preset(),
        preset="tiny",
        model=ModelConfig(out_channels=2, widths=(8, 16, 32), dropout=(0.0, 0.0, 0.0), norm="batch"),
        input_size=64,
        epochs=2,
        batch_size=4,
        samples_per_epoch=8,
    )


PRESETS = {"seed": seed_preset, "default": default_preset, "release-0.1.0": release_010_preset,
           "tiny": tiny_preset}


def preset(name: str) -> TrainConfig:
    """Return the named preset configuration."""
    if name not in PRESETS:
        raise NucleisegError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def _coerce(text: str, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise NucleisegError(f"invalid value for {name}: {text!r} (expected true or false)")
        return text.lower() in ("true", "1", "yes")
    try:
        if isinstance(current, tuple):
            return tuple(type(current[0])(v) for v in text.split(","))
        return type(current)(text)
    except ValueError:
        raise NucleisegError(f"invalid value for {name}: {text!r}") from None


def override(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (``model.key=value`` for the network), e.g. ``augment=false`` or
    ``model.widths=24,48,96,192,384``; values are converted to the field's type and validated."""
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise NucleisegError(f"invalid --set {item!r}: expected key=value")
        target, obj, name = (model, config.model, key[6:]) if key.startswith("model.") else (top, config, key)
        if name not in {f.name for f in dataclasses.fields(obj)} or name == "model":
            raise NucleisegError(f"unknown setting {key!r}")
        target[name] = _coerce(value, getattr(obj, name), key)
    if model:
        top["model"] = dataclasses.replace(config.model, **model)
    return dataclasses.replace(config, **top)


def save_config(config: TrainConfig, path: Path) -> None:
    from .atomic import write_text_atomic

    write_text_atomic(path, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(path: Path) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NucleisegError(f"{path}: cannot read model config ({exc})") from None
    return TrainConfig.from_dict(data)


def save_postprocess(post: PostprocessConfig, path: Path) -> None:
    from .atomic import write_text_atomic

    write_text_atomic(path, json.dumps(dataclasses.asdict(post), indent=2) + "\n")


def load_postprocess(path: Path) -> PostprocessConfig:
    try:
        return PostprocessConfig(**json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise NucleisegError(f"{path}: cannot read thresholds ({exc})") from None
