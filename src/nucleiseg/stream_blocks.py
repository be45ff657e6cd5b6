"""One block of a streamed slide: probabilities on a global tile grid, instances, ownership, outputs.

Every pixel's probability comes from the same network tiles with the same weights (``inference.tile_grid``,
fixed on the whole image, not on the block), so two blocks that both see a nucleus see it identically, and
see it as in-memory prediction does. A nucleus gets the key ``y * W + x + 1`` of its first pixel (row-major,
network-scale frame); the block whose core holds that pixel owns it (counts it, measures it, draws its
outline); every block writes the keys of its core pixels.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .postprocess import cut_objects
from .representations import representation

if TYPE_CHECKING:
    from .segmenter import Segmenter
    from .slide_io import SlideSource

log = logging.getLogger(__name__)


class OneAtATime:
    """A runner shared by block threads that runs one batch at a time, with all its CPU threads: only one set
    of network activations is alive (memory), while the other blocks read, decode and write (speed)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.device = runner.device
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.runner.run(batch)


class HeldModel:
    """A loaded ``Segmenter`` passed by reference to local Dask threads (never pickled or hashed); its network
    runs one batch at a time (``OneAtATime``)."""

    def __init__(self, segmenter: "Segmenter") -> None:
        self.segmenter = segmenter.with_options(model=OneAtATime(segmenter.model))

    def __dask_tokenize__(self) -> int:
        return id(self)


@dataclass(frozen=True)
class ModelSpec:
    """How a Dask worker process loads the model itself (``load_model`` arguments)."""

    run_dir: str | None = None
    backend: str = "onnx"
    device: str = "auto"
    tta: bool | None = None
    threads: int | None = None
    precision: str = "auto"

    def load(self) -> "Segmenter":
        from .segmenter import load_model

        return load_model(self.run_dir, tta=self.tta, backend=self.backend, device=self.device, threads=self.threads,
                          precision=self.precision)


@lru_cache(maxsize=4)
def _loaded(spec: Any) -> "Segmenter":
    return spec.load()


def get_model(ref: Any) -> "Segmenter":
    """The Segmenter behind a ``HeldModel`` or a hashable spec with ``load()`` (loaded once per process)."""
    return ref.segmenter if isinstance(ref, HeldModel) else _loaded(ref)


