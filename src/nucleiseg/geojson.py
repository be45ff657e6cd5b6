"""Nucleus outlines as GeoJSON: one polygon Feature per nucleus, which QuPath imports as detections."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_path


def outlines(labels: np.ndarray, origin: tuple[int, int] = (0, 0), scale: float = 1.0
             ) -> Iterator[tuple[list[list[float]], float]]:
    """(outline, area in px) of each nucleus 1..labels.max(), in order: the closed outer contour as [x, y]
    pairs in full-resolution image coordinates (pixel (0, 0) spans [0, 1) x [0, 1), as in QuPath)."""
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    n = int(labels.max())
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            yield [], 0.0
            continue
        mask = np.pad(labels[box] == i, 1)
        contours = find_contours(mask.astype(np.float32), 0.5)
        contour = max(contours, key=len)  # the outer outline (holes are inner contours)
        contour = approximate_polygon(contour, tolerance=0.5)
        y = (contour[:, 0] - 1 + box[0].start + origin[0] + 0.5) * scale
        x = (contour[:, 1] - 1 + box[1].start + origin[1] + 0.5) * scale
        ring = np.round(np.stack([x, y], axis=1), 2).tolist()
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        yield ring, float(areas[i]) * scale * scale


def feature(label: int, ring: list[list[float]], area: float) -> dict:
    """A GeoJSON Feature for one nucleus (QuPath: a detection named by its label id)."""
    return {"type": "Feature", "id": str(label),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "name": f"nucleus {label}", "label": label,
                           "measurements": {"area_px": area}}}


def write_geojson(path: str | Path, features: Iterable[dict]) -> int:
    """Write a FeatureCollection feature by feature (atomically; memory does not grow with the count)."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"type": "FeatureCollection", "features": [\n')
        for feat in features:
            f.write((",\n" if count else "") + json.dumps(feat, separators=(",", ":")))
            count += 1
        f.write("\n]}\n")
    return count


def labels_to_geojson(path: str | Path, labels: np.ndarray) -> int:
    """Write the outlines of an in-memory label image (ids kept); returns the number of features."""
    return write_geojson(path, (feature(i, ring, area) for i, (ring, area) in enumerate(outlines(labels), start=1)
                                if ring))
