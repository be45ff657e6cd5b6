"""Start-up time of the CLI: wall time of `python -m nucleiseg --help` (median of N runs), which imports no
torch or onnxruntime (tests/test_cli.py checks the imports; this measures the time).

Run: python bench/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nucleiseg", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    print(f"nucleiseg --help: median {statistics.median(times):.2f} s over {args.runs} runs "
          f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
