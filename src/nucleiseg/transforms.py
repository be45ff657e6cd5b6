"""Intensity normalisation, resizing and the training augmentations for microscopy images."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, C>=3) image to (H, W, 3): grey repeated, extra channels dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def dtype_max(image: np.ndarray) -> float:
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max)
    return max(float(image.max(initial=0.0)), 1.0)


def percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.8, max_samples: int = 1_000_000) -> tuple[float, float]:
    """Low and high intensity percentiles over all channels, from a subsample of whole pixels for large images.

    The subsample strides over pixels, never over the interleaved values: a stride over an (H, W, 3) array
    that is a multiple of 3 would see one channel only.
    """
    pixels = image.reshape(image.shape[0] * image.shape[1], -1) if image.ndim == 3 else image.reshape(-1, 1)
    step = max(1, pixels.size // max_samples)
    lo, hi = np.percentile(pixels[::step], (low, high))
    return float(lo), float(hi)


def normalize(image: np.ndarray, mode: str, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Map an (H, W, 3) image to float32.

    ``scale255`` divides by the dtype's maximum (the seed's x/255 for 8-bit images); ``percentile`` maps the
    image's 1st and 99.8th percentiles to 0 and 1, which removes camera offsets and bit-depth differences.
    ``stats`` passes precomputed percentiles (tiled prediction normalises tiles with whole-image statistics).
    """
    x = image.astype(np.float32, copy=False)
    if mode == "scale255":
        return x / np.float32(dtype_max(image))
    lo, hi = percentiles(image) if stats is None else stats
    scale = np.float32(1.0 / max(hi - lo, 1e-6))
    return np.clip((x - np.float32(lo)) * scale, -0.5, 2.0)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W[, C]) float array, with anti-aliasing when shrinking."""
    from skimage.transform import resize

    return resize(image, shape, order=1, mode="reflect", anti_aliasing=True, preserve_range=True).astype(np.float32)


def dihedral(array: np.ndarray, k: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """One of the 8 flips/rotations: rotate by 90*(k % 4), then flip if k >= 4."""
    out = np.rot90(array, k % 4, axes=axes)
    return np.flip(out, axis=axes[0]) if k >= 4 else out


def random_crop(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
                scale_range: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Crop a random window of ``size * scale`` pixels and resize it to ``size`` (scale jitter).

    Images smaller than the window are padded with their median (labels with 0) rather than mirrored,
    so no unlabelled mirror-nuclei appear.
    """
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    scale = float(np.exp(rng.uniform(lo, hi)))
    win = max(8, int(round(size * scale)))
    h, w = labels.shape
    ph, pw = max(0, win - h), max(0, win - w)
    if ph or pw:
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        fill = np.median(image.reshape(-1, image.shape[-1]), axis=0)
        image = np.stack([np.pad(image[..., c], pads, constant_values=fill[c]) for c in range(image.shape[-1])], -1)
        labels = np.pad(labels, pads)
        h, w = labels.shape
    y = int(rng.integers(0, h - win + 1))
    x = int(rng.integers(0, w - win + 1))
    image, labels = image[y:y + win, x:x + win], labels[y:y + win, x:x + win]
    if win != size:
        zoom = size / win
        image = ndimage.zoom(image, (zoom, zoom, 1), order=1, grid_mode=True, mode="nearest")[:size, :size]
        labels = ndimage.zoom(labels, zoom, order=0, grid_mode=True, mode="nearest")[:size, :size]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour and intensity jitter on a normalised (H, W, 3) image: channel gains, random grey,
    inversion, contrast, brightness, gamma and noise, so fluorescence, brightfield and H&E all train."""
    x = x.copy()
    if rng.random() < 0.5:
        x *= rng.uniform(0.8, 1.2, size=3).astype(np.float32)  # stain / colour balance
    if rng.random() < 0.2:
        x[:] = x.mean(axis=-1, keepdims=True)
    if rng.random() < 0.2:
        x = x[..., rng.permutation(3)]
    if rng.random() < 0.1:
        x = 1.0 - x  # dark nuclei on light ground, as in brightfield
    if rng.random() < 0.8:
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.7, 1.4) + mean + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.3:
        x = np.clip(x, 0.0, None) ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.2:
        x = x + rng.normal(0, rng.uniform(0.0, 0.05), size=x.shape).astype(np.float32)
    return x.astype(np.float32)
