"""OME-Zarr (NGFF 0.4) label images: a chunked, compressed multiscale pyramid that napari opens directly;
written into a temporary folder and renamed, and exported to a tiled BigTIFF without loading it whole."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

CHUNK = 1024


def pyramid_shapes(shape: tuple[int, int], chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Level shapes, each half the one before (rounded up), until the image fits one chunk."""
    shapes = [tuple(shape)]
    while max(shapes[-1]) > chunk:
        shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    return shapes


def temp_folder(target: Path) -> Path:
    """An empty folder beside ``target`` for writing it before the final rename."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def create_labels(path: Path, shape: tuple[int, int], name: str, dtype: str = "uint32") -> list[str]:
    """Create an OME-Zarr label image group at ``path`` (levels "0", "1", ...); returns the level paths."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    paths = []
    for level, level_shape in enumerate(pyramid_shapes(shape)):
        root.create_array(str(level), shape=level_shape, chunks=(CHUNK, CHUNK), dtype=dtype, fill_value=0)
        paths.append(str(path / str(level)))
    datasets = [{"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [2.0**level] * 2}]}
                for level in range(len(paths))]
    root.attrs.update({
        "multiscales": [{"version": "0.4", "name": name, "axes": [{"name": "y", "type": "space"},
                                                                 {"name": "x", "type": "space"}],
                         "datasets": datasets, "type": "nearest"}],
        "image-label": {"version": "0.4", "source": {"image": "../../"}},
    })
    return paths


def downsample_block(src: str, dst: str, box: tuple[int, int, int, int]) -> None:
    """Write ``box`` (y0, y1, x0, x1, chunk-aligned) of level ``dst`` from every second pixel of ``src``."""
    import zarr

    y0, y1, x0, x1 = box
    zarr.open_array(dst, mode="r+")[y0:y1, x0:x1] = zarr.open_array(src, mode="r")[2 * y0:2 * y1:2, 2 * x0:2 * x1:2]


def blocks(shape: tuple[int, int], size: int) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of ``size`` px tiling an image of ``shape``."""
    return [(y, min(shape[0], y + size), x, min(shape[1], x + size))
            for y in range(0, shape[0], size) for x in range(0, shape[1], size)]


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` onto ``target`` (an older ``target`` is removed only afterwards)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.rename(old / "x")
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def zarr_to_tiff(array_path: str, tiff: Path, max_id: int) -> None:
    """Write a 2-D zarr label array (ids up to ``max_id``) as a tiled, zlib-compressed BigTIFF, one tile at a
    time."""
    import tifffile
    import zarr

    from .atomic import atomic_path

    array = zarr.open_array(array_path, mode="r")
    h, w = array.shape
    dtype = np.uint16 if max_id <= np.iinfo(np.uint16).max else np.uint32

    def tiles():
        for y in range(0, h, CHUNK):
            for x in range(0, w, CHUNK):
                tile = np.zeros((CHUNK, CHUNK), dtype)
                block = array[y:y + CHUNK, x:x + CHUNK]
                tile[:block.shape[0], :block.shape[1]] = block
                yield tile

    with atomic_path(tiff) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=(h, w), dtype=dtype, tile=(CHUNK, CHUNK), compression="zlib",
                         bigtiff=True)

