"""Scoring predicted label images against the truth: DSB2018 score, AP@0.5/0.75, counts, by image kind."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .data import KINDS, Item, image_kind, list_dataset, load_item_cached
from .errors import NucleisegError
from .io import read_labels
from .metrics import score_image, summarize

log = logging.getLogger(__name__)
CSV_FIELDS = ("image_id", "kind", "dsb", "ap50", "ap75", "n_true", "n_pred", "tp50", "fp50", "fn50")


def _pred_path(pred_dir: Path, image_id: str) -> Path | None:
    for suffix in (".tif", ".tiff", ".png"):
        path = pred_dir / f"{image_id}{suffix}"
        if path.exists():
            return path
    return None


def score_folder(pred_dir: Path, truth_items: list[Item]) -> list[dict]:
    """One row per truth image; a missing prediction counts as an empty one (and is logged)."""
    rows = []
    for item in truth_items:
        image, truth = load_item_cached(item)
        path = _pred_path(pred_dir, item.image_id)
        if path is None:
            log.warning("%s: no prediction for %s, scored as empty", pred_dir, item.image_id)
            pred = np.zeros_like(truth)
        else:
            pred = read_labels(path)
            if pred.shape != truth.shape:
                raise NucleisegError(f"{path}: prediction shape {pred.shape} differs from truth shape {truth.shape}")
        row = score_image(truth, pred)
        row.update(image_id=item.image_id, kind=image_kind(image))
        rows.append(row)
    return rows


def summarize_by_kind(rows: list[dict]) -> dict:
    """Overall summary plus one summary per image kind present."""
    summary = {"overall": summarize(rows)}
    for kind in KINDS:
        subset = [r for r in rows if r["kind"] == kind]
        if subset:
            summary[kind] = summarize(subset)
    return summary


def format_table(summary: dict) -> str:
    lines = [f"{'images':<14}{'n':>5}{'DSB':>8}{'AP@0.5':>8}{'AP@0.75':>9}{'true':>8}{'pred':>8}"]
    for name, s in summary.items():
        lines.append(f"{name:<14}{s['n_images']:>5}{s['dsb']:>8.4f}{s['ap50']:>8.4f}{s['ap75']:>9.4f}"
                     f"{s['n_true']:>8}{s['n_pred']:>8}")
    return "\n".join(lines)


def evaluate(pred_dir: str | os.PathLike[str], truth_dir: str | os.PathLike[str],
             out_dir: str | os.PathLike[str] | None = None, report_dir: str | os.PathLike[str] | None = None,
             quiet: bool = False) -> dict:
    """Score ``pred_dir/<id>.tif`` against a DSB- or plain-layout truth folder.

    Writes ``scores.json`` (overall and by kind) and ``per_image.csv`` into ``out_dir`` (default ``pred_dir``);
    with ``report_dir`` also an HTML report. Returns the summary dict.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise NucleisegError(f"{pred_dir}: prediction folder not found")
    items = list_dataset(truth_dir)
    rows = score_folder(pred_dir, items)
    summary = summarize_by_kind(rows)
    out = Path(out_dir) if out_dir is not None else pred_dir
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scores.json", json.dumps(summary, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.5f}" if isinstance(r[k], float) else r[k]) for k in CSV_FIELDS})
    write_text_atomic(out / "per_image.csv", buf.getvalue())
    if report_dir is not None:
        from .report import write_report

        by_id = {it.image_id: it for it in items}

        def load(image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            image, truth = load_item_cached(by_id[image_id])
            path = _pred_path(pred_dir, image_id)
            return image, truth, (read_labels(path) if path else np.zeros_like(truth))

        write_report(Path(report_dir), rows, summary, load)
    if not quiet:
        print(format_table(summary))
        print(f"DSB score {summary['overall']['dsb']:.4f} over {len(rows)} images; "
              f"wrote {out / 'scores.json'} and {out / 'per_image.csv'}")
    return summary
