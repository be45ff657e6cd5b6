import numpy as np
import pytest
from conftest import disc_labels
from scipy import ndimage

from nucleiseg.config import PostprocessConfig
from nucleiseg.postprocess import (
    probabilities_to_labels,
    seeded_watershed,
    threshold_components,
)
from nucleiseg.representations import body_border_target


def test_threshold_components_counts_separate_discs():
    truth = disc_labels((64, 64), [(16, 16, 6), (45, 45, 8)])
    labels = threshold_components((truth > 0).astype(np.float32), PostprocessConfig())
    assert labels.max() == 2
    assert set(np.unique(labels[truth == 1])) == {1} or set(np.unique(labels[truth == 1])) == {2}


def test_touching_discs_merge_without_borders_but_split_with_watershed():
    truth = disc_labels((64, 64), [(32, 22, 10), (32, 41, 10)])  # touching along a column
    target = body_border_target(truth)
    fg, border = target[0], target[1]
    post = PostprocessConfig()
    assert threshold_components(fg, post).max() == 1  # one blob: the seed's failure
    labels = seeded_watershed(fg, border, post)
    assert labels.max() == 2
    # every true nucleus is recovered almost entirely by one predicted label
    for t in (1, 2):
        ids, counts = np.unique(labels[truth == t], return_counts=True)
        assert counts.max() / counts.sum() > 0.95


def test_small_objects_removed_and_holes_filled():
    fg = np.zeros((40, 40), np.float32)
    fg[5:7, 5:7] = 1  # 4 pixels: removed by min_size 10
    fg[15:30, 15:30] = 1
    fg[20:22, 20:22] = 0  # a hole
    labels = threshold_components(fg, PostprocessConfig(min_size=10))
    assert labels.max() == 1
    assert labels[21, 21] == 1
    assert labels[6, 6] == 0


def test_unseeded_component_is_kept():
    fg = np.zeros((32, 32), np.float32)
    fg[4:10, 4:10] = 0.6  # above mask threshold, below seed threshold
    fg[15:28, 15:28] = 0.95
    labels = seeded_watershed(fg, np.zeros_like(fg), PostprocessConfig(mask_threshold=0.5, seed_threshold=0.7))
    assert labels.max() == 2


def test_bad_probability_shape_raises():
    with pytest.raises(ValueError):
        probabilities_to_labels(np.zeros((4, 8, 8), np.float32), PostprocessConfig())


def _same_instances(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a renumbering of ids."""
    if a.shape != b.shape or ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_blockwise_postprocessing_equals_whole_image():
    rng = np.random.default_rng(3)
    discs = [(rng.uniform(5, 195), rng.uniform(5, 251), rng.uniform(3, 9)) for _ in range(90)]
    truth = disc_labels((200, 256), discs)
    # smooth maps like a network's (exact 0/1 targets make watershed ties that any crop may break differently)
    prob = np.stack([ndimage.gaussian_filter(c, 1.0) for c in body_border_target(truth)])
    post = PostprocessConfig()
    whole = probabilities_to_labels(prob, post)
    blocks = probabilities_to_labels(prob, post, block=64, margin=32)
    assert whole.max() > 40
    assert _same_instances(whole, blocks)


def test_blockwise_keeps_nuclei_larger_than_the_margin_whole():
    # a disc of radius 60 with block 64 / margin 32 used to keep 7,404 of its 11,277 pixels
    truth = disc_labels((256, 256), [(128, 128, 60), (20, 20, 8), (230, 40, 9), (40, 230, 12)])
    prob = np.stack([ndimage.gaussian_filter(c, 1.0) for c in body_border_target(truth)])
    post = PostprocessConfig()
    whole = probabilities_to_labels(prob, post)
    blocks = probabilities_to_labels(prob, post, block=64, margin=32)
    assert whole.max() == 4
    assert (blocks == blocks[128, 128]).sum() == (whole == whole[128, 128]).sum() > 11000
    assert _same_instances(whole, blocks)


def test_fill_holes_equals_scipy_on_random_masks():
    from nucleiseg.representations import fill_holes

    rng = np.random.default_rng(0)
    for trial in range(100):
        h, w = rng.integers(1, 50, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        mask = ndimage.binary_opening(mask) if trial % 2 else mask
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask), err_msg=str(trial))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[4, 4] = True, False
    assert fill_holes(ring)[4, 4] and not fill_holes(ring)[0, 0]
