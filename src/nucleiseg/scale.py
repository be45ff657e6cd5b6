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
    """Resize an (H, W, C) image by ``factor`` (bilinear, anti-aliased when shrinking), keeping its dtype range:
    what ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=factor < 1)`` computes."""
    from scipy.ndimage import gaussian_filter

    if factor == 1.0:
        return image
    shape = scaled_shape(image.shape, factor)
    image = image.astype(np.float32)
    if factor < 1:
        sigma = [max(0.0, (n / m - 1) / 2) for n, m in zip(image.shape[:2], shape)] + [0.0] * (image.ndim - 2)
        image = gaussian_filter(image, sigma, mode="mirror")
    return linear_resize(image, shape, mode="mirror")


def _linear_weights(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and the upper one's weight for each of ``n_out`` pixel centres."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in == 1:
        src = np.zeros(n_out)
    elif mode == "nearest":
        src = np.clip(src, 0, n_in - 1)
    else:  # mirror: reflect about the first and last pixel centres
        src = np.abs(src)
        src = np.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
    lower = np.clip(np.floor(src).astype(np.intp), 0, max(n_in - 2, 0))
    return lower, np.minimum(lower + 1, n_in - 1), (src - lower).astype(np.float32)


def linear_resize(array: np.ndarray, shape: tuple[int, int], axes: tuple[int, int] = (0, 1),
                  mode: str = "nearest") -> np.ndarray:
    """Bilinear resize of float32 ``array`` along ``axes`` to ``shape``, pixel centres aligned (what
    ``scipy.ndimage.zoom(order=1, grid_mode=True)`` computes, to float rounding), by two 1-D gathers: several
    times faster than the general spline code. ``mode``: nearest or mirror, for centres beyond the edge."""
    out = array
    for axis, n_out in zip(axes, shape):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        lower, upper, weight = _linear_weights(n_in, n_out, mode)
        weight = weight.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        a, b = np.take(out, lower, axis=axis), np.take(out, upper, axis=axis)
        out = a + (b - a) * weight
    return out.astype(np.float32, copy=False)


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
