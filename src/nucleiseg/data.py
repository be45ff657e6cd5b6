"""Datasets on disk: DSB layout, plain images/labels layout, folders of images; decoded-array cache."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, NucleisegError
from .io import is_image_file, read_image, read_labels, read_mask

log = logging.getLogger(__name__)

KINDS = ("fluorescence", "brightfield", "histology")


@dataclass(frozen=True)
class Item:
    """One image on disk and where its annotation lives (``masks`` for DSB layout, ``labels`` for plain)."""

    image_id: str
    image: Path
    masks: tuple[Path, ...] | None = None
    labels: Path | None = None


def is_dsb_layout(root: Path) -> bool:
    """True if ``root`` holds ``<ImageId>/images/<ImageId>.png`` folders."""
    if not root.is_dir():
        return False
    return any((d / "images").is_dir() for d in root.iterdir() if d.is_dir())


def is_plain_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "labels").is_dir()


def _dsb_items(root: Path, need_masks: bool, only: str | None = None) -> list[Item]:
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and (p / "images").is_dir()):
        if only is not None and d.name != only:
            continue
        images = sorted(p for p in (d / "images").iterdir() if is_image_file(p))
        if not images:
            raise InputError(d / "images", "no image file in DSB images folder")
        image = d / "images" / f"{d.name}.png"
        image = image if image.exists() else images[0]
        mask_dir = d / "masks"
        masks = None
        if mask_dir.is_dir():
            masks = tuple(sorted(p for p in mask_dir.iterdir() if is_image_file(p)))
            if not masks:
                log.warning("%s: empty masks folder; %s is taken as an image without nuclei", mask_dir, d.name)
        if need_masks and masks is None:
            raise InputError(mask_dir, "DSB folder has no masks folder")
        items.append(Item(d.name, image, masks=masks))
    return items


def _plain_items(root: Path, need_labels: bool) -> list[Item]:
    labels = {p.stem: p for p in (root / "labels").iterdir() if is_image_file(p)}
    items = []
    for p in sorted((root / "images").iterdir()):
        if not is_image_file(p):
            continue
        label = labels.get(p.stem)
        if need_labels and label is None:
            raise InputError(p, f"no label image with stem {p.stem!r} in {root / 'labels'}")
        items.append(Item(p.stem, p, labels=label))
    return items


def list_dataset(root: str | os.PathLike[str], need_annotations: bool = True) -> list[Item]:
    """List the images (and annotations) of a DSB-layout or plain-layout folder, sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise NucleisegError(f"{root}: no such folder")
    if is_plain_layout(root):
        items = _plain_items(root, need_annotations)
    elif is_dsb_layout(root):
        items = _dsb_items(root, need_annotations)
    else:
        raise NucleisegError(f"{root}: neither DSB layout (<id>/images, <id>/masks) nor images/ + labels/ folders")
    if not items:
        raise NucleisegError(f"{root}: no images found")
    return items


def list_inputs(paths: list[str | os.PathLike[str]]) -> list[Item]:
    """Expand prediction inputs (files, folders of images, DSB or plain layout folders) into items."""
    items: list[Item] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if (path / "images").is_dir() and not is_plain_layout(path):  # one DSB <ImageId> folder
                items.extend(_dsb_items(path.parent, need_masks=False, only=path.name))
            elif is_dsb_layout(path) or is_plain_layout(path):
                items.extend(list_dataset(path, need_annotations=False))
            else:
                files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
                if not files:
                    raise NucleisegError(f"{path}: folder holds no image files")
                items.extend(Item(p.stem, p) for p in files)
        elif path.exists():
            items.append(Item(path.stem, path))
        else:
            raise InputError(path, "no such file or folder")
    seen: dict[str, Path] = {}
    for item in items:
        if item.image_id in seen and seen[item.image_id] != item.image:
            raise NucleisegError(f"{item.image}: output name {item.image_id!r} also used by {seen[item.image_id]}")
        seen[item.image_id] = item.image
    return items


def merge_masks(masks: tuple[Path, ...], shape: tuple[int, int]) -> np.ndarray:
    """Merge one-nucleus mask files into a label image (ids 1..N in file order; overlaps go to the later mask)."""
    labels = np.zeros(shape, dtype=np.int32)
    overlaps = 0
    for i, path in enumerate(masks, start=1):
        mask = read_mask(path)
        if mask.shape != shape:
            raise InputError(path, f"mask shape {mask.shape} differs from image shape {shape}")
        overlaps += int(np.count_nonzero(labels[mask]))
        labels[mask] = i
    if overlaps:
        log.warning("%s: %d pixels covered by more than one mask (later mask kept)", masks[0].parent, overlaps)
    return labels


def load_item(item: Item) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an item's image (H, W, 3) and label image (H, W) int32, or None without annotation."""
    image = read_image(item.image)
    shape = image.shape[:2]
    if item.masks is not None:
        labels = merge_masks(item.masks, shape)
    elif item.labels is not None:
        labels = read_labels(item.labels)
        if labels.shape != shape:
            raise InputError(item.labels, f"label shape {labels.shape} differs from image shape {shape}")
    else:
        return image, None
    return image, labels


