"""Probability maps to instance labels: threshold + connected components, or seeded watershed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import PostprocessConfig
from .representations import Representation, for_channels, representation
from .representations import seeded_watershed, threshold_components  # noqa: F401  (re-exported)


def _labels_whole(prob: np.ndarray, post: PostprocessConfig, rep: Representation) -> np.ndarray:
    return rep.decode(prob, post)


def cut_objects(local: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int],
                core: tuple[slice, slice]) -> np.ndarray:
    """Ids of the objects of ``local`` (the labels of region ``box`` = y0, y1, x0, x1 of an image of ``shape``)
    that reach the region's edge where it is not the image's edge and also lie in ``core``: objects the
    region may cut, so a larger region is needed to see them whole."""
    edges = []
    if box[0] > 0:
        edges.append(local[0])
    if box[1] < shape[0]:
        edges.append(local[-1])
    if box[2] > 0:
        edges.append(local[:, 0])
    if box[3] < shape[1]:
        edges.append(local[:, -1])
    if not edges:
        return np.zeros(0, local.dtype)
    on_edge = np.unique(np.concatenate(edges))
    on_edge = on_edge[on_edge > 0]
    in_core = np.zeros(int(local.max()) + 1, bool)
    in_core[local[core]] = True
    return on_edge[in_core[on_edge]]


def decoding_grid(prob: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Probabilities computed on a rescaled copy of an image of ``shape``, on the grid to decode them on: the
    finer of the two. Those of a shrunk image are interpolated back up (so outlines are not blocky), those of
    an enlarged image stay as they are. Returns them and the area ratio of that grid to the network's."""
    h, w = prob.shape[1:]
    if h * w >= shape[0] * shape[1]:
        return prob, 1.0
    from .scale import linear_resize

    up = linear_resize(prob.astype(np.float32, copy=False), tuple(shape[:2]), axes=(1, 2))
    return up, shape[0] * shape[1] / (h * w)


def scaled_sizes(post: PostprocessConfig, area: float) -> PostprocessConfig:
    """Thresholds with the minimum sizes (px) multiplied by ``area``, for a grid that much finer."""
    if area == 1.0:
        return post
    return replace(post, min_size=int(round(post.min_size * area)),
                   min_seed_size=int(round(post.min_seed_size * area)))


def labels_on_grid(prob: np.ndarray, post: PostprocessConfig, shape: tuple[int, int],
                   targets: str | None = None) -> np.ndarray:
    """Instances on an image's own ``shape`` from probabilities computed on a rescaled copy of it (decoded on
    the finer grid, see ``decoding_grid``; labels of an enlarged image resized down by nearest neighbour)."""
    from .scale import labels_to_shape

    grid, area = decoding_grid(prob, shape)
    return labels_to_shape(probabilities_to_labels(grid, scaled_sizes(post, area), targets=targets), shape)


def probabilities_to_labels(prob: np.ndarray, post: PostprocessConfig, block: int = 2048, margin: int = 128,
                            targets: str | None = None) -> np.ndarray:
    """(C, H, W) probabilities to an (H, W) int32 label image, decoded as the representation ``targets``
    (default: the one with C channels: 1 foreground, 2 foreground + border, 3 + distance).

    Images larger than ``block`` are post-processed in overlapping blocks (so memory follows the block);
    each nucleus is kept whole by the one block whose core holds its first pixel. A block whose region cuts a
    nucleus of its core (one reaching more than ``margin`` beyond it) is redone with the margin doubled, so
    no nucleus is cut at a block seam.
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
            local, (ya, xa) = _block_labels(prob, post, rep, (y0, min(h, y0 + block), x0, min(w, x0 + block)), margin)
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
            region = labels[ya:ya + local.shape[0], xa:xa + local.shape[1]]
            paste = keep[local] & (region == 0)
            region[paste] = remap[local[paste]]
    return labels


def _block_labels(prob: np.ndarray, post: PostprocessConfig, rep: Representation,
                  core: tuple[int, int, int, int], margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Labels of ``core`` (y0, y1, x0, x1) plus a margin, doubled until no nucleus of the core is cut;
    returns them with the region's origin."""
    h, w = prob.shape[1:]
    y0, y1, x0, x1 = core
    while True:
        box = (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin))
        local = _labels_whole(prob[:, box[0]:box[1], box[2]:box[3]], post, rep)
        inner = (slice(y0 - box[0], y1 - box[0]), slice(x0 - box[2], x1 - box[2]))
        if box == (0, h, 0, w) or not len(cut_objects(local, box, (h, w), inner)):
            return local, (box[0], box[2])
        margin *= 2
