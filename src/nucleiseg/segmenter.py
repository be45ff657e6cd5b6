"""A loaded model with its configuration and thresholds: image in, probabilities or labels out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from .config import PostprocessConfig, TrainConfig
from .inference import DEFAULT_OVERLAP, DEFAULT_TILE, predict_probabilities
from .postprocess import probabilities_to_labels


@dataclass
class Segmenter:
    """Everything needed to segment an image; build it with ``load_model``."""

    model: nn.Module
    config: TrainConfig
    post: PostprocessConfig
    tta: bool = False
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) image to (C, H, W) probabilities."""
        return predict_probabilities(self.model, image, self.config, tta=self.tta, tile=self.tile,
                                     overlap=self.overlap)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) image to an (H, W) int32 label image (0 background, 1..N nuclei)."""
        return probabilities_to_labels(self.probabilities(_as_rgb(image)), self.post)

    def with_options(self, **changes) -> "Segmenter":
        return replace(self, **changes)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def load_model(run_dir: str | Path | None = None, tta: bool | None = None) -> Segmenter:
    """Load a trained model folder (default: the bundled model). ``tta=None`` uses the model's own default."""
    import torch

    from .checkpoint import load_model as _load

    model, config, post = _load(run_dir)
    model = model.to(memory_format=torch.channels_last)
    use_tta = post.tta if tta is None else tta
    return Segmenter(model, config, post, tta=bool(use_tta))


def segment(image: np.ndarray, model: Segmenter | None = None) -> np.ndarray:
    """Segment one image array with ``model`` (default: the bundled model)."""
    return (model or load_model()).segment(image)
