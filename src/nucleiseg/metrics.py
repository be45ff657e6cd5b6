"""DSB2018 scoring: per-image precision averaged over IoU thresholds 0.50..0.95.

For one image and threshold ``t``, a predicted nucleus matches a true nucleus when their
IoU is strictly greater than ``t``; precision(t) = TP / (TP + FP + FN).  The image score is
the mean of precision(t) over the ten thresholds (the Kaggle Data Science Bowl 2018 metric,
also reported as "AP" at a single threshold in the StarDist/Cellpose literature).
"""

from __future__ import annotations

import numpy as np

from nucleiseg.errors import NucleisegError

IOU_THRESHOLDS: np.ndarray = np.round(np.arange(0.5, 1.0, 0.05), 2)
"""The ten DSB2018 IoU thresholds 0.50, 0.55, ..., 0.95."""


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as a 2-D integer array, or raise NucleisegError."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise NucleisegError(f"{name} label image must be 2-D, got shape {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise NucleisegError(f"{name} label image must have an integer dtype, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise NucleisegError(f"{name} label image has negative labels (min {labels.min()})")
    return labels


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0 (background), 1..n in ascending id order; return flat indices and n."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    ids = np.concatenate([np.zeros(1, dtype=ids.dtype), ids])
    return np.searchsorted(ids, labels.ravel()).astype(np.int64), len(ids) - 1


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true nucleus (rows) against every predicted nucleus (columns).

    Rows and columns follow ascending label id; computed from the joint label histogram.
    """
    truth = _check_labels(truth, "true")
    pred = _check_labels(pred, "predicted")
    if truth.shape != pred.shape:
        raise NucleisegError(f"label images differ in shape: true {truth.shape}, "
                             f"predicted {pred.shape}")
    t_idx, n_true = _consecutive(truth)
    p_idx, n_pred = _consecutive(pred)
    hist = np.bincount(t_idx * (n_pred + 1) + p_idx, minlength=(n_true + 1) * (n_pred + 1))
    hist = hist.reshape(n_true + 1, n_pred + 1)
    inter = hist[1:, 1:].astype(np.float64)
    area_true = hist[1:, :].sum(axis=1)
    area_pred = hist[:, 1:].sum(axis=0)
    union = area_true[:, None] + area_pred[None, :] - inter
    return inter / np.maximum(union, 1)


def _check_thresholds(thresholds: np.ndarray | list[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise NucleisegError("IoU thresholds must be a non-empty 1-D sequence")
    if np.any((t < 0) | (t >= 1)) or np.any(np.isnan(t)):
        raise NucleisegError(f"IoU thresholds must lie in [0, 1), got {t.tolist()}")
    return t


def _greedy_tp(iou: np.ndarray, t: float) -> int:
    """One-to-one matches with IoU > t, taken greedily by descending IoU."""
    rows, cols = np.nonzero(iou > t)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
    return len(used_r)


def _counts_from_iou(iou: np.ndarray, thresholds: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_true, n_pred = iou.shape
    tp = np.empty(len(thresholds), dtype=np.int64)
    for i, t in enumerate(thresholds):
        if t >= 0.5:
            # IoU > 0.5 admits at most one partner per object: counting pairs is a matching.
            tp[i] = int(np.count_nonzero(iou > t))
        else:
            tp[i] = _greedy_tp(iou, float(t))
    return tp, n_pred - tp, n_true - tp


def match_counts(truth: np.ndarray, pred: np.ndarray,
                 thresholds: np.ndarray | list[float] = IOU_THRESHOLDS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-threshold (TP, FP, FN) counts, matching objects with IoU strictly above threshold.

    For thresholds >= 0.5 the matching is unique (pairs with IoU > t are counted); for
    thresholds < 0.5 a greedy one-to-one matching by descending IoU is used.
    """
    t = _check_thresholds(thresholds)
    return _counts_from_iou(iou_matrix(truth, pred), t)


def _precisions(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = tp + fp + fn
    # No true and no predicted nuclei: a perfect image by the Kaggle convention.
    return np.where(denom == 0, 1.0, tp / np.maximum(denom, 1))


def image_precisions(truth: np.ndarray, pred: np.ndarray,
                     thresholds: np.ndarray | list[float] = IOU_THRESHOLDS) -> np.ndarray:
    """precision(t) = TP / (TP + FP + FN) per threshold; 1.0 when both images are empty."""
    return _precisions(*match_counts(truth, pred, thresholds))


def dsb_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """DSB2018 image score: mean precision over IOU_THRESHOLDS."""
    return float(image_precisions(truth, pred).mean())


def score_image(truth: np.ndarray, pred: np.ndarray) -> dict:
    """All per-image numbers: dsb, ap50, ap75, precision curve, object and match counts."""
    iou = iou_matrix(truth, pred)
    tp, fp, fn = _counts_from_iou(iou, IOU_THRESHOLDS)
    prec = _precisions(tp, fp, fn)
    i50 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.5)))
    i75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
    return {
        "dsb": float(prec.mean()),
        "ap50": float(prec[i50]),
        "ap75": float(prec[i75]),
        "precisions": [float(p) for p in prec],
        "n_true": int(iou.shape[0]),
        "n_pred": int(iou.shape[1]),
        "tp50": int(tp[i50]),
        "fp50": int(fp[i50]),
        "fn50": int(fn[i50]),
    }


def summarize(rows: list[dict]) -> dict:
    """Average ``score_image`` rows: mean dsb/ap50/ap75/precision curve, total counts."""
    rows = list(rows)
    if not rows:
        raise NucleisegError("no images to summarize")
    return {
        "dsb": float(np.mean([r["dsb"] for r in rows])),
        "ap50": float(np.mean([r["ap50"] for r in rows])),
        "ap75": float(np.mean([r["ap75"] for r in rows])),
        "precisions": [float(p) for p in np.mean([r["precisions"] for r in rows], axis=0)],
        "n_true": int(sum(r["n_true"] for r in rows)),
        "n_pred": int(sum(r["n_pred"] for r in rows)),
        "n_images": len(rows),
    }
