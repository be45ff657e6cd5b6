"""What the bundled model finds at 1, 1/2 and 1/4 scale, against each image's true median nucleus diameter:
the evidence behind the coarse-to-fine diameter estimate of ``Segmenter.estimate_diameter``.

Run: python bench/scale_probe.py   (about 70 images: DSB2018 validation at zoom 1, 3 and 0.33, and the other sets)
Each line: the set, zoom, true median diameter and count, then per scale the median diameter found there, the
count, and the diameter that implies at full scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalist import items_of  # noqa: E402

from nucleiseg.data import load_item_cached, median_diameter  # noqa: E402
from nucleiseg.segmenter import load_model  # noqa: E402
from nucleiseg.transforms import as_rgb  # noqa: E402

SCALES = (1.0, 0.5, 0.25)
SETS = [("dsb2018", 4, 1.0), ("dsb2018", 12, 3.0), ("dsb2018", 12, 0.33), ("aitslab_u2os", 2, 1.0),
        ("cpm15_he", 1, 1.0), ("monuseg2018_train", 2, 1.0), ("coelho2009_u2os", 8, 1.0)]  # (set, every n-th, zoom)


def main() -> None:
    seg = load_model(None)
    for name, step, zoom in SETS:
        for item in items_of(name)[::step]:
            image, labels = load_item_cached(item)
            if zoom != 1.0:
                image = ndimage.zoom(image, (zoom, zoom, 1), order=1)
                labels = ndimage.zoom(labels, zoom, order=0)
            found = []
            for f in SCALES:
                lab = seg._labels_at(as_rgb(image), f)
                d = median_diameter(lab)
                found.append(f"x{f}: {d:5.1f} n{int(lab.max()):4d} -> {d / f:6.1f}")
            print(f"{name[:10]:<10} zoom {zoom:<4} true {median_diameter(labels):6.1f} n{int(labels.max()):4d} | "
                  + " | ".join(found), flush=True)


if __name__ == "__main__":
    main()
