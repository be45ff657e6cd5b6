"""Lazy reading of large images: windows of TIFF/BigTIFF, pyramidal OME-TIFF/SVS (level 0) and OME-Zarr,
without decoding the whole image. Needs zarr (``pip install "nucleiseg[slides]"``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, NucleisegError
from .transforms import as_rgb

SLIDES_HINT = 'pip install "nucleiseg[slides]"'


def is_zarr_path(path: Path) -> bool:
    return path.is_dir() and (path.suffix.lower() == ".zarr" or path.name.lower().endswith(".ome.zarr")
                              or (path / ".zattrs").exists() or (path / "zarr.json").exists())


def _import_zarr():
    try:
        import zarr
    except ImportError:
        raise NucleisegError(f"whole-slide reading and OME-Zarr output need zarr and dask: {SLIDES_HINT}") from None
    return zarr


@dataclass(frozen=True)
class SlideSource:
    """One 2-D image on disk, read window by window; picklable, so Dask workers read it themselves.

    ``layout``: "yx", "yxc" or "cyx" (the array's axes after dropping leading length-1 axes).
    """

    path: str
    shape: tuple[int, int]
    dtype: str
    layout: str
    lead: int = 0  # leading length-1 axes to drop

    @property
    def name(self) -> str:
        name = Path(self.path).name
        for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif", ".svs", ".png", ".jpg"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return Path(self.path).stem

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] as an (h, w, 3) array in the image's dtype (grey repeated)."""
        try:
            array = _open_array(Path(self.path))
            index = (0,) * self.lead
            if self.layout == "cyx":
                window = np.moveaxis(np.asarray(array[index + (slice(0, 3), slice(y0, y1), slice(x0, x1))]), 0, -1)
            else:
                window = np.asarray(array[index + (slice(y0, y1), slice(x0, x1))])
        except NucleisegError:
            raise
        except Exception as exc:  # decoders raise many types for corrupt files
            raise InputError(self.path, f"cannot read window ({type(exc).__name__}: {exc})") from None
        if window.ndim == 3 and window.shape[-1] in (2, 4):
            window = window[..., :1] if window.shape[-1] == 2 else window[..., :3]  # drop alpha
        window = as_rgb(window)
        if window.dtype == bool:
            window = window.astype(np.uint8) * 255
        if np.issubdtype(window.dtype, np.floating):
            window = np.nan_to_num(window.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return np.ascontiguousarray(window)


def _zarr_level0(path: Path):
    """The full-resolution array of an OME-Zarr image (or a plain zarr array)."""
    zarr = _import_zarr()
    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise InputError(path, "zarr group without OME-Zarr multiscales metadata")
    return node[multiscales[0]["datasets"][0]["path"]]


def _open_array(path: Path):
    if path.is_dir():
        return _zarr_level0(path)
    if path.suffix.lower() in (".tif", ".tiff", ".svs", ".btf", ".tf8"):
        zarr = _import_zarr()
        import tifffile

        node = zarr.open(tifffile.imread(str(path), aszarr=True, series=0, level=0), mode="r")
        return node if hasattr(node, "shape") else node["0"]
    from .io import read_image

    return read_image(path)  # PNG/JPEG: decoded whole (these formats cannot be read by window)


def _layout(path: Path, shape: tuple[int, ...]) -> tuple[str, int]:
    lead = 0
    while len(shape) - lead > 2 and shape[lead] == 1 and not (len(shape) - lead == 3 and shape[-1] not in (1, 2, 3, 4)):
        lead += 1
    core = shape[lead:]
    if len(core) == 2:
        return "yx", lead
    if len(core) == 3 and core[-1] in (1, 2, 3, 4):
        return "yxc", lead
    if len(core) == 3 and core[0] in (1, 2, 3, 4):
        return "cyx", lead
    raise InputError(path, f"expected a 2-D grey or colour image, got an array of shape {tuple(shape)}")


def open_slide(path: str | os.PathLike[str]) -> SlideSource:
    """Open an image lazily (header only): TIFF/BigTIFF/OME-TIFF/SVS, OME-Zarr, or any other image file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        array = _open_array(path)
        shape = tuple(int(s) for s in array.shape)
        dtype = str(array.dtype)
    except NucleisegError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot open image ({type(exc).__name__}: {exc})") from None
    layout, lead = _layout(path, shape)
    yx = shape[lead + 1: lead + 3] if layout == "cyx" else shape[lead: lead + 2]
    if min(yx) < 1:
        raise InputError(path, f"image has no pixels (shape {shape})")
    return SlideSource(str(path), (int(yx[0]), int(yx[1])), dtype, layout, lead)


def header_pixels(path: str | os.PathLike[str]) -> int:
    """Pixels (height x width) of an image from its header; 0 when it cannot be told cheaply."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".svs", ".btf"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
        elif path.is_dir():
            meta = path / "0" / ".zarray"
            shape = json.loads(meta.read_text())["shape"] if meta.exists() else open_slide(path).shape
        else:
            return 0
        dims = sorted((int(s) for s in shape), reverse=True)
        return dims[0] * dims[1] if len(dims) >= 2 else 0
    except Exception:
        return 0


def strip_sample(source: SlideSource, y0: int, y1: int, step: int) -> np.ndarray:
    """Values of the pixels with row-major index divisible by ``step`` in rows [y0, y1): the exact subsample
    ``transforms.percentiles`` takes of the whole image, gathered one strip at a time."""
    w = source.shape[1]
    strip = source.read(y0, y1, 0, w).reshape(-1, 3)
    first = (-y0 * w) % step
    return strip[first::step].copy()  # a copy: a strided view would keep the whole strip alive until the end
