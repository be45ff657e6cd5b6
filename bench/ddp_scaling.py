"""Training throughput of the default preset: one process (2 threads) vs torchrun with 2 processes (1 thread each).

Run: python bench/ddp_scaling.py [--data DIR] [--samples 256]
Two epochs each; reports the second epoch's training images/s from history.csv (the first warms up).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from val_eval import DEFAULT_DATA


def run(cmd: list[str], threads: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = list(csv.DictReader(open(out / "history.csv")))
    return float(rows[-1]["train_images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    common = ["train", "--data", str(args.data), "--preset", "default", "--epochs", "2",
              "--samples-per-epoch", str(args.samples)]
    with tempfile.TemporaryDirectory() as tmp:
        one = run([sys.executable, "-m", "nucleiseg", *common, "--out", f"{tmp}/one"], 2, Path(tmp) / "one")
        two = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                   "-m", "nucleiseg", *common, "--out", f"{tmp}/two"], 1, Path(tmp) / "two")
    print(f"1 process x 2 threads: {one:.1f} img/s; torchrun 2 processes x 1 thread: {two:.1f} img/s "
          f"(x{two / one:.2f})")


if __name__ == "__main__":
    main()
