"""Nucleus outlines drawn on the image, as 8-bit RGB arrays for PNG files."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from .transforms import normalize


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) image of any dtype as 8-bit RGB, contrast-stretched by percentiles."""
    if image.dtype == np.uint8:
        return image
    x = np.clip(normalize(image, "percentile"), 0, 1)
    return (x * 255).astype(np.uint8)


def draw_outlines(image: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """Copy of ``image`` with each nucleus' outline in ``color``."""
    out = display_rgb(image).copy()
    out[find_boundaries(labels, mode="inner")] = color
    return out


def draw_comparison(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, missed: np.ndarray,
                    false_pos: np.ndarray) -> np.ndarray:
    """Truth outlines green, predicted outlines yellow; missed nuclei filled red, false positives magenta."""
    out = display_rgb(image).astype(np.float32)
    for mask, color in ((missed, (255, 0, 0)), (false_pos, (255, 0, 255))):
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(color, np.float32)
    out[find_boundaries(truth, mode="inner")] = (0, 255, 0)
    out[find_boundaries(pred, mode="inner")] = (255, 255, 0)
    return out.astype(np.uint8)
