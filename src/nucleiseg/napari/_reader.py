"""Open nucleiseg's label TIFFs (integer instance ids, 0 background) as Labels layers.

napari opens every TIFF as an image; this reader claims only TIFFs that look like label images, so ordinary
16-bit microscopy TIFFs stay with napari's own reader. napari already writes Labels layers to TIFF.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def looks_like_labels(data: np.ndarray) -> bool:
    """A 2-D integer image whose most common value is 0 and whose ids are nearly all used (1..N)."""
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer) or data.size == 0:
        return False
    ids, counts = np.unique(data, return_counts=True)
    if ids[0] != 0 or counts[0] != counts.max() or ids[-1] < 1:
        return False
    return len(ids) >= 0.9 * (int(ids[-1]) + 1)


def get_reader(path: str | list[str]) -> Callable | None:
    """The reader for ``path`` when it is a label TIFF, else None (napari then asks its other readers)."""
    if isinstance(path, list) or not str(path).lower().endswith((".tif", ".tiff")):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if len(series.shape) != 2 or not np.issubdtype(series.dtype, np.integer):
                return None
            data = series.asarray()
    except Exception:  # not a TIFF tifffile can read: leave it to napari
        return None
    if not looks_like_labels(data):
        return None
    return lambda _path: [(data, {"name": Path(path).stem}, "labels")]
