"""Threshold tuning: grids extended past an edge optimum, inert thresholds avoided, only the representation's
thresholds searched, probabilities at the model's scale, several datasets."""

import dataclasses
import logging
import shutil

import numpy as np
import pytest
from conftest import SAMPLE, disc_labels, run_cli, synthetic_image, write_dsb_folder
from skimage.segmentation import find_boundaries

from nucleiseg.config import PostprocessConfig
from nucleiseg.metrics import score_image
from nucleiseg.postprocess import probabilities_to_labels
from nucleiseg.representations import normalized_distance
from nucleiseg.tune import ValSet, extend, inert_thresholds, mean_score, scaled_probabilities, search

# two pairs of touching nuclei (1+2, 3+4), and a lone one
TRUTH = disc_labels((52, 64), [(14, 14, 8), (14, 29, 7), (36, 16, 8), (36, 31, 7), (38, 54, 6)])


def body_border_probs(border_value: float, second_pair: float | None = None) -> np.ndarray:
    """Sure foreground; every nucleus' boundary predicted faintly, at ``border_value`` (``second_pair`` for
    nuclei 3 and 4)."""
    fg = np.where(TRUTH > 0, 0.99, 0.01)
    value = np.where(np.isin(TRUTH, (3, 4)) & (second_pair is not None), second_pair or 0.0, border_value)
    border = np.where(find_boundaries(TRUTH, mode="inner") & (TRUTH > 0), value, 0.0)
    return np.stack([fg, border]).astype(np.float32)


def test_grid_is_extended_past_an_edge_optimum():
    """Borders predicted at 0.08 and 0.04: border_threshold 0.05, the grid's lowest value, separates the first
    pair, and only a threshold below 0.04 also the second. The search must go past the grid's edge."""
    sets = [ValSet("a", [body_border_probs(0.08, second_pair=0.04)], [TRUTH])]
    start = PostprocessConfig(min_seed_size=0, min_size=0)
    best, score = search(sets, start, "body_border")
    assert best.border_threshold < 0.04 and score == 1.0


def test_inert_seed_threshold_is_left(caplog):
    sets = [ValSet("a", [body_border_probs(0.5)], [TRUTH])]
    start = PostprocessConfig(mask_threshold=0.6, seed_threshold=0.5)
    assert inert_thresholds("body_border", start) == ["seed_threshold"]
    assert inert_thresholds("distance", start) == []  # a distance map has its own scale
    with caplog.at_level(logging.WARNING, logger="nucleiseg.tune"):
        best, score = search(sets, start, "body_border")
    assert "has no effect" in caplog.text
    assert not inert_thresholds("body_border", best) and score == 1.0


def test_distance_search_tunes_its_own_thresholds_only():
    """The smaller nucleus of each touching pair has a predicted distance peak of 0.55 or 0.45: it gets a seed
    only with a seed_threshold below that; 0.5 (the grid's edge) seeds one, only a value below 0.45 (and below
    the mask threshold, which is not inert for the distance decoder) seeds both."""
    distance = normalized_distance(TRUTH)
    distance[TRUTH == 2] *= 0.45
    distance[TRUTH == 4] *= 0.55
    fg = np.where(TRUTH > 0, 0.99, 0.01)
    probs = np.stack([fg, np.zeros_like(fg), distance]).astype(np.float32)
    sets = [ValSet("a", [probs], [TRUTH])]
    start = PostprocessConfig(border_threshold=0.33, min_seed_size=0, min_size=0)
    assert mean_score(sets, start, "distance") < 0.7
    best, score = search(sets, start, "distance")
    assert score == 1.0 and best.seed_threshold < 0.45 < best.mask_threshold
    assert best.border_threshold == 0.33  # the distance decoder does not read it


def test_extend_stays_in_range():
    assert extend("border_threshold", (0.05, 0.1), 0.05) == [0.025, 0.05, 0.1]
    assert extend("mask_threshold", (0.3, 0.7), 0.7) == [0.3, 0.7, 0.85]
    assert extend("mask_threshold", (0.3, 0.7), 0.5) == [0.3, 0.7]
    assert extend("min_size", (0, 5, 40), 0) == [0, 5, 40]
    assert extend("min_size", (0, 5, 40), 40) == [0, 5, 40, 80]
    assert extend("seed_threshold", (0.5, 0.99), 0.99) == [0.5, 0.99]


def test_score_is_the_mean_over_datasets():
    good = body_border_probs(0.5)
    merged = body_border_probs(0.0)  # no border: the touching nuclei merge
    post = PostprocessConfig(min_seed_size=0, min_size=0)
    one = score_image(TRUTH, probabilities_to_labels(merged, post))["dsb"]
    assert one < 0.7
    sets = [ValSet("a", [good, good, good], [TRUTH] * 3), ValSet("b", [merged], [TRUTH])]
    assert mean_score(sets, post, "body_border") == pytest.approx((1.0 + one) / 2)


def test_probabilities_at_the_canonical_scale_score_like_segment():
    """With scale normalisation, tune scores each image as ``segment`` does at its true median diameter."""
    import nucleiseg
    from nucleiseg.data import median_diameter

    seg = nucleiseg.load_model(tta=False)
    seg = seg.with_options(config=dataclasses.replace(seg.config, canonical_diameter=20.0))
    rng = np.random.default_rng(3)
    image, truth = synthetic_image(rng, (96, 96), n=6, radius=(4, 5))
    probs = scaled_probabilities(seg, image, truth)
    assert probs.shape[1:] != truth.shape  # rescaled: nuclei ~9 px across, canonical 20 px
    expected = score_image(truth, seg.with_options(diameter=median_diameter(truth)).segment(image))["dsb"]
    assert mean_score([ValSet("a", [probs], [truth])], seg.post, seg.config.targets) == pytest.approx(expected)
    assert expected > 0.5


def test_cli_tunes_on_several_datasets(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rng = np.random.default_rng(0)
    folders = []
    for name, n in (("a", 3), ("b", 4)):
        for i in range(n):
            write_dsb_folder(tmp_path / name, f"{name}{i}", *synthetic_image(rng, (64, 64)))
        folders += ["--data", tmp_path / name]
    proc = run_cli("tune", "--model", run, *folders, "--no-tta")
    assert proc.returncode == 0, proc.stderr
    assert "validation DSB" in proc.stdout and (run / "thresholds.json").is_file()


@pytest.mark.slow
def test_bundled_sample_tunes_without_inert_thresholds(tmp_path):
    from nucleiseg.checkpoint import default_model_dir, load_settings
    from nucleiseg.tune import tune

    run = tmp_path / "run"
    shutil.copytree(default_model_dir(), run)
    best = tune(run, SAMPLE)
    assert not inert_thresholds(load_settings(run)[1].targets, best)
