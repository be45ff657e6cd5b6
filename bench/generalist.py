"""Score a model on every annotated set: DSB2018 validation (by kind), the validation parts of the other
training sets, and the never-trained coelho2009_u2os; optionally the scale curve and the decoder ablation.

Run: python bench/generalist.py [--model RUN_DIR] [--diameter auto|oracle|none] [--precision auto|fp32|int8]
     [--scale-curve] [--decoders]
- --diameter auto: the model estimates each image's nucleus diameter (what `nucleiseg predict` does);
  oracle: the true median diameter from the labels; none: images as they are (0.1.0 behaviour).
- --scale-curve: DSB validation images (every 3rd of the split, 44) zoomed 0.33x..3x, scored with --diameter.
- --decoders: for a 3-channel (distance) model, the same probabilities decoded by the body+border watershed
  and by the distance watershed, each with thresholds searched on the same images (an upper bound for both).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from nucleiseg.data import image_kind, list_dataset, load_item_cached, median_diameter, read_split, split_file
from nucleiseg.metrics import score_image
from nucleiseg.segmenter import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {  # name: (folder, which images)
    "dsb2018": (DATA / "dsb2018" / "stage1_train", "val"),
    "aitslab_u2os": (DATA / "aitslab_u2os", "val"),
    "cpm15_he": (DATA / "cpm15_he", "val"),
    "monuseg2018_train": (DATA / "monuseg2018_train", "val"),
    "coelho2009_u2os": (DATA / "coelho2009_u2os", "all"),  # never trained on
}


def items_of(name: str):
    folder, part = SETS[name]
    items = list_dataset(folder)
    if part == "val":
        val = set(read_split(split_file(name)))
        items = [it for it in items if it.image_id in val]
    return items


def segmenter_for(seg, labels: np.ndarray, mode: str):
    if mode == "oracle":
        return seg.with_options(diameter=median_diameter(labels) or None)
    return seg.with_options(diameter="auto" if mode == "auto" else None)


def score_sets(seg, mode: str, names: list[str]) -> None:
    print(f"{'set':<22}{'images':>7}{'DSB':>8}{'AP@0.5':>8}{'MP/s':>7}   by kind")
    means = []
    for name in names:
        rows, kinds, pixels, seconds = [], collections.defaultdict(list), 0, 0.0
        for item in items_of(name):
            image, labels = load_item_cached(item)
            t = time.perf_counter()
            pred = segmenter_for(seg, labels, mode).segment(image)
            seconds += time.perf_counter() - t
            pixels += labels.size
            r = score_image(labels, pred)
            rows.append(r)
            kinds[image_kind(image)].append(r["dsb"])
        dsb = float(np.mean([r["dsb"] for r in rows]))
        means.append(dsb) if name != "coelho2009_u2os" else None
        by_kind = "  ".join(f"{k} {np.mean(v):.3f} ({len(v)})" for k, v in sorted(kinds.items())) if name == "dsb2018" else ""
        print(f"{name:<22}{len(rows):>7}{dsb:>8.4f}{np.mean([r['ap50'] for r in rows]):>8.4f}"
              f"{pixels / 1e6 / seconds:>7.2f}   {by_kind}", flush=True)
    if means:
        print(f"{'mean of validation sets':<22}{'':>7}{np.mean(means):>8.4f}")


def scale_curve(seg, mode: str) -> None:
    items = items_of("dsb2018")[::3]
    print(f"scale curve on {len(items)} DSB validation images (--diameter {mode})")
    for zoom in (0.33, 0.5, 1.0, 2.0, 3.0):
        scores, t = [], time.perf_counter()
        for item in items:
            image, labels = load_item_cached(item)
            if zoom != 1.0:
                image = ndimage.zoom(image, (zoom, zoom, 1), order=1)
                labels = ndimage.zoom(labels, zoom, order=0)
            scores.append(score_image(labels, segmenter_for(seg, labels, mode).segment(image))["dsb"])
        print(f"  zoom {zoom:>4}x  DSB {np.mean(scores):.4f}  ({time.perf_counter() - t:.0f} s)", flush=True)


def decoder_ablation(seg) -> None:
    from nucleiseg.postprocess import decoding_grid, scaled_sizes
    from nucleiseg.representations import distance_watershed, seeded_watershed
    from nucleiseg.scale import labels_to_shape, resize_raw, scale_factor

    probs, truths = [], []
    for name in ("dsb2018", "aitslab_u2os", "cpm15_he", "monuseg2018_train"):
        for item in items_of(name):
            image, labels = load_item_cached(item)
            factor = scale_factor(median_diameter(labels), seg.config.canonical_diameter)
            grid, area = decoding_grid(seg.probabilities(resize_raw(image[..., :3], factor)), labels.shape)
            probs.append((name, area, grid))
            truths.append(labels)

    def mean_score(decode, post) -> float:
        per = collections.defaultdict(list)
        for (name, area, p), truth in zip(probs, truths):
            per[name].append(score_image(truth, labels_to_shape(decode(p, scaled_sizes(post, area)), truth.shape))["dsb"])
        return float(np.mean([np.mean(v) for v in per.values()]))

    decoders = {
        "body_border watershed (channels 0, 1)": (lambda p, post: seeded_watershed(p[0], p[1], post),
                                                  {"seed_threshold": (0.6, 0.7, 0.8, 0.9, 0.95), "border_threshold": (0.05, 0.1, 0.2, 0.3, 0.4)}),
        "distance watershed (channels 0, 2)": (lambda p, post: distance_watershed(p[0], p[2], post),
                                               {"seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "min_seed_size": (0, 4, 8, 16)}),
    }
    for label, (decode, grid) in decoders.items():
        best = (-1.0, None)
        for values in itertools.product(*grid.values()):
            post = dataclasses.replace(seg.post, **dict(zip(grid, values)))
            best = max(best, (mean_score(decode, post), str(dict(zip(grid, values)))), key=lambda b: b[0])
        print(f"  {label:<40} mean DSB {best[0]:.4f}  at {best[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--diameter", choices=("auto", "oracle", "none"), default="auto")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated set names")
    parser.add_argument("--scale-curve", action="store_true")
    parser.add_argument("--decoders", action="store_true")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto")
    args = parser.parse_args()
    seg = load_model(args.model, tta=args.tta, precision=args.precision)
    t = time.perf_counter()
    if args.sets:
        score_sets(seg, args.diameter, [s for s in args.sets.split(",") if s])
    if args.scale_curve:
        scale_curve(seg, args.diameter)
    if args.decoders:
        decoder_ablation(seg)
    print(f"total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
