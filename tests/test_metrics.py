"""Tests for nucleiseg.metrics (DSB2018 score) on synthetic discs with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleiseg.errors import NucleisegError
from nucleiseg.metrics import (
    IOU_THRESHOLDS,
    dsb_score,
    image_precisions,
    iou_matrix,
    match_counts,
    score_image,
    summarize,
)

YY, XX = np.mgrid[:64, :64]


def disc(cy: int, cx: int, r: int) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def labels(*masks: np.ndarray) -> np.ndarray:
    out = np.zeros((64, 64), dtype=np.int32)
    for i, m in enumerate(masks, start=1):
        out[m] = i
    return out


def test_thresholds():
    assert len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[-1] == 0.95
    assert np.allclose(np.diff(IOU_THRESHOLDS), 0.05)


def test_identical_images_score_one():
    lab = labels(disc(15, 15, 8), disc(40, 45, 10))
    assert dsb_score(lab, lab) == 1.0
    row = score_image(lab, lab)
    assert row["dsb"] == 1.0 and row["ap50"] == 1.0 and row["ap75"] == 1.0
    assert row["precisions"] == [1.0] * 10
    assert (row["n_true"], row["n_pred"], row["tp50"], row["fp50"], row["fn50"]) == (2, 2, 2, 0, 0)


def test_shifted_disc_known_iou():
    a = disc(32, 30, 10)
    b = np.roll(a, 3, axis=1)
    iou = (a & b).sum() / (a | b).sum()  # by hand from pixel counts
    assert 0.65 < iou < 0.70  # passes 0.50, 0.55, 0.60, 0.65 only
    np.testing.assert_allclose(iou_matrix(labels(a), labels(b)), [[iou]])
    tp, fp, fn = match_counts(labels(a), labels(b))
    assert tp.tolist() == [1] * 4 + [0] * 6
    assert fp.tolist() == [0] * 4 + [1] * 6
    assert fn.tolist() == [0] * 4 + [1] * 6
    # below threshold: TP=0, FP=1, FN=1 -> precision 0
    np.testing.assert_allclose(image_precisions(labels(a), labels(b)), [1] * 4 + [0] * 6)
    assert dsb_score(labels(a), labels(b)) == pytest.approx(4 / 10)
    row = score_image(labels(a), labels(b))
    assert row["ap50"] == 1.0 and row["ap75"] == 0.0


def test_missed_nucleus_is_fn():
    d1, d2 = disc(15, 15, 8), disc(40, 45, 10)
    truth, pred = labels(d1, d2), labels(d1)
    tp, fp, fn = match_counts(truth, pred)
    assert tp.tolist() == [1] * 10 and fp.tolist() == [0] * 10 and fn.tolist() == [1] * 10
    assert dsb_score(truth, pred) == pytest.approx(0.5)  # 1 / (1 + 0 + 1)
    row = score_image(truth, pred)
    assert (row["tp50"], row["fp50"], row["fn50"]) == (1, 0, 1)


def test_false_positive():
    d1, d2, d3 = disc(15, 15, 8), disc(40, 45, 10), disc(50, 10, 5)
    truth, pred = labels(d1, d2), labels(d1, d2, d3)
    tp, fp, fn = match_counts(truth, pred)
    assert tp.tolist() == [2] * 10 and fp.tolist() == [1] * 10 and fn.tolist() == [0] * 10
    assert dsb_score(truth, pred) == pytest.approx(2 / 3)


def test_both_empty_is_perfect():
    empty = np.zeros((16, 16), dtype=np.uint16)
    assert iou_matrix(empty, empty).shape == (0, 0)
    assert dsb_score(empty, empty) == 1.0
    row = score_image(empty, empty)
    assert row["ap50"] == 1.0 and row["n_true"] == 0 and row["n_pred"] == 0


def test_empty_truth_with_predictions_scores_zero():
    empty = np.zeros((64, 64), dtype=np.int32)
    pred = labels(disc(20, 20, 5))
    assert dsb_score(empty, pred) == 0.0
    assert dsb_score(pred, empty) == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(NucleisegError, match="shape"):
        dsb_score(np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_bad_input_raises():
    with pytest.raises(NucleisegError):
        iou_matrix(np.zeros((4, 4), float), np.zeros((4, 4), int))
    with pytest.raises(NucleisegError):
        iou_matrix(np.zeros(16, int), np.zeros(16, int))
    with pytest.raises(NucleisegError):
        iou_matrix(-np.ones((4, 4), int), np.zeros((4, 4), int))


def test_iou_matrix_rows_follow_label_ids_with_gaps():
    truth = np.zeros((8, 8), int)
    truth[:2, :2] = 7
    truth[5:, 5:] = 3
    pred = np.zeros((8, 8), int)
    pred[5:, 5:] = 100
    iou = iou_matrix(truth, pred)
    np.testing.assert_allclose(iou, [[1.0], [0.0]])  # rows: label 3, label 7


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.integers(0, 6, size=(12, 10))
        pred = rng.integers(0, 9, size=(12, 10)) * 3  # ids with gaps
        t_ids = [i for i in np.unique(truth) if i]
        p_ids = [i for i in np.unique(pred) if i]
        brute = np.zeros((len(t_ids), len(p_ids)))
        for r, i in enumerate(t_ids):
            for c, j in enumerate(p_ids):
                a, b = truth == i, pred == j
                brute[r, c] = (a & b).sum() / (a | b).sum()
        np.testing.assert_allclose(iou_matrix(truth, pred), brute)


def test_low_threshold_uses_one_to_one_matching():
    truth = np.zeros((1, 10), int)
    truth[0, :4] = 1
    truth[0, 4:8] = 2
    pred = np.zeros((1, 10), int)
    pred[0, 2:6] = 1  # IoU 1/3 with each true object
    tp, fp, fn = match_counts(truth, pred, thresholds=[0.3])
    assert (tp[0], fp[0], fn[0]) == (1, 0, 1)


def test_summarize():
    d1 = disc(15, 15, 8)
    rows = [score_image(labels(d1), labels(d1)), score_image(labels(d1), labels())]
    s = summarize(rows)
    assert s["dsb"] == pytest.approx(0.5) and s["ap50"] == pytest.approx(0.5)
    assert s["precisions"] == pytest.approx([0.5] * 10)
    assert (s["n_true"], s["n_pred"], s["n_images"]) == (2, 1, 2)
    with pytest.raises(NucleisegError):
        summarize([])


label_images = arrays(np.int32, st.tuples(st.integers(1, 32), st.integers(1, 32)),
                      elements=st.integers(0, 6))


def _relabel(lab: np.ndarray, seed: int) -> np.ndarray:
    """Map nonzero ids to a random permutation of new, gappy ids."""
    rng = np.random.default_rng(seed)
    ids = np.unique(lab)
    ids = ids[ids != 0]
    new = rng.permutation(len(ids)) * 5 + 2
    out = np.zeros_like(lab)
    for old, n in zip(ids, new):
        out[lab == old] = n
    return out


@settings(max_examples=40, deadline=None)
@given(label_images)
def test_prop_self_score_is_one(lab):
    assert dsb_score(lab, lab) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_prop_relabelling_invariant(data):
    truth = data.draw(label_images)
    pred = data.draw(arrays(np.int32, truth.shape, elements=st.integers(0, 6)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    base = dsb_score(truth, pred)
    assert dsb_score(_relabel(truth, seed), pred) == pytest.approx(base)
    assert dsb_score(truth, _relabel(pred, seed + 1)) == pytest.approx(base)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_prop_score_in_unit_interval(data):
    truth = data.draw(label_images)
    pred = data.draw(arrays(np.int32, truth.shape, elements=st.integers(0, 6)))
    prec = image_precisions(truth, pred)
    assert np.all((prec >= 0) & (prec <= 1))
    assert 0.0 <= dsb_score(truth, pred) <= 1.0
