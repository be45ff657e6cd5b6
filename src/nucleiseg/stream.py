"""Whole slides: segmentation block by block on Dask, into OME-Zarr (or a tiled BigTIFF), GeoJSON and a
measurement table, with memory that follows the block, not the image.

Pass 1 segments each block (with a halo) and writes the keys of its core's nuclei (see ``stream_blocks``);
the client numbers the owned nuclei block after block; pass 2 turns keys into consecutive ids at full
resolution, then the pyramid is built level by level. Every pass is a list of Dask tasks: local threads by
default, or a running dask.distributed cluster (``scheduler="tcp://host:port"``), whose workers read the
input and write the output themselves (so both must be on a filesystem the workers share).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NucleisegError
from .slide_io import SLIDES_HINT, SlideSource, open_slide, strip_sample
from .stream_blocks import BlockResult, HeldModel, Plan, get_model, run_block

if TYPE_CHECKING:
    from .segmenter import Segmenter

log = logging.getLogger(__name__)

STREAM_PIXELS = 64 * 2**20  # larger images are always streamed
OUT_BLOCK = 2048  # pass-2 and pyramid block size (a multiple of the OME-Zarr chunk)


@dataclass(frozen=True)
class StreamOptions:
    """Outputs and geometry of a streamed run. ``block``: block core in network-scale px (rounded to the
    network stride); ``tile``/``overlap``: the network tiling (``inference.tile_grid``; None: the segmenter's,
    so streamed labels equal in-memory ones); ``halo``: initial halo, doubled up to ``max_halo`` while a
    nucleus of the core reaches its edge; ``workers``: blocks at a time on local threads."""

    output_format: str = "zarr"  # zarr | tiff
    geojson: bool = False
    measure: bool = False
    scheduler: str | None = None
    workers: int = 2
    block: int = 2048
    tile: int | None = None
    overlap: int | None = None
    halo: int = 128
    max_halo: int = 1024


@dataclass
class StreamResult:
    """What a streamed run wrote and found."""

    labels: Path
    geojson: Path | None
    measurements: Path | None
    nuclei: int
    diameter: float
    cut: int  # nuclei still reaching beyond the largest halo (possibly cut)
    orphans: int  # fragments whose owner block did not see them (numbered after the others)


@contextlib.contextmanager
def dask_compute(scheduler: str | None, workers: int) -> Iterator[Callable[[list], list]]:
    """A function computing a list of delayed tasks: on local threads, or on the cluster at ``scheduler``."""
    try:
        import dask
    except ImportError:
        raise NucleisegError(f"streaming needs dask: {SLIDES_HINT}") from None
    if scheduler is None:
        yield lambda tasks: list(dask.compute(*tasks, scheduler="threads", num_workers=workers))
        return
    try:
        from distributed import Client
    except ImportError:
        raise NucleisegError('--dask-scheduler needs dask.distributed: pip install "nucleiseg[distributed]"') from None
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise NucleisegError(f"{scheduler}: cannot reach the Dask scheduler ({exc})") from None
    with client:
        yield lambda tasks: list(client.gather(client.compute(tasks)))


def _window_diameter(source: SlideSource, model_ref: Any, box: tuple[int, int, int, int]) -> float:
    return get_model(model_ref).estimate_diameter(source.read(*box))


def _scale(source: SlideSource, seg: "Segmenter", model_ref: Any, compute, delayed) -> tuple[float, float]:
    """(factor, nucleus diameter) as ``Segmenter`` chooses them, the diameter estimated on sample windows."""
    from .scale import sample_windows, scale_factor

    canonical = seg.config.canonical_diameter
    if not canonical or seg.diameter is None:
        return 1.0, 0.0
    if seg.diameter != "auto":
        return scale_factor(float(seg.diameter), canonical), float(seg.diameter)
    boxes = [(w[0].start, w[0].stop, w[1].start, w[1].stop) for w in sample_windows(source.shape)]
    diameter = float(np.median(compute([delayed(_window_diameter)(source, model_ref, b) for b in boxes])))
    return scale_factor(diameter, canonical), diameter


def _stats(source: SlideSource, seg: "Segmenter", compute, delayed) -> tuple[float, float] | None:
    """Percentile statistics of the whole image from the same pixel subsample ``transforms.percentiles``
    takes, gathered strip by strip."""
    if seg.config.normalization != "percentile":
        return None
    h, w = source.shape
    step = max(1, h * w * 3 // 1_000_000)
    rows = max(1, min(h, (1 << 22) // w))
    parts = compute([delayed(strip_sample)(source, y, min(h, y + rows), step) for y in range(0, h, rows)])
    lo, hi = np.percentile(np.concatenate(parts), (1.0, 99.8))
    return float(lo), float(hi)


def segment_slide(path: str | Path, out_dir: str | Path, seg: "Segmenter", options: StreamOptions = StreamOptions(),
                  model_spec: Any = None) -> StreamResult:
    """Segment one large image block by block into ``out_dir/<name>.ome.zarr`` (or ``<name>.tif``), plus
    ``<name>.geojson`` and ``<name>_nuclei.csv`` when asked. ``seg`` runs the blocks on local threads; on a
    cluster the workers load ``model_spec`` (a hashable object with ``load() -> Segmenter``) themselves."""
    from dask import delayed

    source = open_slide(path)
    if seg.config.input_mode != "native":
        raise NucleisegError(f"{path}: a {seg.config.input_mode!r}-input model cannot stream large images")
    if options.scheduler and model_spec is None:
        raise NucleisegError("a Dask cluster needs a model the workers can load (model_spec)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_ref = model_spec if options.scheduler else HeldModel(seg)
    work = Path(tempfile.mkdtemp(prefix=f".{source.name}.stream.", dir=out))
    try:
        with dask_compute(options.scheduler, options.workers) as compute:
            factor, diameter = _scale(source, seg, model_ref, compute, delayed)
            plan = _plan(source, seg, options, factor, _stats(source, seg, compute, delayed), work)
            log.info("%s: %d x %d px, nucleus diameter %.1f px, factor %.2f, %d x %d blocks", source.name,
                     *source.shape, diameter, factor, *plan.blocks)
            results = compute([delayed(run_block)(plan, model_ref, by, bx)
                               for by in range(plan.blocks[0]) for bx in range(plan.blocks[1])])
            halos = collections.Counter(r.halo for r in results)
            log.info("halo per block: %s", ", ".join(f"{h} px x{n}" for h, n in sorted(halos.items())))
            offsets, owned, orphans = _number(plan, results)
            nuclei = int(offsets[-1]) + len(orphans)
            labels = _write_labels(plan, options, compute, delayed, offsets, owned, orphans, nuclei, results, out)
        geo = _assemble_geojson(plan, offsets, out / f"{source.name}.geojson") if options.geojson else None
        table = _assemble_measurements(plan, offsets, out / f"{source.name}_nuclei", diameter) \
            if options.measure else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cut = sum(r.cut for r in results)
    if cut or orphans:
        log.warning("%s: %d nuclei larger than the largest halo (%d px) may be cut; %d fragments numbered apart",
                    source.name, cut, options.max_halo, len(orphans))
    return StreamResult(labels, geo, table, nuclei, diameter, cut, len(orphans))


def _plan(source: SlideSource, seg: "Segmenter", options: StreamOptions, factor: float,
          stats: tuple[float, float] | None, work: Path) -> Plan:
    import zarr

    from .scale import scaled_shape

    stride = seg.config.model.stride
    tile = seg.tile if options.tile is None else options.tile
    overlap = seg.overlap if options.overlap is None else options.overlap
    core = max(stride, options.block // stride * stride)
    chunks = -(-core // 1024)  # key chunks of at most 1024 px that divide the core (blocks never share one)
    while core % chunks:
        chunks += 1
    shape = scaled_shape(source.shape, factor)
    keys = work / "keys.zarr"
    zarr.create_array(str(keys), shape=shape, chunks=(core // chunks,) * 2, dtype="uint64", fill_value=0,
                      zarr_format=2)
    parts = work / "parts"
    parts.mkdir()
    return Plan(source, shape, factor, core, tile, overlap, options.halo, max(options.halo, options.max_halo), stats,
                str(keys), str(parts), measure=options.measure, outlines=options.geojson)


def _number(plan: Plan, results: list[BlockResult]) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, int]]:
    """Id offsets per block (owned nuclei numbered block after block, in key order), the owned keys, and ids
    for keys written by a block but owned by none (numbered after all others)."""
    results = sorted(results, key=lambda r: r.index)
    offsets = np.concatenate([[0], np.cumsum([len(r.owned) for r in results])]).astype(np.int64)
    owned = {r.index: r.owned for r in results}
    orphans: dict[int, int] = {}
    for r in results:
        for key, b in zip(r.foreign.tolist(), plan.block_of(r.foreign).tolist()):
            arr = owned.get(b, np.zeros(0, np.uint64))
            pos = int(np.searchsorted(arr, key))
            if (pos >= len(arr) or int(arr[pos]) != key) and key not in orphans:
                orphans[key] = int(offsets[-1]) + len(orphans) + 1
    return offsets, owned, orphans


def relabel_block(plan: Plan, dst: str, box: tuple[int, int, int, int], full: tuple[int, int], offsets: np.ndarray,
                  owned: dict[int, np.ndarray], orphans: dict[int, int]) -> None:
    """Write ``box`` of the full-resolution label array ``dst``: keys looked up at network scale (nearest
    neighbour) and turned into global ids."""
    import zarr

    y0, y1, x0, x1 = box
    (hs, ws), (h, w) = plan.shape, full
    sy = np.minimum(((np.arange(y0, y1) + 0.5) * hs / h).astype(np.int64), hs - 1)
    sx = np.minimum(((np.arange(x0, x1) + 0.5) * ws / w).astype(np.int64), ws - 1)
    keys = zarr.open_array(plan.keys_path, mode="r")[sy[0]:sy[-1] + 1, sx[0]:sx[-1] + 1]
    if plan.factor != 1.0:
        keys = keys[(sy - sy[0])[:, None], (sx - sx[0])[None, :]]
    u, inv = np.unique(keys, return_inverse=True)
    ids = np.zeros(len(u), np.int64)
    blocks = np.where(u > 0, plan.block_of(np.maximum(u, 1)), -1)
    for b in np.unique(blocks[blocks >= 0]).tolist():
        sel = np.flatnonzero(blocks == b)
        arr = owned.get(b, np.zeros(0, np.uint64))
        pos = np.searchsorted(arr, u[sel])
        found = (pos < len(arr)) & (arr[np.minimum(pos, max(len(arr) - 1, 0))] == u[sel]) if len(arr) else pos < 0
        ids[sel] = np.where(found, offsets[b] + pos + 1, [orphans.get(int(k), 0) for k in u[sel]])
    zarr.open_array(dst, mode="r+")[y0:y1, x0:x1] = ids[inv].reshape(keys.shape).astype(np.uint32)


def _near(plan: Plan, box: tuple[int, int, int, int], full: tuple[int, int], halo: int,
          owned: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The owned keys of the blocks whose nuclei can reach ``box`` (full resolution)."""
    f = plan.shape[0] / full[0]
    by0, by1 = max(0, int(box[0] * f - halo) // plan.core), min(plan.blocks[0] - 1, int(box[1] * f + halo) // plan.core)
    bx0, bx1 = max(0, int(box[2] * f - halo) // plan.core), min(plan.blocks[1] - 1, int(box[3] * f + halo) // plan.core)
    return {b: owned[b] for by in range(by0, by1 + 1) for bx in range(bx0, bx1 + 1)
            if (b := by * plan.blocks[1] + bx) in owned}


def _write_labels(plan: Plan, options: StreamOptions, compute, delayed, offsets, owned, orphans, nuclei: int,
                  results: list[BlockResult], out: Path) -> Path:
    """Pass 2 and the pyramid: the finished OME-Zarr (or BigTIFF) label image."""
    from .ome_zarr import blocks, create_labels, downsample_block, replace_folder, temp_folder, zarr_to_tiff

    full, name = plan.source.shape, plan.source.name
    target = out / (f"{name}.ome.zarr" if options.output_format == "zarr" else f"{name}.tif")
    folder = temp_folder(target) if options.output_format == "zarr" else Path(plan.parts_dir).parent / "labels.zarr"
    levels = create_labels(folder, full, name)
    if options.output_format != "zarr":
        levels = levels[:1]
    halo = max(r.halo for r in results) + 1
    compute([delayed(relabel_block)(plan, levels[0], box, full, offsets, _near(plan, box, full, halo, owned), orphans)
             for box in blocks(full, OUT_BLOCK)])
    import zarr

    for src, dst in zip(levels, levels[1:]):
        compute([delayed(downsample_block)(src, dst, box) for box in blocks(zarr.open_array(dst).shape, OUT_BLOCK)])
    if options.output_format == "zarr":
        replace_folder(folder, target)
    else:
        zarr_to_tiff(levels[0], target, nuclei)
    return target


def _owned_parts(plan: Plan, offsets: np.ndarray, suffix: str) -> Iterator[tuple[int, Path]]:
    for b in range(len(offsets) - 1):
        part = Path(plan.parts_dir) / f"{b}{suffix}"
        if part.exists():
            yield int(offsets[b]), part


def _assemble_geojson(plan: Plan, offsets: np.ndarray, path: Path) -> Path:
    from .geojson import feature, write_geojson

    def features() -> Iterator[dict]:
        for start, part in _owned_parts(plan, offsets, ".jsonl"):
            with open(part) as f:
                for i, line in enumerate(f, start=start + 1):
                    ring, area = json.loads(line)
                    if ring:
                        yield feature(i, ring, area)

    n = write_geojson(path, features())
    log.info("wrote %d outlines to %s", n, path)
    return path


# Above this many nuclei the table is written as Parquet (when pyarrow is installed): a 100k x 100k slide has
# millions of nuclei, a CSV of several hundred MB that spreadsheet tools cannot open anyway.
PARQUET_MIN_ROWS = 200_000


def _assemble_measurements(plan: Plan, offsets: np.ndarray, stem: Path, diameter: float) -> Path:
    """The per-nucleus table with global ids and coordinates, written block after block: ``<stem>.csv``, or
    ``<stem>.parquet`` for more than PARQUET_MIN_ROWS nuclei when pyarrow is installed."""
    from .atomic import atomic_path
    from .measure import COLUMNS

    def blocks() -> Iterator[dict[str, np.ndarray]]:
        for start, part in _owned_parts(plan, offsets, ".npz"):
            table = dict(np.load(part))
            table["label"] = np.arange(start + 1, start + 1 + len(table["label"]))
            table["image_nucleus_diameter"] = np.full(len(table["label"]), diameter or np.nan)
            yield {c: table[c] for c in COLUMNS}

    rows = int(offsets[-1])
    if rows > PARQUET_MIN_ROWS:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            log.info("%d nuclei: writing CSV; pip install pyarrow for a Parquet table", rows)
        else:
            path = stem.with_suffix(".parquet")
            integer = {c for c in COLUMNS if c in ("label", "area") or c.startswith("bbox_")}
            schema = pa.schema([(c, pa.int64() if c in integer else pa.float64()) for c in COLUMNS])
            with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
                for block in blocks():
                    writer.write_table(pa.table({c: block[c].astype(np.int64 if c in integer else np.float64)
                                                 for c in COLUMNS}, schema=schema))
            return path
    path = stem.with_suffix(".csv")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for block in blocks():
            for row in zip(*block.values()):
                writer.writerow([int(v) if isinstance(v, (np.integer, int)) else f"{float(v):.4f}" for v in row])
    return path
