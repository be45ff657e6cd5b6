"""Peak memory and time for one large image (default 10,000 x 10,000) through `nucleiseg predict`.

Run: python bench/large_image.py [--size 10000] [--model RUN_DIR]
Builds a mosaic of the bundled sample's fluorescence images as an RGB TIFF, then runs the real CLI in a
child process and reports its wall time and peak resident memory (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from nucleiseg.data import image_kind, list_dataset
from nucleiseg.io import read_image

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "nucleiseg" / "sample"


def mosaic(size: int) -> np.ndarray:
    """A size x size RGB uint8 image tiled from 256 x 256 crops of the sample's fluorescence images, placed
    side by side as they are (not mirrored: the crops meet at visible seams), cut at the right and bottom."""
    tiles = [read_image(it.image) for it in list_dataset(SAMPLE)]
    tiles = [t[:256, :256] for t in tiles if image_kind(t) == "fluorescence" and t.dtype == np.uint8]
    out = np.empty((size, size, 3), np.uint8)
    k = 0
    for y in range(0, size, 256):
        for x in range(0, size, 256):
            t = tiles[k % len(tiles)]
            k += 1
            out[y:y + 256, x:x + 256] = t[: size - y, : size - x]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.tif"
        tifffile.imwrite(path, mosaic(args.size))
        cmd = [sys.executable, "-m", "nucleiseg", "predict", str(path), "-o", str(Path(tmp) / "out")]
        if args.model:
            cmd += ["--model", str(args.model)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        labels = tifffile.imread(Path(tmp) / "out" / "large.tif")
    mp = args.size**2 / 1e6
    print(f"{args.size}x{args.size} ({mp:.0f} MP): {seconds:.1f} s, {mp / seconds:.2f} MP/s, "
          f"peak RSS {peak_gib:.2f} GiB, {labels.max()} nuclei")


if __name__ == "__main__":
    main()
