"""Loading DSB2018 stage1_train (664 images, ~29,000 mask PNGs): cold decode vs the decoded-array cache.

Run: python bench/cache_speed.py [--data DIR]
Uses a fresh temporary cache folder: the first pass decodes and fills it, the second reads it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nucleiseg.data import list_dataset, load_item_cached
from val_eval import DEFAULT_DATA


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    t = time.perf_counter()
    items = list_dataset(args.data)
    listing = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            for item in items:
                load_item_cached(item, Path(cache))
            times.append(time.perf_counter() - t)
    n_masks = sum(len(it.masks or ()) for it in items)
    print(f"{len(items)} images, {n_masks} masks: listing {listing:.2f} s, cold decode {times[0]:.1f} s, "
          f"cached {times[1]:.1f} s (x{times[0] / times[1]:.1f})")


if __name__ == "__main__":
    main()
