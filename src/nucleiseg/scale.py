"""Object scale: rescale images so nuclei have the network's canonical diameter, and map labels back."""

from __future__ import annotations

import numpy as np

# Within this factor of the canonical diameter an image is used as it is: the default preset trains with this
# much scale jitter, and skipping the resize keeps the common case one pass at native size.
DEAD_BAND = 1.4
MIN_FACTOR, MAX_FACTOR = 0.1, 4.0


def scale_factor(diameter: float, canonical: float) -> float:
    """Factor by which to resize an image whose nuclei are ``diameter`` px across (1.0 inside the dead band
    or when either is unknown), clipped to [0.1, 4]."""
    if not diameter > 0 or not canonical > 0:
        return 1.0
    factor = canonical / diameter
    if 1.0 / DEAD_BAND <= factor <= DEAD_BAND:
        return 1.0
    return float(np.clip(factor, MIN_FACTOR, MAX_FACTOR))


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def resize_raw(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an (H, W, C) image by ``factor`` (bilinear, anti-aliased when shrinking), keeping its dtype range."""
    from skimage.transform import resize

    if factor == 1.0:
        return image
    shape = scaled_shape(image.shape, factor) + image.shape[2:]
    return resize(image.astype(np.float32), shape, order=1, mode="reflect", anti_aliasing=factor < 1,
                  preserve_range=True).astype(np.float32)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (ids are kept, never blended); nuclei that
    vanish when shrinking are dropped and the ids made consecutive again."""
    from skimage.segmentation import relabel_sequential

    if labels.shape == tuple(shape):
        return labels
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.int64), labels.shape[0] - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.int64), labels.shape[1] - 1)
    out = labels[ys[:, None], xs[None, :]]
    return relabel_sequential(out)[0].astype(np.int32)


def sample_windows(shape: tuple[int, int], size: int = 1024, count: int = 4) -> list[tuple[slice, slice]]:
    """Up to ``count`` windows of ``size`` px spread over a large image (the whole image when it is small),
    for estimating the nucleus size without segmenting all of it."""
    h, w = shape
    if h * w <= 4 * size * size:
        return [(slice(0, h), slice(0, w))]
    ys = np.linspace(0, max(0, h - size), 2).astype(int)
    xs = np.linspace(0, max(0, w - size), 2).astype(int)
    return [(slice(y, y + size), slice(x, x + size)) for y in ys for x in xs][:count]
