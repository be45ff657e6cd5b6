"""Arrays out of napari layers, checked with one-line errors."""

from __future__ import annotations

import numpy as np

from ..errors import NucleisegError


def image_array(layer) -> np.ndarray:
    """(H, W) or (H, W, 3) array of an Image layer (the full-resolution level of a multiscale one)."""
    data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    if layer.rgb:
        return data[..., :3]
    if data.ndim != 2:
        raise NucleisegError(f"{layer.name}: only 2-D images (grey or RGB) can be segmented, this one is "
                             f"{data.ndim}-D")
    return data


def labels_array(layer, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) int32 array of a Labels layer drawn on an image of ``shape``."""
    data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    if data.shape != tuple(shape[:2]):
        raise NucleisegError(f"{layer.name}: labels of shape {data.shape} do not match the image {tuple(shape[:2])}")
    if not data.any():
        raise NucleisegError(f"{layer.name}: holds no labelled nuclei")
    return data.astype(np.int32)
