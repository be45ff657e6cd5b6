"""Score a model on the committed DSB2018 validation split (132 images), overall and by image kind.

Run: python bench/val_eval.py --model RUN_DIR [--tta] [--data ../shared/data/dsb2018/stage1_train]
Prints the score table, seconds and throughput; writes scores.json / per_image.csv into --out if given.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from nucleiseg.data import read_split
from nucleiseg.evaluate import evaluate
from nucleiseg.predict import predict

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"


def val_folder(data: Path, dest: Path) -> Path:
    """A DSB-layout folder of symbolic links to the validation images."""
    for image_id in read_split():
        os.symlink((data / image_id).resolve(), dest / image_id)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "val").mkdir()
        truth = val_folder(args.data, Path(tmp) / "val")
        pred = Path(tmp) / "pred"
        t = time.perf_counter()
        summary = predict([truth], pred, model_dir=args.model, tta=args.tta)
        seconds = time.perf_counter() - t
        evaluate(pred, truth, out_dir=args.out or pred)
    print(f"predict: {len(summary.written)} images in {seconds:.1f} s ({len(summary.written) / seconds:.2f} img/s)")


if __name__ == "__main__":
    main()
