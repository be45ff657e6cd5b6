"""Batch prediction: inputs to label TIFFs (+ overlays, measurements, Kaggle RLE), failures reported at the end."""

from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import Item, list_inputs
from .errors import NucleisegError
from .io import ensure_output_dir, read_image, write_labels, write_png

if TYPE_CHECKING:
    from .segmenter import Segmenter
    from .stream import StreamOptions

log = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    """What a batch run did: written label files and failures (path, message)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def shard_of(image_id: str, n: int) -> int:
    """Shard (1..n) that owns ``image_id``: a stable hash, so shards never depend on the listing order."""
    return zlib.crc32(image_id.encode()) % n + 1


def select_shard(items: list[Item], shard: tuple[int, int] | None) -> list[Item]:
    """Items of shard K/N; under torchrun (RANK/WORLD_SIZE) the rank's shard when none is given."""
    if shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        shard = (int(os.environ.get("RANK", "0")) + 1, int(os.environ["WORLD_SIZE"]))
    if shard is None:
        return items
    k, n = shard
    return [it for it in items if shard_of(it.image_id, n) == k]


def _write_outputs(item: Item, image: np.ndarray, labels: np.ndarray, out: Path, overlay: bool, measure: bool,
                   diameter: float = float("nan")) -> Path:
    path = out / f"{item.image_id}.tif"
    write_labels(path, labels)
    if overlay:
        from .overlay import draw_outlines

        write_png(out / f"{item.image_id}_overlay.png", draw_outlines(image, labels))
    if measure:
        from .measure import measure as measure_labels
        from .measure import write_measurements

        write_measurements(out / f"{item.image_id}_nuclei.csv", measure_labels(labels, image, diameter))
    return path


