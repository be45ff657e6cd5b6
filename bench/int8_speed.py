"""Network only: the bundled model.onnx (fp32) against model.int8.onnx, same inputs, same session options as
`nucleiseg predict` (onnxruntime, CPU), alternately; medians of --repeats runs per shape.

Run: python bench/int8_speed.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nucleiseg.checkpoint import INT8_ONNX, ONNX, default_model_dir
from nucleiseg.runners import OnnxRunner

SHAPES = [(256, 256), (512, 640), (1024, 1024)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = default_model_dir()
    runners = {name: OnnxRunner(folder / name, "cpu", args.threads) for name in (ONNX, INT8_ONNX)}
    rng = np.random.default_rng(0)
    print(f"{'shape':>12} {'fp32 ms':>9} {'int8 ms':>9} {'speed-up':>8}")
    for h, w in SHAPES:
        x = rng.uniform(0, 1, (1, 3, h, w)).astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for name, runner in runners.items():
            runner.run(x)  # warm-up
        for _ in range(args.repeats):
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner.run(x)
                times[name].append(time.perf_counter() - t0)
        fp32, int8 = (statistics.median(times[n]) * 1000 for n in (ONNX, INT8_ONNX))
        print(f"{h:>5} x {w:<5} {fp32:>9.1f} {int8:>9.1f} {fp32 / int8:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
