"""Targets ablation on one trained body+border model: the same probability maps turned into instances
(a) by threshold + connected components on the foreground channel alone (what a foreground-only model
can do), (b) by the seeded watershed that uses the border channel.

Run: python bench/targets_ablation.py [--model RUN_DIR]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from nucleiseg.data import list_dataset, load_item_cached, read_split
from nucleiseg.metrics import score_image
from nucleiseg.postprocess import probabilities_to_labels, threshold_components
from nucleiseg.segmenter import load_model
from val_eval import DEFAULT_DATA


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    seg = load_model(args.model, tta=False)
    val = set(read_split())
    items = [it for it in list_dataset(DEFAULT_DATA) if it.image_id in val]
    results: dict[str, list[float]] = {}
    for item in items:
        image, truth = load_item_cached(item)
        prob = seg.probabilities(image)
        for mask_threshold in (0.4, 0.5, 0.6):
            post = dataclasses.replace(seg.post, mask_threshold=mask_threshold)
            results.setdefault(f"foreground only, threshold {mask_threshold}", []).append(
                score_image(truth, threshold_components(prob[0], post))["dsb"])
        results.setdefault("foreground + border, seeded watershed", []).append(
            score_image(truth, probabilities_to_labels(prob, seg.post))["dsb"])
    for name, scores in results.items():
        print(f"{name:<40} DSB {np.mean(scores):.4f}")


if __name__ == "__main__":
    main()
