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


def _labels_whole(prob: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    if prob.shape[0] == 1:
        return threshold_components(prob[0], post)
    return seeded_watershed(prob[0], prob[1], post)


def probabilities_to_labels(prob: np.ndarray, post: PostprocessConfig, block: int = 2048, margin: int = 128) -> np.ndarray:
    """(C, H, W) probabilities to an (H, W) int32 label image: C=1 foreground, C=2 foreground + border.

    Images larger than ``block`` are post-processed in overlapping blocks (so memory follows the block);
    each nucleus is kept by the one block whose core holds its first pixel, which cuts no nucleus smaller
    than ``margin`` at a block seam.
    """
    if prob.ndim != 3 or prob.shape[0] not in (1, 2):
        raise ValueError(f"expected (1|2, H, W) probabilities, got shape {prob.shape}")
    h, w = prob.shape[1:]
    if h <= block and w <= block:
        return _labels_whole(prob, post)
    labels = np.zeros((h, w), np.int32)
    next_id = 1
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y0 + block + margin), min(w, x0 + block + margin)
            local = _labels_whole(prob[:, ya:yb, xa:xb], post)
            n = int(local.max())
            if n == 0:
                continue
            # first pixel (row-major) of each object: the owner is the block whose core holds it
            flat = local.ravel()
            order = np.flatnonzero(flat)
            ids, first = np.unique(flat[order], return_index=True)
            fy, fx = np.divmod(order[first], local.shape[1])
            fy, fx = fy + ya, fx + xa
            own = (fy >= y0) & (fy < y0 + block) & (fx >= x0) & (fx < x0 + block)
            keep = np.zeros(n + 1, bool)
            keep[ids[own]] = True
            remap = np.zeros(n + 1, np.int32)
            remap[ids[own]] = np.arange(next_id, next_id + int(own.sum()), dtype=np.int32)
            next_id += int(own.sum())
            region = labels[ya:yb, xa:xb]
            paste = keep[local] & (region == 0)
            region[paste] = remap[local[paste]]
    return labels