def predict(inputs: list[str | os.PathLike[str]], out_dir: str | os.PathLike[str], model_dir: str | Path | None = None,
            tta: bool | None = None, rle: str | Path | None = None, overlay: bool = False, measure: bool = False,
            shard: tuple[int, int] | None = None, backend: str = "onnx", tile: int = 1024,
            diameter: str | float | None = "auto", device: str = "auto", workers: int | None = None,
            output_format: str = "tiff", geojson: bool = False, dask_scheduler: str | None = None,
            precision: str = "auto") -> PredictSummary:
    """Segment every input image into ``out_dir/<name>.tif``; bad files are reported, the rest still finish.

    ``diameter``: ``"auto"`` estimates each image's nucleus diameter and rescales it to the model's canonical
    size, a number gives the diameter in pixels (see ``Segmenter``). ``backend``: onnx (onnxruntime) or torch;
    ``device``: auto, cpu or cuda; ``precision``: auto, fp32 or int8 (see ``load_model``).

    ``workers`` images (default: one per core, at most 4; ``$NUCLEISEG_PREDICT_WORKERS``) are each read,
    segmented and written by a thread of their own, and the network's CPU threads are split between them, so
    reading, post-processing and writing of one image overlap the network of another.

    Images above ``stream.STREAM_PIXELS``, and all images with ``output_format="zarr"``, are streamed block
    by block (``nucleiseg.stream``) into ``<name>.ome.zarr`` (or a tiled BigTIFF), on local threads or on the
    dask.distributed cluster at ``dask_scheduler``; ``geojson`` also writes ``<name>.geojson`` outlines.
    """
    from concurrent.futures import Future

    from tqdm import tqdm

    from .runners import cpu_count
    from .segmenter import load_model

    items = select_shard(list_inputs(list(inputs)), shard)
    out = ensure_output_dir(out_dir)
    if rle is not None:
        ensure_output_dir(Path(rle).parent)  # fail now, not after the whole batch
    workers = workers or int(os.environ.get("NUCLEISEG_PREDICT_WORKERS", "0")) or min(cpu_count(), 4)
    workers = max(1, min(workers, len(items)))
    seg = load_model(model_dir, tta=tta, backend=backend, device=device, threads=max(1, cpu_count() // workers),
                     precision=precision).with_options(tile=tile, diameter=diameter)
    from .stream import StreamOptions
    from .stream_blocks import ModelSpec

    if output_format not in ("tiff", "zarr"):
        raise NucleisegError(f"unknown output format {output_format!r}: choose tiff or zarr")
    slides = StreamOptions(output_format=output_format, geojson=geojson, measure=measure, scheduler=dask_scheduler,
                           workers=max(2, cpu_count() // 2))
    spec = ModelSpec(str(model_dir) if model_dir else None, backend, device, tta,
                     precision=precision) if dask_scheduler else None
    summary = PredictSummary()
    rows: list[tuple[str, list[str]]] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: list[Future] = []
    try:
        for i, item in enumerate(tqdm(items, desc="predict", unit="img", disable=None)):
            # keep the pool two images ahead of the one collected here, so a slow image does not idle it
            while len(pending) < 2 * workers and i + len(pending) < len(items):
                pending.append(pool.submit(_segment_one, items[i + len(pending)], seg, out, overlay, measure,
                                           rle is not None, diameter, slides, spec))
            path, encoded, message = pending.pop(0).result()
            if message is not None:
                summary.failed.append((item.image, message))
                log.error("nucleiseg: error: %s", message)
                continue
            summary.written.append(path)
            if encoded is not None:
                rows.append((item.image_id, encoded))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if rle is not None:
        from .rle import write_submission

        write_submission(rle, rows)
    log.info("predicted %d image(s) into %s%s", len(summary.written), out,
             f"; {len(summary.failed)} failed:" if summary.failed else "")
    for _, message in summary.failed:
        log.info("  failed: %s", message)
    return summary


def _stream_one(item: Item, seg: "Segmenter", out: Path, overlay: bool, rle: bool, slides: "StreamOptions",
                spec: object) -> Path:
    """Segment one large image (or any image into OME-Zarr) block by block."""
    from .stream import segment_slide

    if overlay or rle:
        log.warning("%s: streamed image: no overlay or RLE is written", item.image_id)
    result = segment_slide(item.image, out, seg, slides, model_spec=spec)
    log.info("%s: %d nuclei into %s", item.image_id, result.nuclei, result.labels)
    return result.labels


def _segment_one(item: Item, seg: "Segmenter", out: Path, overlay: bool, measure: bool, rle: bool,
                 diameter: str | float | None, slides: "StreamOptions | None" = None,
                 spec: object = None) -> tuple[Path | None, list[str] | None, str | None]:
    """Read, segment and write one image: (label file, RLE runs if ``rle``, None) or (None, None, error)."""
    try:
        if slides is not None:
            from .slide_io import header_pixels
            from .stream import STREAM_PIXELS

            if slides.output_format == "zarr" or header_pixels(item.image) > STREAM_PIXELS:
                return _stream_one(item, seg, out, overlay, rle, slides, spec), None, None
        image = read_image(item.image)
        labels, used = seg.segment_with_diameter(image)
        if used:
            log.info("%s: nucleus diameter %.1f px%s, %d nuclei", item.image_id, used,
                     " (estimated)" if diameter == "auto" else "", int(labels.max()))
        path = _write_outputs(item, image, labels, out, overlay, measure, used or float("nan"))
        if slides is not None and slides.geojson:
            from .geojson import labels_to_geojson

            labels_to_geojson(out / f"{item.image_id}.geojson", labels)
        if not rle:
            return path, None, None
        from .rle import labels_to_rle

        return path, labels_to_rle(labels), None
    except NucleisegError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.filename or out}: cannot write output ({exc.strerror or exc})"
    except MemoryError:
        message = f"{item.image}: not enough memory; split it into tiles or lower --tile"
    except Exception as exc:  # one bad image must not stop the batch
        log.debug("unexpected error on %s", item.image, exc_info=True)
        message = f"{item.image}: failed ({type(exc).__name__}: {exc})"
    return None, None, message
