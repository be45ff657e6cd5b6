"""Running the network on whole images: preprocessing, padding, tiling with blending, TTA."""

from __future__ import annotations

import numpy as np

from .config import TrainConfig
from .runners import Runner
from .transforms import dihedral, normalize, percentiles, resize_image

DEFAULT_TILE = 1024  # images up to this size run in one pass; larger ones are tiled
DEFAULT_OVERLAP = 64


def _blend_window(size: int, overlap: int) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over ``overlap`` pixels at both ends, 1 inside."""
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return w


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def _run_batch(runner: Runner, batch: np.ndarray, tta: bool) -> np.ndarray:
    """(B, 3, h, w) normalised input to (B, C, h, w) probabilities, averaged over 8 flips/rotations if tta."""
    if not tta:
        return runner.run(batch)
    acc = None
    for k in range(8):
        p = runner.run(np.ascontiguousarray(dihedral(batch, k, axes=(2, 3))))
        # a rotation is undone by the opposite rotation, a reflection (k >= 4) by itself
        p = dihedral(p, k if k >= 4 else -k % 4, axes=(2, 3))
        acc = p if acc is None else acc + p
    return acc / np.float32(8)


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad an (H, W, C) array at the bottom/right to (h, w) (edge-pad when too small to reflect)."""
    ph, pw = h - x.shape[0], w - x.shape[1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[0] and pw < x.shape[1] else "edge"
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode=mode)


def predict_probabilities(runner: Runner, image: np.ndarray, config: TrainConfig, tta: bool = False,
                          tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                          batch_pixels: int = 1 << 20) -> np.ndarray:
    """(H, W, 3) raw image to (C, H, W) float32 probabilities at the image's own resolution.

    ``resize`` models see the whole image at their input size and the map is resized back (the seed);
    ``native`` models run on tiles of ``tile`` pixels with ``overlap``, blended by a cosine window, so
    memory depends on the tile, not the image. Normalisation statistics come from the whole image.
    """
    h, w = image.shape[:2]
    stride = config.model.stride
    if config.input_mode == "resize":
        x = resize_image(normalize(image, config.normalization), (config.input_size, config.input_size))
        prob = _run_batch(runner, x.transpose(2, 0, 1)[None].copy(), tta)[0]
        return np.stack([resize_image(p, (h, w)) for p in prob])
    stats = percentiles(image) if config.normalization == "percentile" else None
    tile = max(stride, tile // stride * stride)
    th = min(tile, -(-h // stride) * stride)
    tw = min(tile, -(-w // stride) * stride)
    overlap = min(overlap, th // 2, tw // 2)
    ys, xs = _tile_starts(max(h, th), th, overlap), _tile_starts(max(w, tw), tw, overlap)
    wy = _blend_window(th, overlap if len(ys) > 1 else 0)
    wx = _blend_window(tw, overlap if len(xs) > 1 else 0)
    # the tiles form a product grid, so the summed blending weight is separable: no full-size weight array
    sum_y, sum_x = np.zeros(h, np.float32), np.zeros(w, np.float32)
    for y in ys:
        sum_y[y:y + th] += wy[:h - y]
    for x in xs:
        sum_x[x:x + tw] += wx[:w - x]
    out = np.zeros((config.model.out_channels, h, w), np.float32)
    coords = [(y, x) for y in ys for x in xs]
    # activations dominate memory: cap the pixels per batch (1 MP: 4 tiles of 512, 1 tile of 1024)
    batch_size = max(1, batch_pixels // (th * tw))
    for start in range(0, len(coords), batch_size):
        chunk = coords[start:start + batch_size]
        batch = np.stack([
            _pad_to(normalize(image[y:y + th, x:x + tw], config.normalization, stats), th, tw).transpose(2, 0, 1)
            for y, x in chunk])
        probs = _run_batch(runner, np.ascontiguousarray(batch), tta)
        for (y, x), p in zip(chunk, probs):
            hh, ww = min(th, h - y), min(tw, w - x)
            weight = (wy[:hh, None] / sum_y[y:y + hh, None]) * (wx[None, :ww] / sum_x[None, x:x + ww])
            out[:, y:y + hh, x:x + ww] += p[:, :hh, :ww] * weight
    return out
