"""Reading images and label images, writing label TIFFs and PNGs (atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError, NucleisegError
from .transforms import as_rgb

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _header_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """Shape and bytes per sample read from the file header, without decoding pixels."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype).itemsize
    from PIL import Image

    with Image.open(path) as im:
        bands = len(im.getbands())
        itemsize = 2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1
        return (im.height, im.width, bands), itemsize


def check_memory(path: Path, shape: tuple[int, ...], itemsize: int, factor: float = 3.0) -> None:
    """Refuse an image whose decoded size (times ``factor`` working copies) would exceed available memory."""
    need = int(np.prod(shape, dtype=np.int64)) * max(itemsize, 4) * factor
    avail = available_memory()
    if need > avail:
        raise InputError(path, f"image of shape {shape} needs about {need / 2**30:.1f} GiB but only "
                               f"{avail / 2**30:.1f} GiB is available; split it into tiles before predicting")


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if len(tif.series) > 1 or len(tif.pages) > 1:
                raise InputError(path, f"multi-page TIFF ({len(tif.pages)} pages) is not a 2-D image")
            return tif.asarray()
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if getattr(im, "n_frames", 1) > 1:
            raise InputError(path, "animated or multi-frame image is not a 2-D image")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("I;16", "I;16B", "I;16L"):
            return np.array(im, dtype=np.uint16)
        return np.asarray(im)


def read_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into a numpy array, raising ``InputError`` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        shape, itemsize = _header_shape(path)
        check_memory(path, shape, itemsize)
        array = _decode(path)
    except NucleisegError:
        raise
    except MemoryError:
        raise InputError(path, "not enough memory to decode; split it into tiles before predicting") from None
    except Exception as exc:  # decoders raise many types for corrupt files
        raise InputError(path, f"cannot read image ({type(exc).__name__}: {exc})".rstrip()) from None
    return array


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as an (H, W, 3) array in its own dtype: grey is repeated, alpha dropped.

    Float images are checked for NaN/Inf, which are replaced by the finite minimum.
    """
    path = Path(path)
    image = read_raw(path)
    if image.ndim == 3 and image.shape[-1] not in (1, 2, 3, 4) and image.shape[0] in (1, 2, 3, 4):
        image = np.moveaxis(image, 0, -1)  # channels-first TIFF
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] > 4:
        raise InputError(path, f"expected a 2-D grey or colour image, got an array of shape {image.shape} "
                               "(3-D stacks are not supported: save each plane separately)")
    if image.shape[-1] == 2:  # grey + alpha
        image = image[..., :1]
    image = as_rgb(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        finite = np.isfinite(image)
        if not finite.all():
            if not finite.any():
                raise InputError(path, "image holds no finite values (all NaN/Inf)")
            image = np.where(finite, image, image[finite].min())
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(path, f"image has no pixels (shape {image.shape})")
    return np.ascontiguousarray(image)


def colour_instances(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) colour-coded instances to (H, W) int32 labels: one id per distinct colour, black (and
    fully transparent) pixels background. Ids follow the colours' sort order."""
    colour = rgb[..., :3]
    if rgb.shape[-1] == 4:
        colour = np.where(rgb[..., 3:] > 0, colour, 0)
    flat = colour.reshape(-1, 3)
    if np.issubdtype(flat.dtype, np.integer) and flat.dtype.itemsize <= 2:
        key = flat.astype(np.uint64)
        flat = (key[:, 0] << np.uint64(32)) | (key[:, 1] << np.uint64(16)) | key[:, 2]
    values, inverse = np.unique(flat, axis=0 if flat.ndim == 2 else None, return_inverse=True)
    black = not np.any(values[0])
    return (inverse.reshape(rgb.shape[:2]) + (0 if black else 1)).astype(np.int32)


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label image (0 background, ids > 0 nuclei) as a 2-D int32 array.

    A colour (RGB or RGBA) label image holds one nucleus per colour, as many annotation tools save them: it is
    read by unique colour, black being background. A grey image stored as RGB (all channels equal) keeps its
    values as ids.
    """
    path = Path(path)
    labels = read_raw(path)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        grey = (labels[..., 0] == labels[..., 1]).all() and (labels[..., 0] == labels[..., 2]).all()
        opaque = labels.shape[-1] == 3 or bool((labels[..., 3] > 0).all())
        labels = labels[..., 0] if grey and opaque else colour_instances(labels)
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise InputError(path, f"label image must be 2-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        if not np.all(np.mod(labels, 1) == 0):
            raise InputError(path, "label image holds non-integer values")
    if labels.min() < 0:
        raise InputError(path, "label image holds negative ids")
    return labels.astype(np.int32)


def read_mask(path: Path) -> np.ndarray:
    """Read a binary mask PNG (one nucleus) as a boolean array."""
    mask = read_raw(path)
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask > 0


def label_dtype(labels: np.ndarray) -> np.dtype:
    return np.dtype(np.uint16) if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write a label image as a TIFF (uint16, or uint32 when needed) that napari and Fiji open as labels."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(label_dtype(labels)), compression="zlib")


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an 8-bit image as PNG atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def ensure_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder if needed and check that it is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NucleisegError(f"{path}: cannot create output folder ({exc.strerror})") from None
    if not path.is_dir():
        raise NucleisegError(f"{path}: output path is not a folder")
    if not os.access(path, os.W_OK):
        raise NucleisegError(f"{path}: output folder is not writable")
    return path
