"""Target representations: the one home of what the network predicts and how it becomes instances.

A representation says, for one kind of training target, its output channels, how the target is made from an
instance label image, which loss trains it, the output activation, how test-time augmentation is inverted, and
how its probability maps decode into instances (and which thresholds that decoder reads, so ``tune`` searches
only those). Config, training, inference, post-processing and tuning all look it up here by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from .config import PostprocessConfig
from .errors import NucleisegError


def foreground_target(labels: np.ndarray) -> np.ndarray:
    """(1, H, W) float32: 1 on nuclei."""
    return (labels > 0).astype(np.float32)[None]


def _inner_border(labels: np.ndarray) -> np.ndarray:
    return find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0)


def body_border_target(labels: np.ndarray) -> np.ndarray:
    """(2, H, W) float32: channel 0 nuclei (foreground), channel 1 each nucleus' inner boundary.

    Where two nuclei touch, both inner boundaries are marked, so seeds taken as foreground minus border
    separate them; watershed then grows the seeds back over the border.
    """
    fg = labels > 0
    return np.stack([fg, _inner_border(labels)]).astype(np.float32)


def normalized_distance(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32: each nucleus pixel's distance to the nearest pixel outside its own nucleus (background
    or another nucleus), divided by that nucleus' largest distance: 1 at its centre, falling to ~0 at its edge."""
    border = _inner_border(labels)
    dist = ndimage.distance_transform_edt((labels > 0) & ~border).astype(np.float32)
    dist[border] = 0.5  # the outermost ring lies half a pixel inside the edge
    n = int(labels.max())
    if n == 0:
        return np.zeros(labels.shape, np.float32)
    peak = np.asarray(ndimage.maximum(dist, labels, index=np.arange(1, n + 1)), np.float32)
    peak = np.concatenate([[1.0], np.maximum(peak, 0.5)]).astype(np.float32)
    return np.where(labels > 0, dist / peak[labels], 0.0).astype(np.float32)


def body_border_distance_target(labels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: foreground, inner boundary, and the normalised distance to the nucleus edge."""
    return np.concatenate([body_border_target(labels), normalized_distance(labels)[None]])


def _finish(labels: np.ndarray, min_size: int) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    if min_size > 0 and labels.max() > 0:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.int32)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (background 4-connected to the image edge stays background), by
    labelling the background once instead of propagating a dilation: several times faster on large masks."""
    background, n = ndimage.label(~mask)
    if n == 0:
        return mask
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(n + 1, bool)
    outside[edge] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[background]


def threshold_components(prob: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Foreground = prob > mask_threshold; one instance per 8-connected component."""
    mask = fill_holes(prob > post.mask_threshold)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return _finish(labels, post.min_size)


def watershed_from_seeds(mask: np.ndarray, seeds: np.ndarray, surface: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Label the seeds (dropping those under ``min_seed_size``), grow them over ``mask`` by watershed on
    ``surface`` (low = nucleus centre); mask components without a seed become instances of their own."""
    from skimage.segmentation import watershed

    markers, n = ndimage.label(seeds & mask)
    if post.min_seed_size > 0 and n:
        small = np.bincount(markers.ravel()) < post.min_seed_size
        small[0] = False
        markers[small[markers]] = 0
    labels = watershed(surface, markers, mask=mask) if markers.any() else np.zeros(mask.shape, np.int32)
    orphan, n_orphan = ndimage.label(mask & (labels == 0))
    if n_orphan:
        labels = np.where(orphan > 0, orphan + labels.max(), labels)
    return _finish(labels, post.min_size)


def seeded_watershed(fg: np.ndarray, border: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Seeds where the nucleus is sure and no border is predicted; watershed grows them over the mask."""
    mask = fill_holes(fg > post.mask_threshold)
    seeds = (fg > post.seed_threshold) & (border < post.border_threshold)
    return watershed_from_seeds(mask, seeds, -(fg - border), post)


def distance_watershed(fg: np.ndarray, distance: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """Seeds where the predicted distance to the nucleus edge is high (``seed_threshold``); watershed on the
    negated distance splits touching nuclei along the valley between their centres."""
    mask = fill_holes(fg > post.mask_threshold)
    return watershed_from_seeds(mask, distance > post.seed_threshold, -distance, post)


@dataclass(frozen=True)
class Representation:
    """One kind of training target, from label image to loss to instances."""

    name: str
    channels: tuple[str, ...]
    make_target: Callable[[np.ndarray], np.ndarray]  # (H, W) labels -> (C, H, W) float32 target
    decode: Callable[[np.ndarray, PostprocessConfig], np.ndarray]  # (C, H, W) probabilities -> (H, W) labels
    tuned: tuple[str, ...]  # PostprocessConfig fields the decoder reads
    dice_channels: tuple[int, ...] = ()  # channels that also get a soft-Dice term with loss "bce_dice"
    activation: str = "sigmoid"  # every channel is a map in [0, 1]
    # every channel is a scalar map, so test-time augmentation inverts a flip/rotation by applying its inverse
    # to the map; a vector representation (flows) would also have to rotate its vectors
    tta: str = "scalar"

    @property
    def out_channels(self) -> int:
        return len(self.channels)

    def loss(self, logits, target, kind: str):
        """Training loss on logits: binary cross-entropy on every channel (soft targets for maps in [0, 1]),
        plus soft Dice on ``dice_channels`` for ``bce_dice``."""
        from .losses import segmentation_loss

        return segmentation_loss(logits, target, kind, self.dice_channels)


REPRESENTATIONS: dict[str, Representation] = {
    "foreground": Representation(
        "foreground", ("foreground",), foreground_target,
        lambda p, post: threshold_components(p[0], post), ("mask_threshold", "min_size"), dice_channels=(0,)),
    "body_border": Representation(
        "body_border", ("foreground", "border"), body_border_target,
        lambda p, post: seeded_watershed(p[0], p[1], post),
        ("mask_threshold", "seed_threshold", "border_threshold", "min_seed_size", "min_size"), dice_channels=(0, 1)),
    "distance": Representation(
        "distance", ("foreground", "border", "distance"), body_border_distance_target,
        lambda p, post: distance_watershed(p[0], p[2], post),
        ("mask_threshold", "seed_threshold", "min_seed_size", "min_size"), dice_channels=(0, 1)),
}


def representation(name: str) -> Representation:
    """The representation called ``name``."""
    if name not in REPRESENTATIONS:
        raise NucleisegError(f"unknown target representation {name!r}: choose one of {', '.join(REPRESENTATIONS)}")
    return REPRESENTATIONS[name]


def for_channels(n: int) -> Representation:
    """The representation with ``n`` output channels (for probability maps passed without their model)."""
    for rep in REPRESENTATIONS.values():
        if rep.out_channels == n:
            return rep
    raise ValueError(f"no target representation has {n} channels")
