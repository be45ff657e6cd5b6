"""Running the network on whole images: preprocessing, padding, tiling with blending, TTA.

Large images run on a grid of tiles fixed to the whole image (``tile_grid``), each tile keeping only the pixels
at least ``context_margin`` px from its edges inside the image (a tile's outputs near an inner edge see padding
instead of the real neighbourhood), with a cosine cross-fade of ``overlap`` px between neighbouring kept zones.
Tile starts are multiples of the network stride and the last tile ends at the stride-padded image edge, so
each kept pixel sees what a one-pass prediction sees. ``run_tiles`` computes any box of the image from the
grid; the in-memory path (``predict_probabilities``) and the streaming path (``stream_blocks``) both use it, so
a pixel gets bit-identical values in both, whichever box asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .runners import Runner
from .transforms import dihedral, normalize, percentiles, resize_image

DEFAULT_TILE = 1024  # images up to this size run in one pass; larger ones are tiled
DEFAULT_OVERLAP = 32  # cross-fade between neighbouring tiles' kept zones (beyond the discarded margins)
CONTEXT_STRIDES = 6  # px discarded at a tile's inner edges, in network strides: 96 px for the release model,
# whose receptive field is 188 px


def context_margin(stride: int) -> int:
    """Pixels a tile discards at its edges inside the image: about half the U-Net's receptive field."""
    return CONTEXT_STRIDES * stride


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``size`` on an image of ``shape``: per axis, tile starts, kept spans [lo, hi) in image
    coordinates and the normalised blending weights over each span (they sum to 1 at every pixel)."""

    shape: tuple[int, int]
    size: tuple[int, int]
    starts: tuple[tuple[int, ...], tuple[int, ...]]
    spans: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]
    weights: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]

    def tiles(self, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        """(i, j) of the tiles whose kept zones meet ``box`` (y0, y1, x0, x1), row-major."""
        y0, y1, x0, x1 = box
        ys = [i for i, (lo, hi) in enumerate(self.spans[0]) if lo < y1 and hi > y0]
        xs = [j for j, (lo, hi) in enumerate(self.spans[1]) if lo < x1 and hi > x0]
        return [(i, j) for i in ys for j in xs]

    def source_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The image pixels (y0, y1, x0, x1) that the tiles meeting ``box`` read (it contains ``box``)."""
        tiles = self.tiles(box)
        (H, W), (th, tw) = self.shape, self.size
        ys = [self.starts[0][i] for i, _ in tiles]
        xs = [self.starts[1][j] for _, j in tiles]
        return min(ys), min(H, max(ys) + th), min(xs), min(W, max(xs) + tw)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp rising over ``n`` px; ``ramp + ramp[::-1] == 1``."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _axis(length: int, tile: int, stride: int, margin: int, ramp: int):
    padded = -(-length // stride) * stride
    if padded <= tile:  # one pass (no extra cost for images up to the tile size)
        return padded, (0,), ((0, length),), (np.ones(length, np.float32),)
    step = tile - 2 * margin - ramp
    n = -(-(padded - tile) // step) + 1
    q = (padded - tile) // stride
    # evenly spread, on multiples of the stride, the last tile ending at the padded edge; spacing <= step
    starts = tuple(k * q // (n - 1) * stride for k in range(n))
    spans = tuple((0 if k == 0 else s + margin, length if k == n - 1 else s + tile - margin)
                  for k, s in enumerate(starts))
    raw = []
    for k, (lo, hi) in enumerate(spans):
        w = np.ones(hi - lo, np.float32)
        if k > 0:  # cross-fade with the previous kept zone
            o = spans[k - 1][1] - lo
            w[:o] *= _ramp(o)
        if k < n - 1:
            o = hi - spans[k + 1][0]
            w[hi - lo - o:] *= _ramp(o)[::-1]
        raw.append(w)
    total = np.zeros(length, np.float32)
    for (lo, hi), w in zip(spans, raw):
        total[lo:hi] += w
    weights = tuple(w / total[lo:hi] for (lo, hi), w in zip(spans, raw))
    return tile, starts, spans, weights


def tile_grid(shape: tuple[int, int], stride: int, tile: int = DEFAULT_TILE,
              overlap: int = DEFAULT_OVERLAP) -> TileGrid:
    """The tiling of an image of ``shape`` (H, W). A side up to ``tile`` runs in one pass (padded to the
    stride); longer sides use tiles of ``tile`` px (a multiple of the stride, at least twice the discarded
    margins plus the cross-fade, so at least half of a tile is kept) overlapping by 2 * margin + ``overlap``
    or more."""
    margin = context_margin(stride)
    ramp = max(0, overlap)
    tile = max(-(-tile // stride) * stride, -(-2 * (2 * margin + ramp) // stride) * stride)
    ay, ax = _axis(shape[0], tile, stride, margin, ramp), _axis(shape[1], tile, stride, margin, ramp)
    return TileGrid((shape[0], shape[1]), (ay[0], ax[0]), (ay[1], ax[1]), (ay[2], ax[2]), (ay[3], ax[3]))


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


def _pad_axis(x: np.ndarray, axis: int, pad: int) -> np.ndarray:
    """Pad the end of ``axis`` by ``pad``: reflect (edge when too short to reflect), as the whole image is."""
    if pad <= 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return np.pad(x, widths, mode="reflect" if pad < x.shape[axis] else "edge")


def _tile_input(grid: TileGrid, source: np.ndarray, origin: tuple[int, int], y: int, x: int,
                normalization: str, stats) -> np.ndarray:
    """(3, th, tw) normalised input of the tile at (y, x); past the image edge, the image reflected."""
    (H, W), (th, tw) = grid.shape, grid.size
    oy, ox = origin
    raw = source[y - oy: min(H, y + th) - oy, x - ox: min(W, x + tw) - ox]
    x_ = normalize(raw, normalization, stats)
    x_ = _pad_axis(_pad_axis(x_, 0, th - raw.shape[0]), 1, tw - raw.shape[1])
    return x_.transpose(2, 0, 1)


def run_tiles(runner: Runner, grid: TileGrid, source: np.ndarray, origin: tuple[int, int],
              box: tuple[int, int, int, int], normalization: str, stats: tuple[float, float] | None = None,
              tta: bool = False, batch_pixels: int = 1 << 20) -> np.ndarray:
    """(C, y1 - y0, x1 - x0) probabilities of ``box`` (y0, y1, x0, x1) from the tiles of ``grid``.

    ``source`` holds the raw image pixels of ``grid.source_box(box)`` (or more), its first pixel at image
    coordinates ``origin``. Every pixel sums the same tiles, with the same weights, in the same order,
    whichever box it is computed in. At most ``batch_pixels`` input pixels go to the network at once."""
    y0, y1, x0, x1 = box
    th, tw = grid.size
    coords = grid.tiles(box)
    out = None
    batch_size = max(1, batch_pixels // (th * tw))
    for start in range(0, len(coords), batch_size):
        chunk = coords[start:start + batch_size]
        batch = np.stack([_tile_input(grid, source, origin, grid.starts[0][i], grid.starts[1][j], normalization,
                                      stats) for i, j in chunk])
        probs = _run_batch(runner, np.ascontiguousarray(batch), tta)
        if out is None:
            out = np.zeros((probs.shape[1], y1 - y0, x1 - x0), np.float32)
        for (i, j), p in zip(chunk, probs):
            (ly, hy), (lx, hx) = grid.spans[0][i], grid.spans[1][j]
            ya, yb, xa, xb = max(ly, y0), min(hy, y1), max(lx, x0), min(hx, x1)
            sy, sx = grid.starts[0][i], grid.starts[1][j]
            weight = grid.weights[0][i][ya - ly: yb - ly, None] * grid.weights[1][j][None, xa - lx: xb - lx]
            out[:, ya - y0: yb - y0, xa - x0: xb - x0] += p[:, ya - sy: yb - sy, xa - sx: xb - sx] * weight
    return out


def predict_probabilities(runner: Runner, image: np.ndarray, config: TrainConfig, tta: bool = False,
                          tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                          batch_pixels: int = 1 << 20) -> np.ndarray:
    """(H, W, 3) raw image to (C, H, W) float32 probabilities at the image's own resolution.

    ``resize`` models see the whole image at their input size and the map is resized back (the seed);
    ``native`` models run in one pass up to ``tile`` px, larger images on the tiles of ``tile_grid`` (each
    dropping ``context_margin`` px at inner edges, cross-faded over ``overlap`` px), so memory depends on the
    tile, not the image, and tiles match a one-pass prediction. Normalisation statistics come from the whole
    image.
    """
    h, w = image.shape[:2]
    if config.input_mode == "resize":
        x = resize_image(normalize(image, config.normalization), (config.input_size, config.input_size))
        prob = _run_batch(runner, x.transpose(2, 0, 1)[None].copy(), tta)[0]
        return np.stack([resize_image(p, (h, w)) for p in prob])
    stats = percentiles(image) if config.normalization == "percentile" else None
    grid = tile_grid((h, w), config.model.stride, tile, overlap)
    return run_tiles(runner, grid, image, (0, 0), (0, h, 0, w), config.normalization, stats, tta, batch_pixels)