# Bump when decoding changes what an item decodes to (read_image, read_labels, merge_masks): entries written
# by an older version then miss and are rebuilt.
CACHE_VERSION = 2


def _fingerprint(item: Item) -> str:
    """Hash of the cache format version and each file's name, size, modification and change time (ns).

    The change time (ctime) moves on every write and cannot be set back, so an edit that keeps a file's size
    and restores its modification time still changes the fingerprint.
    """
    h = hashlib.sha1(f"v{CACHE_VERSION};".encode())
    for p in (item.image, *(item.masks or ()), *((item.labels,) if item.labels else ())):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns};".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Folder of the decoded-array cache: $NUCLEISEG_CACHE, else $XDG_CACHE_HOME/nucleiseg, else ~/.cache."""
    env = os.environ.get("NUCLEISEG_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nucleiseg"


def load_item_cached(item: Item, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``load_item`` through an on-disk cache keyed by ``CACHE_VERSION`` and the files' names, sizes and
    times; a hit returns the same dtypes as a miss (labels int32)."""
    from .atomic import atomic_path

    cache = cache_dir() if cache is None else cache
    key = hashlib.sha1(str(item.image.resolve()).encode()).hexdigest()[:12]
    path = cache / f"{item.image_id[:40]}-{key}-{_fingerprint(item)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return z["image"], (z["labels"].astype(np.int32) if "labels" in z else None)
        except Exception:  # a damaged cache entry is rebuilt
            path.unlink(missing_ok=True)
    image, labels = load_item(item)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob(f"{item.image_id[:40]}-{key}-*.npz"):
            stale.unlink(missing_ok=True)
        arrays = {"image": image}
        if labels is not None:  # stored compactly, returned as int32
            arrays["labels"] = labels.astype(np.uint16) if labels.max(initial=0) < 65536 else labels
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)
    except OSError as exc:  # the cache is an optimisation: never fail because of it
        log.debug("cache write failed: %s", exc)
    return image, labels


def image_kind(image: np.ndarray) -> str:
    """Classify an (H, W, 3) image as fluorescence (grey, dark background), brightfield (grey, light
    background) or histology (coloured stain)."""
    img = image.astype(np.float32)
    img = img / max(float(img.max()), 1e-6)
    spread = float(np.mean(img.max(axis=-1) - img.min(axis=-1)))
    if spread > 0.04:
        return "histology"
    return "fluorescence" if float(np.median(img)) < 0.5 else "brightfield"


SPLITS = Path(__file__).parent / "splits"


def split_file(name: str = "dsb2018") -> Path:
    """The committed validation list of dataset ``name``: ``splits/<name>_val.txt``."""
    return SPLITS / f"{name}_val.txt"


def read_split(path: Path | None = None) -> list[str]:
    path = split_file() if path is None else path
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def committed_split(items: list[Item]) -> tuple[str, set[str]] | None:
    """(dataset name, validation ids) of the committed list that covers these items, if one does: a list
    counts when at least 10 % of the items are on it (a subset or an edition of the dataset still matches)."""
    ids = {it.image_id for it in items}
    for path in sorted(SPLITS.glob("*_val.txt")):
        val_ids = set(read_split(path)) & ids
        if val_ids and len(val_ids) >= 0.1 * len(ids):
            return path.name[: -len("_val.txt")], val_ids
    return None


def dataset_name(root: Path, items: list[Item]) -> str:
    """The name a dataset goes by in logs, history and config: its committed split's, else its folder's."""
    found = committed_split(items)
    return found[0] if found else Path(root).resolve().name


def train_val_split(items: list[Item], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Split items: by a committed validation list when one covers these ids, else at random."""
    found = committed_split(items)
    if found is not None:
        val_ids = found[1]
        return [it for it in items if it.image_id not in val_ids], [it for it in items if it.image_id in val_ids]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    n_val = max(1, round(val_fraction * len(items)))
    if n_val >= len(items):
        raise NucleisegError(f"need at least 2 images to split into train and validation, got {len(items)}")
    val_idx = set(order[:n_val].tolist())
    return ([it for i, it in enumerate(items) if i not in val_idx], [it for i, it in enumerate(items) if i in val_idx])


def content_fingerprint(items: list[Item]) -> str:
    """SHA-256 over every file of the dataset (names and bytes, in order): changes when any file changes."""
    h = hashlib.sha256()
    for item in items:
        for p in (item.image, *(item.masks or ()), *((item.labels,) if item.labels else ())):
            h.update(p.name.encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class DatasetSpec:
    """A training folder and its sampling weight, parsed from ``DIR`` or ``DIR:WEIGHT``."""

    path: Path
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> "DatasetSpec":
        text = str(text)
        head, sep, tail = text.rpartition(":")
        if sep and head and not Path(text).exists():
            try:
                weight = float(tail)
            except ValueError:
                raise NucleisegError(f"{text}: expected DIR or DIR:WEIGHT with a number as weight") from None
            if not weight > 0:
                raise NucleisegError(f"{text}: the sampling weight must be > 0")
            return cls(Path(head), weight)
        return cls(Path(text))


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter (of a disc of the same area) of the nuclei in a label image; 0 if none."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4.0 * np.median(areas) / np.pi)) if len(areas) else 0.0
