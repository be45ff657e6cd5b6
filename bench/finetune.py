"""Fine-tuning on a few images of an unseen kind, against the bundled model and against training from scratch.

Fixed random draw (seed 0) of a pool of max(--sizes) images; each size N fine-tunes on the pool's first N
images (the few-image policy: under 5 images validation is on the training images, else 20 % held out of
them), trains from scratch on the same N images for the same wall time (the same network and targets and
the same number of epochs, learning rate 2e-3, no early stopping, capped at the fine-tuning's time), and
scores all three on every image outside the pool, with --diameter auto as `nucleiseg predict` does.

Run: python bench/finetune.py [--data DIR] [--sizes 4 8] [--model default|RUN_DIR] [--out DIR]
Smoke run: python bench/finetune.py --sizes 2 --test-limit 2 --epochs 1 --samples-per-epoch 8
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from nucleiseg import load_model, score_image
from nucleiseg.data import list_dataset, load_item_cached
from nucleiseg.finetune import finetune, finetune_config
from nucleiseg.history import read_history
from nucleiseg.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def link_subset(items, folder: Path) -> Path:
    """A plain-layout folder (images/ + labels/) of symbolic links to ``items``."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for item in items:
        (folder / "images" / item.image.name).symlink_to(item.image.resolve())
        (folder / "labels" / f"{item.image_id}{item.labels.suffix}").symlink_to(item.labels.resolve())
    return folder


def score(run, test_items) -> tuple[float, float]:
    """Mean DSB score and AP@0.5 of a model folder on the test images."""
    seg = load_model(run)
    rows = []
    for item in test_items:
        image, truth = load_item_cached(item)
        rows.append(score_image(truth, seg.segment(image)))
    return float(np.mean([r["dsb"] for r in rows])), float(np.mean([r["ap50"] for r in rows]))


def train_seconds(run: Path) -> tuple[float, int]:
    """(seconds of training incl. validation, epochs run) from a run's history."""
    rows = read_history(run / "history.csv")
    return sum(float(r["seconds"]) for r in rows), len(rows)


def row_text(n, name: str, wall: float, epochs: int, dsb: float, ap50: float) -> str:
    """One Markdown table row of the result."""
    return f"| {n} | {name} | {wall / 60:.1f} min | {epochs} | {dsb:.3f} | {ap50:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "coelho2009_u2os")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--model", default="default", help="model to fine-tune (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=Path("out/bench_finetune"))
    parser.add_argument("--test-limit", type=int, help="score only the first N test images (smoke runs)")
    parser.add_argument("--epochs", type=int, help="override the fine-tuning epochs (smoke runs)")
    parser.add_argument("--samples-per-epoch", type=int, help="override the crops per epoch (smoke runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    items = list_dataset(args.data)
    order = np.random.default_rng(0).permutation(len(items))
    pool = [items[i] for i in order[:max(args.sizes)]]
    test = [items[i] for i in order[max(args.sizes):]][:args.test_limit]
    overrides = {k: v for k, v in (("epochs", args.epochs), ("samples_per_epoch", args.samples_per_epoch)) if v}
    print(f"{args.data.name}: pool {[it.image_id for it in pool]}, {len(test)} test images", flush=True)

    t = time.perf_counter()
    rows = [("-", "bundled" if args.model == "default" else args.model, 0.0, 0, *score(None if args.model == "default" else args.model, test))]
    print(f"scored the starting model in {time.perf_counter() - t:.0f}s:", row_text(*rows[0]), flush=True)
    for n in args.sizes:
        run = args.out / f"n{n}"
        data = link_subset(pool[:n], run / "data")
        t = time.perf_counter()
        finetune(data, run / "finetuned", init=args.model, **overrides)
        wall = time.perf_counter() - t
        seconds, epochs = train_seconds(run / "finetuned")
        rows.append((n, "fine-tuned", wall, epochs, *score(run / "finetuned", test)))
        scratch = dataclasses.replace(finetune_config(args.model, lr=2e-3, patience=0, time_limit=seconds,
                                                      **{**overrides, "epochs": epochs}), init="")
        t = time.perf_counter()
        train(data, run / "scratch", scratch)
        rows.append((n, "from scratch", time.perf_counter() - t, train_seconds(run / "scratch")[1],
                     *score(run / "scratch", test)))
        for row in rows[-2:]:
            print("row:", row_text(*row), flush=True)

    print(f"\n{args.data.name}, scored on {len(test)} images outside the pool (--diameter auto)\n")
    print("| training images | model | wall time | epochs | DSB score | AP@0.5 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row_text(*row))


if __name__ == "__main__":
    main()
