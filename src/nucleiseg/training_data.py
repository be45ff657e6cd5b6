"""Training samples: resized whole images (seed recipe) or augmented native-resolution crops."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import TrainConfig
from .representations import representation
from .transforms import (
    augment_intensity,
    dihedral,
    normalize,
    random_crop,
    resize_image,
)


def resize_pair(image: np.ndarray, labels: np.ndarray, size: int, normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """The seed's preprocessing: normalised image and merged foreground mask resized to size x size."""
    x = resize_image(normalize(image, normalization), (size, size))
    fg = resize_image((labels > 0).astype(np.float32), (size, size)) > 0.5
    return x, fg.astype(np.int32)


class ResizedDataset(Dataset):
    """Whole images and foreground masks resized once to ``input_size`` (seed preset)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], config: TrainConfig) -> None:
        self.x = [resize_pair(im, lab, config.input_size, config.normalization) for im, lab in pairs]
        self.config = config

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, fg = self.x[index % len(self.x)]
        target = representation(self.config.targets).make_target(fg)
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), torch.from_numpy(target)


class CropDataset(Dataset):
    """Random native-resolution crops with augmentation; sample ``i`` of epoch ``e`` is fully determined by
    (seed, e, i), so runs are reproducible and a resumed run draws the same samples.

    ``probabilities`` gives each image's chance of being drawn (default: uniform), which is how datasets get
    their sampling weights. ``diameters`` gives each image's median nucleus diameter: with the config's
    ``canonical_diameter`` set, crops are rescaled so nuclei have that diameter (times the jitter).
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], config: TrainConfig, epoch_length: int,
                 probabilities: np.ndarray | None = None, diameters: list[float] | None = None) -> None:
        self.pairs = [(normalize(im, config.normalization), lab) for im, lab in pairs]
        self.config = config
        self.epoch_length = epoch_length
        self.cumulative = None if probabilities is None else np.cumsum(probabilities) / np.sum(probabilities)
        canonical = config.canonical_diameter
        self.base_scales = [d / canonical if canonical and d > 0 else 1.0 for d in (diameters or [0.0] * len(pairs))]
        self.target = representation(config.targets).make_target

    def __len__(self) -> int:
        return 1 << 30  # indexed by epoch * epoch_length + i

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(index, self.epoch_length)
        rng = np.random.default_rng((self.config.seed, epoch, i))
        if self.cumulative is None:
            k = int(rng.integers(len(self.pairs)))
        else:
            k = min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.pairs) - 1)
        image, labels = self.pairs[k]
        base = self.base_scales[k]
        if self.config.canonical_diameter:
            jitter = self.config.scale_jitter if self.config.augment else 1.0
            scale = (base / jitter, base * jitter)  # the window holds nuclei of canonical size x jitter
        else:
            scale = (0.7, 1.4) if self.config.augment else (1.0, 1.0)  # the 0.1.0 recipe
        x, lab = random_crop(image, labels, self.config.input_size, rng, scale)
        if self.config.augment:
            turn = int(rng.integers(8))
            x, lab = dihedral(x, turn), dihedral(lab, turn)
            x = augment_intensity(np.ascontiguousarray(x), rng)
        target = self.target(np.ascontiguousarray(lab))
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(target)


def epoch_indices(config: TrainConfig, n_train: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset indices for one epoch, shuffled by (seed, epoch) and split evenly across ``world`` ranks."""
    if config.input_mode == "resize":
        order = np.random.default_rng((config.seed, epoch)).permutation(n_train)
    else:
        length = config.samples_per_epoch or n_train
        order = epoch * length + np.arange(length)
    per_rank = len(order) // world
    return order[rank * per_rank:(rank + 1) * per_rank].tolist()