@dataclass(frozen=True)
class Plan:
    """The geometry of a streamed run, in the network-scale frame (the image resized by ``factor``)."""

    source: "SlideSource"
    shape: tuple[int, int]  # network-scale image shape
    factor: float  # network scale / full resolution
    core: int  # block core size (a multiple of the keys' chunk)
    tile: int  # ``inference.tile_grid`` tile and overlap
    overlap: int
    halo: int  # initial halo; doubled up to max_halo while a nucleus in the core reaches the region's edge
    max_halo: int
    stats: tuple[float, float] | None  # percentile normalisation statistics of the whole image
    keys_path: str  # temporary uint64 key array (zarr)
    parts_dir: str  # per-block measurements and outlines
    measure: bool = False
    outlines: bool = False

    @property
    def blocks(self) -> tuple[int, int]:
        return -(-self.shape[0] // self.core), -(-self.shape[1] // self.core)

    def core_box(self, by: int, bx: int) -> tuple[int, int, int, int]:
        c = self.core
        return by * c, min(self.shape[0], (by + 1) * c), bx * c, min(self.shape[1], (bx + 1) * c)

    def block_of(self, keys: np.ndarray) -> np.ndarray:
        """Flat block index of the block owning each key."""
        yx = np.divmod(keys.astype(np.int64) - 1, self.shape[1])
        return (yx[0] // self.core) * self.blocks[1] + yx[1] // self.core


@dataclass
class BlockResult:
    """What a block task returns (small): its owned keys (sorted), the keys of nuclei it writes but does not
    own, nuclei still cut at the largest halo, and the halo used."""

    index: int
    owned: np.ndarray
    foreign: np.ndarray
    cut: int
    halo: int


def read_scaled(source: "SlideSource", box: tuple[int, int, int, int], factor: float) -> np.ndarray:
    """Pixels of the network-scale image in ``box`` (y0, y1, x0, x1), (h, w, 3); resized with bilinear
    interpolation (Gaussian anti-aliasing when shrinking) from a window of the full-resolution image."""
    y0, y1, x0, x1 = box
    if factor == 1.0:
        return source.read(y0, y1, x0, x1)
    from scipy import ndimage

    sigma = max(0.0, (1.0 / factor - 1.0) / 2.0)
    margin = int(np.ceil(4 * sigma)) + 2
    H, W = source.shape
    cy = (np.arange(y0, y1) + 0.5) / factor - 0.5
    cx = (np.arange(x0, x1) + 0.5) / factor - 0.5
    oy0, oy1 = max(0, int(np.floor(cy[0])) - margin), min(H, int(np.ceil(cy[-1])) + 1 + margin)
    ox0, ox1 = max(0, int(np.floor(cx[0])) - margin), min(W, int(np.ceil(cx[-1])) + 1 + margin)
    window = source.read(oy0, oy1, ox0, ox1).astype(np.float32)
    if sigma > 0:
        window = ndimage.gaussian_filter(window, (sigma, sigma, 0), mode="mirror")
    gy = np.clip(cy - oy0, 0, oy1 - oy0 - 1)
    gx = np.clip(cx - ox0, 0, ox1 - ox0 - 1)
    grid = np.meshgrid(gy, gx, indexing="ij")
    return np.stack([ndimage.map_coordinates(window[..., c], grid, order=1, mode="nearest")
                     for c in range(window.shape[-1])], axis=-1)


def region_probabilities(plan: Plan, seg: "Segmenter", box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(C, h, w) probabilities of ``box`` and its (h, w, 3) image, from the tiles of the grid that
    ``inference.tile_grid`` lays on the whole image (the one in-memory prediction uses), so a pixel's value is
    the same whichever block computes it, and the same as in memory."""
    from .inference import run_tiles, tile_grid

    y0, y1, x0, x1 = box
    grid = tile_grid(plan.shape, seg.config.model.stride, plan.tile, plan.overlap)
    ry0, ry1, rx0, rx1 = grid.source_box(box)
    image = read_scaled(plan.source, (ry0, ry1, rx0, rx1), plan.factor)
    out = run_tiles(seg.model, grid, image, (ry0, rx0), box, seg.config.normalization, plan.stats, seg.tta)
    return out, image[y0 - ry0: y1 - ry0, x0 - rx0: x1 - rx0]


def _first_keys(local: np.ndarray, origin: tuple[int, int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Local ids present and the global key (first pixel, row-major) of each."""
    flat = local.ravel()
    nz = np.flatnonzero(flat)
    ids, first = np.unique(flat[nz], return_index=True)
    fy, fx = np.divmod(nz[first], local.shape[1])
    return ids, ((fy + origin[0]).astype(np.uint64) * np.uint64(width) + (fx + origin[1]).astype(np.uint64) + np.uint64(1))


def run_block(plan: Plan, model_ref: Any, by: int, bx: int) -> BlockResult:
    """Segment block (by, bx) with a growing halo, write its core's keys, and its owned nuclei's parts."""
    zarr = __import__("zarr")
    seg = get_model(model_ref)
    rep = representation(seg.config.targets)
    H, W = plan.shape
    cy0, cy1, cx0, cx1 = plan.core_box(by, bx)
    halo = plan.halo
    while True:
        box = (max(0, cy0 - halo), min(H, cy1 + halo), max(0, cx0 - halo), min(W, cx1 + halo))
        prob, image = region_probabilities(plan, seg, box)
        local = rep.decode(prob, seg.post)
        del prob
        core = (slice(cy0 - box[0], cy1 - box[0]), slice(cx0 - box[2], cx1 - box[2]))
        cut = cut_objects(local, box, plan.shape, core)
        if not len(cut) or halo >= plan.max_halo or box == (0, H, 0, W):
            break
        halo = min(plan.max_halo, 2 * halo)
    if len(cut):
        log.warning("block (%d, %d): %d nucleus/nuclei reach beyond the largest halo (%d px) and may be cut",
                    by, bx, len(cut), halo)
    ids, keys = _first_keys(local, (box[0], box[2]), W)
    lut = np.zeros(int(local.max()) + 1, np.uint64)
    lut[ids] = keys
    core_keys = lut[local[core]]
    zarr.open_array(plan.keys_path, mode="r+")[cy0:cy1, cx0:cx1] = core_keys
    fy, fx = np.divmod(keys - np.uint64(1), np.uint64(W))
    own = (fy >= cy0) & (fy < cy1) & (fx >= cx0) & (fx < cx1)
    present = np.unique(core_keys)
    foreign = np.setdiff1d(present[present > 0], keys[own])
    order = np.argsort(keys[own])
    owned_ids, owned_keys = ids[own][order], keys[own][order]
    index = by * plan.blocks[1] + bx
    if plan.measure or plan.outlines:
        _write_parts(plan, index, local, image, owned_ids, (box[0], box[2]))
    return BlockResult(index, owned_keys, foreign, len(cut), halo)


def _write_parts(plan: Plan, index: int, local: np.ndarray, image: np.ndarray, owned_ids: np.ndarray,
                 origin: tuple[int, int]) -> None:
    """Measurements (.npz) and outlines (.jsonl) of the owned nuclei, in key order, at full resolution."""
    rank = np.zeros(int(local.max()) + 1, np.int32)
    rank[owned_ids] = np.arange(1, len(owned_ids) + 1, dtype=np.int32)
    owned = rank[local]  # owned nuclei numbered 1..n in key order, others 0
    folder = Path(plan.parts_dir)
    scale = 1.0 / plan.factor
    if plan.measure:
        from .measure import measure

        table = measure(owned, image)
        for c in ("centroid_y", "bbox_min_row", "bbox_max_row"):
            table[c] = table[c] + origin[0]
        for c in ("centroid_x", "bbox_min_col", "bbox_max_col"):
            table[c] = table[c] + origin[1]
        if plan.factor != 1.0:  # back to full-resolution pixels
            for c in table:
                if c.startswith(("centroid", "bbox")):
                    table[c] = table[c] * scale
            table["area"] = table["area"] * scale * scale
        np.savez(folder / f"{index}.npz", **table)
    if plan.outlines:
        from .geojson import outlines

        with open(folder / f"{index}.jsonl", "w") as f:
            for poly, area in outlines(owned, origin, scale):
                f.write(json.dumps([poly, area], separators=(",", ":")) + "\n")
