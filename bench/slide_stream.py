"""Whole-slide streaming: peak memory and speed against image size, and Dask scaling over worker processes.

Run:
  python bench/slide_stream.py sizes [--sizes 2048 4096 10000 20000 40000] [--format zarr] [--geojson] [--model DIR]
  python bench/slide_stream.py dask [--size 8192] [--workers 1 2]
  python bench/slide_stream.py memory [--sizes 10000 20000]   # stand-in network: memory of everything else
Each size builds a tiled, zlib-compressed BigTIFF mosaic of the bundled sample's fluorescence crops under
/tmp (written tile by tile, never whole in memory), runs the real `nucleiseg predict --output-format zarr`
in a child process, and reports wall time, megapixels/s and the child's peak resident memory (ru_maxrss).
`dask` starts a dask.distributed LocalCluster with N single-threaded worker processes and runs
`--dask-scheduler` against it; the last lines extrapolate to a 100,000 x 100,000 slide on N workers.
Images and outputs are deleted afterwards.
"""

from __future__ import annotations

import argparse
import resource
import shutil
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
TILE = 512


def write_mosaic(path: Path, size: int) -> Path:
    """A size x size RGB BigTIFF tiled from 256-px crops of the sample's fluorescence images."""
    crops = [read_image(it.image) for it in list_dataset(SAMPLE)]
    crops = [c[:256, :256] for c in crops if image_kind(c) == "fluorescence" and c.dtype == np.uint8]
    block = np.empty((TILE, TILE, 3), np.uint8)
    for k in range(4):
        block[(k // 2) * 256:(k // 2 + 1) * 256, (k % 2) * 256:(k % 2 + 1) * 256] = crops[k % len(crops)]

    def tiles():
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                yield np.roll(block, (y // TILE * 97 + x // TILE * 31) % len(crops) * 256, axis=1)

    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                     compression="zlib", bigtiff=True)
    return path


def run_predict(image: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS GiB) of one `nucleiseg predict` child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nucleiseg", "predict", str(image), "-o", str(out), *extra], check=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS not above an earlier child's; run sizes in increasing order or one per call)")
    return seconds, peak / 2**20


def bench_sizes(args: argparse.Namespace) -> None:
    print(f"{'size':>7} {'MP':>7} {'seconds':>8} {'MP/s':>6} {'peak RSS GiB':>12}")
    for size in args.sizes:
        tmp = Path(tempfile.mkdtemp(dir=args.tmp))
        try:
            image = write_mosaic(tmp / f"slide{size}.tif", size)
            extra = ["--output-format", args.format] + (["--geojson"] if args.geojson else [])
            extra += ["--model", args.model] if args.model else []
            seconds, peak = run_predict(image, tmp / "out", extra)
            mp = size * size / 1e6
            print(f"{size:>7} {mp:>7.0f} {seconds:>8.1f} {mp / seconds:>6.2f} {peak:>12.2f}", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_dask(args: argparse.Namespace) -> None:
    from distributed import LocalCluster

    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    rates = {}
    try:
        image = write_mosaic(tmp / "slide.tif", args.size)
        mp = args.size**2 / 1e6
        for n in args.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "nucleiseg", "predict", str(image), "-o", str(tmp / f"out{n}"),
                                "--output-format", "zarr", "--dask-scheduler", cluster.scheduler_address], check=True)
                seconds = time.perf_counter() - t0
            rates[n] = mp / seconds
            print(f"{n} worker process(es): {seconds:.1f} s, {rates[n]:.2f} MP/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max(rates, key=lambda n: rates[n] / n)
    per_worker = rates[best] / best
    for n in (1, 8, 32, 128):
        hours = 1e4 / (per_worker * n) / 3600
        took = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        print(f"100,000 x 100,000 px (10,000 MP) on {n:>3} such workers: about {took} (linear extrapolation)")


STAND_IN = """
import sys, numpy as np
from nucleiseg.config import PostprocessConfig, preset
from nucleiseg.segmenter import Segmenter
from nucleiseg.stream import StreamOptions, segment_slide
class PixelRunner:  # a pixel-wise stand-in for the network (costs no time, holds no activations)
    device = "cpu"
    def run(self, batch):
        x = batch.mean(axis=1)
        fg = 1 / (1 + np.exp(-10 * (x - 0.3)))
        return np.stack([fg, fg / (1 + np.exp(-15 * (0.6 - x)))], axis=1).astype(np.float32)
r = segment_slide(sys.argv[1], sys.argv[2], Segmenter(PixelRunner(), preset("tiny"), PostprocessConfig()),
                  StreamOptions(geojson=True, measure=True))
print(r.nuclei, "nuclei")
"""


def bench_memory(args: argparse.Namespace) -> None:
    """Peak RSS of the streaming pipeline (reading, instances, OME-Zarr, GeoJSON, table) with a stand-in
    network, one child process per size."""
    for size in args.sizes:
        tmp = Path(tempfile.mkdtemp(dir=args.tmp))
        try:
            image = write_mosaic(tmp / f"slide{size}.tif", size)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", STAND_IN, str(image), str(tmp / "out")], check=True,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
            print(f"{size:>7} px: {proc.stdout.strip()}, {seconds:.0f} s, peak RSS so far {peak:.2f} GiB", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tmp", default="/tmp", help="where the test slides are written (and deleted)")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("sizes")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 10000, 20000])
    p.add_argument("--format", choices=("zarr", "tiff"), default="zarr")
    p.add_argument("--geojson", action="store_true")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p = sub.add_parser("dask")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p = sub.add_parser("memory")
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000])
    args = parser.parse_args()
    {"sizes": bench_sizes, "dask": bench_dask, "memory": bench_memory}[args.mode](args)


if __name__ == "__main__":
    main()
