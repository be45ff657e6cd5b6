"""Per-nucleus measurements with scikit-image's regionprops, written as CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from .atomic import write_text_atomic

COLUMNS = ("label", "area", "centroid_y", "centroid_x", "bbox_min_row", "bbox_min_col", "bbox_max_row",
           "bbox_max_col", "eccentricity", "solidity", "mean_intensity", "image_nucleus_diameter")


def measure(labels: np.ndarray, image: np.ndarray | None = None, diameter: float = float("nan")) -> dict[str, np.ndarray]:
    """Columns of per-nucleus measurements; mean intensity is over the image's channels (NaN without image).

    ``diameter`` is the image's nucleus diameter (px) that prediction scaled the image by (estimated with
    ``--diameter auto``), repeated on every row; NaN when unknown.
    """
    props = ["label", "area", "centroid", "bbox", "eccentricity", "solidity"]
    intensity = None
    if image is not None:
        intensity = image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)
        props.append("intensity_mean")
    table = regionprops_table(labels.astype(np.int32), intensity_image=intensity, properties=props)
    n = len(table["label"])
    return {
        "label": table["label"], "area": table["area"].astype(np.int64),
        "centroid_y": table["centroid-0"], "centroid_x": table["centroid-1"],
        "bbox_min_row": table["bbox-0"].astype(np.int64), "bbox_min_col": table["bbox-1"].astype(np.int64),
        "bbox_max_row": table["bbox-2"].astype(np.int64), "bbox_max_col": table["bbox-3"].astype(np.int64),
        "eccentricity": table["eccentricity"], "solidity": table["solidity"],
        "mean_intensity": table.get("intensity_mean", np.full(n, np.nan)),
        "image_nucleus_diameter": np.full(n, diameter, np.float64),
    }


def write_measurements(path: str | Path, columns: dict[str, np.ndarray]) -> None:
    """Write measurement columns as CSV (atomically)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for row in zip(*(columns[c] for c in COLUMNS)):
        writer.writerow([int(v) if isinstance(v, (np.integer, int)) else f"{float(v):.4f}" for v in row])
    write_text_atomic(path, buf.getvalue())
