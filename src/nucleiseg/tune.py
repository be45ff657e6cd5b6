"""Search post-processing thresholds on the validation images of one or more datasets; save them beside the
weights."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import THRESHOLDS
from .config import PostprocessConfig, save_postprocess
from .data import dataset_name, list_dataset, load_item_cached, median_diameter, train_val_split
from .metrics import score_image
from .postprocess import decoding_grid, probabilities_to_labels, scaled_sizes
from .representations import representation
from .scale import labels_to_shape, resize_raw, scale_factor
from .transforms import as_rgb

log = logging.getLogger(__name__)

# starting grids; a grid whose best value lies on its edge is extended outwards (see ``extend``)
GRID: dict[str, tuple[float, ...]] = {
    "mask_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
    "border_threshold": (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6),
    "min_seed_size": (0, 4, 8, 16, 24, 32, 48),
    "min_size": (0, 5, 10, 20, 40),
}
MAX_EXTENSIONS = 6  # per threshold and direction

# representation -> (threshold made inert, test on the thresholds): for body_border decoding the seeds are
# taken inside the mask, so a seed threshold at or below the mask threshold selects nothing more than the mask
INERT: dict[str, tuple[tuple[str, Callable[[PostprocessConfig], bool]], ...]] = {
    "body_border": (("seed_threshold", lambda p: p.seed_threshold <= p.mask_threshold),),
}


def inert_thresholds(targets: str, post: PostprocessConfig) -> list[str]:
    """The thresholds of ``post`` that have no effect when decoding representation ``targets``."""
    return [name for name, test in INERT.get(targets, ()) if test(post)]


@dataclass
class ValSet:
    """One dataset's validation images: probabilities on their decoding grid (``postprocess.decoding_grid``),
    the true labels, and each grid's area ratio to the network's (minimum sizes scale with it; 1 if empty)."""

    name: str
    probs: list[np.ndarray]
    truths: list[np.ndarray]
    areas: list[float] = field(default_factory=list)


def mean_score(sets: Sequence[ValSet], post: PostprocessConfig, targets: str | None = None) -> float:
    """Mean over datasets of each dataset's mean DSB score, labels mapped back to the truth's shape."""
    per_set = [np.mean([score_image(t, labels_to_shape(probabilities_to_labels(p, scaled_sizes(post, area),
                                                                               targets=targets), t.shape))["dsb"]
                        for p, t, area in zip(s.probs, s.truths, s.areas or [1.0] * len(s.probs))])
               for s in sets]
    return float(np.mean(per_set))


def extend(name: str, grid: Sequence[float], value: float) -> list[float]:
    """``grid`` with one value added beyond ``value`` when it is the grid's smallest or largest and the
    threshold's range goes further: halfway to 0 (or 1) for probability thresholds, half or double for sizes."""
    grid = sorted(grid)
    if name.endswith("_threshold"):
        low, high = value / 2, (value + 1) / 2
        low_ok, high_ok = value >= 0.02, value <= 0.98
    else:
        low, high = value // 2, max(2 * value, 1)
        low_ok, high_ok = value > 0, True
    if value == grid[0] and low_ok:
        return [round(low, 4)] + grid
    if value == grid[-1] and high_ok:
        return grid + [round(high, 4)]
    return grid


def _usable(targets: str, post: PostprocessConfig) -> PostprocessConfig:
    """``post`` with an inert seed threshold moved just above the mask threshold (nearly the same seeds)."""
    if "seed_threshold" in inert_thresholds(targets, post):
        log.warning("seed_threshold %.2f <= mask_threshold %.2f has no effect for %s decoding; starting from "
                    "seed_threshold %.2f", post.seed_threshold, post.mask_threshold, targets,
                    min(1.0, post.mask_threshold + 0.01))
        post = dataclasses.replace(post, seed_threshold=min(1.0, post.mask_threshold + 0.01))
    return post


def search(sets: Sequence[ValSet], start: PostprocessConfig, targets: str,
           rounds: int = 2) -> tuple[PostprocessConfig, float]:
    """Coordinate search over the thresholds that ``targets``' decoder reads, each in turn over its grid, for
    ``rounds`` passes; then, while the best value of a threshold lies on its grid's edge, the grid is extended
    that way and the search goes on. Combinations that make a threshold inert are skipped."""
    names = [n for n in representation(targets).tuned if n in GRID]
    grids = {n: sorted(GRID[n]) for n in names}
    best = _usable(targets, start)
    best_score = mean_score(sets, best, targets)
    extensions = dict.fromkeys(names, 0)
    todo = names * rounds
    while todo:
        name = todo.pop(0)
        for value in grids[name]:
            candidate = dataclasses.replace(best, **{name: value})
            if candidate == best or inert_thresholds(targets, candidate):
                continue
            score = mean_score(sets, candidate, targets)
            if score > best_score + 1e-6:
                best, best_score = candidate, score
        if not todo:
            log.info("tuned: %s -> DSB %.4f", best, best_score)
            for n in names:
                grid = extend(n, grids[n], getattr(best, n))
                if grid != grids[n] and extensions[n] < MAX_EXTENSIONS:
                    log.info("%s: best value %s on the grid's edge; extending the grid to %s",
                             n, getattr(best, n), grid)
                    grids[n], extensions[n] = grid, extensions[n] + 1
                    todo.append(n)
    return best, best_score


def scaled_probabilities(seg, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probabilities of ``image`` at the model's canonical nucleus size, rescaled by the true median diameter
    of ``labels`` (as ``train.validate`` does); unscaled for models without scale normalisation."""
    seg = seg.with_options(diameter=median_diameter(labels) or None)
    factor = 1.0
    if seg.config.canonical_diameter and seg.diameter:
        factor = scale_factor(float(seg.diameter), seg.config.canonical_diameter)
    return seg.probabilities(resize_raw(as_rgb(image), factor))


def tune(run_dir: str | Path, data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
         tta: bool | None = None) -> PostprocessConfig:
    """Tune the thresholds on the validation split of one or more annotated folders (``data``) and write
    ``run_dir/thresholds.json``; the score is the mean over datasets of each one's mean DSB score.

    ``tta`` (default: the model's setting) is used for the probabilities and saved as the model's default.
    Probabilities are computed once per image, at the model's canonical nucleus size (each image rescaled by
    the true median diameter of its labels); labels are scored at the image's own size.
    """
    from tqdm import tqdm

    from .segmenter import load_model

    seg = load_model(run_dir, tta=tta)
    seg = seg.with_options(post=dataclasses.replace(seg.post, tta=seg.tta))
    folders = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    sets = []
    for folder in folders:
        items = list_dataset(folder)
        _, val_items = train_val_split(items, seg.config.val_fraction, seg.config.seed)
        val = ValSet(dataset_name(Path(folder), items), [], [], [])
        for item in tqdm(val_items, desc=f"probabilities {val.name}", unit="img", disable=None):
            image, labels = load_item_cached(item)
            grid, area = decoding_grid(scaled_probabilities(seg, image, labels), labels.shape)
            val.probs.append(grid)
            val.truths.append(labels)
            val.areas.append(area)
        sets.append(val)
    targets = seg.config.targets
    before = mean_score(sets, seg.post, targets)
    best, score = search(sets, seg.post, targets)
    save_postprocess(best, Path(run_dir) / THRESHOLDS)
    print(f"validation DSB {before:.4f} -> {score:.4f} with {best}; wrote {Path(run_dir) / THRESHOLDS}")
    return best
