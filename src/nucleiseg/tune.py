"""Search post-processing thresholds on the validation images and save them beside the weights."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .checkpoint import THRESHOLDS
from .config import PostprocessConfig, save_postprocess
from .data import list_dataset, load_item_cached, train_val_split
from .metrics import score_image
from .postprocess import probabilities_to_labels

log = logging.getLogger(__name__)

GRID = {
    "mask_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
    "border_threshold": (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6),
    "min_seed_size": (0, 4, 8, 16, 24, 32, 48),
    "min_size": (0, 5, 10, 20, 40),
}


def mean_score(probs: list[np.ndarray], truths: list[np.ndarray], post: PostprocessConfig) -> float:
    return float(np.mean([score_image(t, probabilities_to_labels(p, post))["dsb"] for p, t in zip(probs, truths)]))


def search(probs: list[np.ndarray], truths: list[np.ndarray], start: PostprocessConfig, rounds: int = 2) -> tuple[PostprocessConfig, float]:
    """Coordinate search: each threshold in turn over its grid, keeping the best, for ``rounds`` passes."""
    best, best_score = start, mean_score(probs, truths, start)
    names = [n for n in GRID if probs[0].shape[0] == 2 or n in ("mask_threshold", "min_size")]
    for _ in range(rounds):
        for name in names:
            for value in GRID[name]:
                candidate = dataclasses.replace(best, **{name: value})
                score = mean_score(probs, truths, candidate)
                if score > best_score + 1e-6:
                    best, best_score = candidate, score
        log.info("tuned: %s -> DSB %.4f", best, best_score)
    return best, best_score


def tune(run_dir: str | Path, data_dir: str | Path, tta: bool | None = None) -> PostprocessConfig:
    """Tune thresholds on the validation split of ``data_dir`` and write ``run_dir/thresholds.json``.

    ``tta`` (default: the model's setting) is used for the probabilities and saved as the model's default;
    the search runs on probabilities computed once per image.
    """
    from tqdm import tqdm

    from .segmenter import load_model

    seg = load_model(run_dir, tta=tta)
    seg = seg.with_options(post=dataclasses.replace(seg.post, tta=seg.tta))
    _, val_items = train_val_split(list_dataset(data_dir), seg.config.val_fraction, seg.config.seed)
    probs, truths = [], []
    for item in tqdm(val_items, desc="probabilities", unit="img", disable=None):
        image, labels = load_item_cached(item)
        probs.append(seg.probabilities(image))
        truths.append(labels)
    before = mean_score(probs, truths, seg.post)
    best, score = search(probs, truths, seg.post)
    save_postprocess(best, Path(run_dir) / THRESHOLDS)
    print(f"validation DSB {before:.4f} -> {score:.4f} with {best}; wrote {Path(run_dir) / THRESHOLDS}")
    return best
