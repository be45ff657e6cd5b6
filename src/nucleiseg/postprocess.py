"""Probability maps to instance labels: threshold + connected components, or seeded watershed."""

from __future__ import annotations

import numpy as np

from .config import PostprocessConfig
from .representations import Representation, for_channels, representation
from .representations import seeded_watershed, threshold_components  # noqa: F401  (re-exported)


def _labels_whole(prob: np.ndarray, post: PostprocessConfig, rep: Representation) -> np.ndarray:
    return rep.decode(prob, post)


def probabilities_to_labels(prob: np.ndarray, post: PostprocessConfig, block: int = 2048, margin: int = 128,
                            targets: str | None = None) -> np.ndarray:
    """(C, H, W) probabilities to an (H, W) int32 label image, decoded as the representation ``targets``
    (default: the one with C channels: 1 foreground, 2 foreground + border, 3 + distance).

    Images larger than ``block`` are post-processed in overlapping blocks (so memory follows the block);
    each nucleus is kept by the one block whose core holds its first pixel, which cuts no nucleus smaller
    than ``margin`` at a block seam.
    """
    if prob.ndim != 3 or prob.shape[0] not in (1, 2, 3):
        raise ValueError(f"expected (1|2|3, H, W) probabilities, got shape {prob.shape}")
    rep = for_channels(prob.shape[0]) if targets is None else representation(targets)
    if rep.out_channels != prob.shape[0]:
        raise ValueError(f"representation {rep.name!r} expects {rep.out_channels} channels, got {prob.shape[0]}")
    h, w = prob.shape[1:]
    if h <= block and w <= block:
        return _labels_whole(prob, post, rep)
    labels = np.zeros((h, w), np.int32)
    next_id = 1
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y0 + block + margin), min(w, x0 + block + margin)
            local = _labels_whole(prob[:, ya:yb, xa:xb], post, rep)
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
