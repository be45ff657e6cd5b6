"""Batch prediction: inputs to label TIFFs (+ overlays, measurements, Kaggle RLE), failures reported at the end."""

from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import Item, list_inputs
from .errors import NucleisegError
from .io import ensure_output_dir, read_image, write_labels, write_png

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
            shard: tuple[int, int] | None = None, backend: str = "torch", tile: int = 1024,
            diameter: str | float | None = "auto") -> PredictSummary:
    """Segment every input image into ``out_dir/<name>.tif``; bad files are reported, the rest still finish.

    ``diameter``: ``"auto"`` estimates each image's nucleus diameter and rescales it to the model's canonical
    size, a number gives the diameter in pixels (see ``Segmenter``).

    Images are read one ahead in a background thread so decoding overlaps the network.
    """
    from tqdm import tqdm

    from .segmenter import load_model

    items = select_shard(list_inputs(list(inputs)), shard)
    out = ensure_output_dir(out_dir)
    if rle is not None:
        ensure_output_dir(Path(rle).parent)  # fail now, not after the whole batch
    seg = load_model(model_dir, tta=tta).with_options(tile=tile, diameter=diameter)
    if backend == "onnx":
        from .export import onnx_segmenter

        seg = onnx_segmenter(seg, model_dir=model_dir)
    summary = PredictSummary()
    rows: list[tuple[str, list[str]]] = []

    def read(item: Item) -> np.ndarray | NucleisegError:
        try:
            return read_image(item.image)
        except NucleisegError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, items[0]) if items else None
        for i, item in enumerate(tqdm(items, desc="predict", unit="img", disable=None)):
            current, pending = pending, (pool.submit(read, items[i + 1]) if i + 1 < len(items) else None)
            try:
                image = current.result()
                if isinstance(image, NucleisegError):
                    raise image
                labels, used = seg.segment_with_diameter(image)
                if used:
                    log.info("%s: nucleus diameter %.1f px%s, %d nuclei", item.image_id, used,
                             " (estimated)" if diameter == "auto" else "", int(labels.max()))
                summary.written.append(_write_outputs(item, image, labels, out, overlay, measure,
                                                      used or float("nan")))
                if rle is not None:
                    from .rle import labels_to_rle

                    rows.append((item.image_id, labels_to_rle(labels)))
            except NucleisegError as exc:
                message = str(exc)
            except OSError as exc:
                message = f"{exc.filename or out}: cannot write output ({exc.strerror or exc})"
            except MemoryError:
                message = f"{item.image}: not enough memory; split it into tiles or lower --tile"
            except Exception as exc:  # one bad image must not stop the batch
                log.debug("unexpected error on %s", item.image, exc_info=True)
                message = f"{item.image}: failed ({type(exc).__name__}: {exc})"
            else:
                continue
            summary.failed.append((item.image, message))
            log.error("nucleiseg: error: %s", message)
    if rle is not None:
        from .rle import write_submission

        write_submission(rle, rows)
    log.info("predicted %d image(s) into %s%s", len(summary.written), out,
             f"; {len(summary.failed)} failed:" if summary.failed else "")
    for _, message in summary.failed:
        log.info("  failed: %s", message)
    return summary
