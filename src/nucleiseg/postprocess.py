"""Probability maps to instance labels: threshold + connected components, or seeded watershed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential, watershed

from .config import PostprocessConfig


def _finish(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size > 0 and labels.max() > 0:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.int32)


def threshold_components(prob: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Foreground = prob > mask_threshold; one instance per 8-connected component."""
    mask = ndimage.binary_fill_holes(prob > post.mask_threshold)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return _finish(labels, post.min_size)


def seeded_watershed(fg: np.ndarray, border: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Seeds where the nucleus is sure and no border is predicted; watershed grows them over the mask.

    Mask components that hold no seed (tiny or faint nuclei) are kept as instances of their own.
    """
    mask = ndimage.binary_fill_holes(fg > post.mask_threshold)
    seeds = (fg > post.seed_threshold) & (border < post.border_threshold) & mask
    markers, n = ndimage.label(seeds)
    if post.min_seed_size > 0 and n:
        sizes = np.bincount(markers.ravel())
        small = sizes < post.min_seed_size
        small[0] = False
        markers[small[markers]] = 0
    labels = watershed(-(fg - border), markers, mask=mask) if markers.any() else np.zeros(fg.shape, np.int32)
    orphan, n_orphan = ndimage.label(mask & (labels == 0))
    if n_orphan:
        labels = np.where(orphan > 0, orphan + labels.max(), labels)
    return _finish(labels, post.min_size)


def probabilities_to_labels(prob: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """(C, H, W) probabilities to an (H, W) int32 label image: C=1 foreground, C=2 foreground + border."""
    if prob.ndim != 3 or prob.shape[0] not in (1, 2):
        raise ValueError(f"expected (1|2, H, W) probabilities, got shape {prob.shape}")
    if prob.shape[0] == 1:
        return threshold_components(prob[0], post)
    return seeded_watershed(prob[0], prob[1], post)
