"""How the model holds up beyond DSB2018's acquisition settings, on the validation split.

Run: python bench/domain_shift.py [--model RUN_DIR] [--limit N]
Variants of each validation image (truth transformed the same way):
- original: as stored (8-bit);
- 16bit_offset: 16-bit with a camera offset and gain (x * 37 + 1200, plus Gaussian read noise);
- zoom_2x / zoom_0.5x: other magnifications (bilinear image, nearest-neighbour labels);
- grey: histology and brightfield converted to grey (no stain colour);
Prints the DSB score per variant overall and by kind.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
from scipy import ndimage
from val_eval import DEFAULT_DATA

from nucleiseg.data import image_kind, list_dataset, load_item_cached, read_split
from nucleiseg.metrics import score_image
from nucleiseg.segmenter import load_model


def variants(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    yield "original", image, labels
    x = image.astype(np.float32) * 37 + 1200 + rng.normal(0, 30, image.shape)
    yield "16bit_offset", np.clip(x, 0, 65535).astype(np.uint16), labels
    for zoom in (2.0, 0.5):
        if zoom > 1 and image.shape[0] * image.shape[1] > 600 * 700:
            continue  # keep the run short: skip upscaling the largest images
        im = ndimage.zoom(image, (zoom, zoom, 1), order=1)
        lab = ndimage.zoom(labels, zoom, order=0)
        yield f"zoom_{zoom:g}x", im, lab
    grey = np.repeat(image.astype(np.float32).mean(-1, keepdims=True), 3, -1).astype(image.dtype)
    yield "grey", grey, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N validation images")
    args = parser.parse_args()
    seg = load_model(args.model, tta=False)
    val = set(read_split())
    items = [it for it in list_dataset(DEFAULT_DATA) if it.image_id in val]
    items = items[: args.limit] if args.limit else items
    scores: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for item in items:
        image, labels = load_item_cached(item)
        kind = image_kind(image)
        for name, im, lab in variants(image, labels, rng):
            dsb = score_image(lab, seg.segment(im))["dsb"]
            scores[(name, "overall")].append(dsb)
            scores[(name, kind)].append(dsb)
    names = list(dict.fromkeys(n for n, _ in scores))
    kinds = ["overall", "fluorescence", "brightfield", "histology"]
    print(f"{'variant':<14}" + "".join(f"{k:>14}" for k in kinds))
    for n in names:
        print(f"{n:<14}" + "".join(f"{np.mean(scores[(n, k)]):>9.4f} ({len(scores[(n, k)]):>3})"
                                    if scores.get((n, k)) else f"{'-':>14}" for k in kinds))
    print(f"{len(items)} images, {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
