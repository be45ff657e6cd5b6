"""Kaggle DSB2018 run-length encoding and submission CSV files.

Pixels are numbered 1, 2, ... top to bottom, then left to right (column-major order), and a
mask is written as "start length start length ..." separated by single spaces.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable

import numpy as np

from nucleiseg.atomic import write_text_atomic
from nucleiseg.errors import InputError, NucleisegError

HEADER = ("ImageId", "EncodedPixels")


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise NucleisegError(f"image shape must be two integers (height, width), "
                             f"got {shape!r}") from None
    if h < 1 or w < 1:
        raise NucleisegError(f"image shape must be positive, got {(h, w)}")
    return h, w


def _runs_to_text(starts: np.ndarray, lengths: np.ndarray) -> str:
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as a Kaggle RLE string ("" when empty)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise NucleisegError(f"mask must be 2-D, got shape {mask.shape}")
    flat = np.concatenate([[False], mask.ravel(order="F") != 0, [False]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # 0-based run starts and ends (exclusive)
    starts, ends = edges[0::2], edges[1::2]
    return _runs_to_text(starts + 1, ends - starts)


def _parse_runs(rle: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse an RLE string into 0-based starts and lengths, checked against ``size`` pixels."""
    if not isinstance(rle, str):
        raise NucleisegError(f"RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if len(tokens) % 2:
        raise NucleisegError(f"malformed RLE: odd number of values ({len(tokens)}) in "
                             f"{rle[:60]!r}")
    ints = []
    for tok in tokens:
        try:
            ints.append(int(tok))
        except ValueError:
            raise NucleisegError(f"malformed RLE: {tok!r} is not an integer") from None
    try:
        values = np.array(ints, dtype=np.int64)
    except OverflowError:
        raise NucleisegError(f"malformed RLE: value out of range in {rle[:60]!r}") from None
    starts, lengths = values[0::2] - 1, values[1::2]
    if np.any(starts < 0):
        raise NucleisegError("malformed RLE: run starts must be >= 1")
    if np.any(lengths < 1):
        raise NucleisegError("malformed RLE: run lengths must be >= 1")
    if np.any(starts + lengths > size):
        i = int(np.argmax(starts + lengths > size))
        raise NucleisegError(f"malformed RLE: run {int(starts[i]) + 1} {int(lengths[i])} "
                             f"extends past the image ({size} pixels)")
    return starts, lengths


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into a boolean mask of ``shape`` (height, width).

    Overlapping or unsorted runs are accepted (their union is taken).
    """
    h, w = _check_shape(shape)
    starts, lengths = _parse_runs(rle, h * w)
    delta = np.zeros(h * w + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + lengths, -1)
    flat = np.cumsum(delta[:-1]) > 0
    return flat.reshape((h, w), order="F")


def labels_to_rle(labels: np.ndarray) -> list[str]:
    """One RLE string per nucleus, in ascending label order (empty list if no nuclei)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise NucleisegError(f"label image must be 2-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise NucleisegError(f"label image must have an integer dtype, got {labels.dtype}")
    flat = labels.ravel(order="F")
    pos = np.flatnonzero(flat)
    if pos.size == 0:
        return []
    lab = flat[pos]
    if lab.min() < 0:
        raise NucleisegError(f"label image has negative labels (min {lab.min()})")
    order = np.argsort(lab, kind="stable")
    lab, pos = lab[order], pos[order]
    new_run = np.ones(len(pos), dtype=bool)
    new_run[1:] = (lab[1:] != lab[:-1]) | (pos[1:] != pos[:-1] + 1)
    run_idx = np.flatnonzero(new_run)
    run_starts = pos[run_idx] + 1
    run_lengths = np.diff(np.append(run_idx, len(pos)))
    run_labels = lab[run_idx]
    bounds = np.flatnonzero(np.diff(run_labels)) + 1
    groups = np.split(np.arange(len(run_idx)), bounds)
    return [_runs_to_text(run_starts[g], run_lengths[g]) for g in groups]


def rle_to_labels(rles: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Label image with nucleus i+1 drawn from ``rles[i]``; later runs win where they overlap.

    dtype is uint16, or uint32 when there are more than 65535 nuclei.
    """
    h, w = _check_shape(shape)
    rles = list(rles)
    dtype = np.uint16 if len(rles) <= np.iinfo(np.uint16).max else np.uint32
    flat = np.zeros(h * w, dtype=dtype)
    for i, rle in enumerate(rles, start=1):
        starts, lengths = _parse_runs(rle, h * w)
        for s, n in zip(starts.tolist(), lengths.tolist()):
            flat[s:s + n] = i
    return flat.reshape((h, w), order="F")


def write_submission(path: str | os.PathLike[str],
                     rows: Iterable[tuple[str, list[str]]]) -> None:
    """Write a submission CSV (ImageId,EncodedPixels), one row per nucleus, atomically.

    An image without nuclei gets exactly one row with empty EncodedPixels.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for image_id, rles in rows:
        if not isinstance(image_id, str) or not image_id:
            raise NucleisegError(f"ImageId must be a non-empty string, got {image_id!r}")
        encoded = [r for r in rles if r]
        if not encoded:
            writer.writerow((image_id, ""))
        for rle in encoded:
            writer.writerow((image_id, rle))
    write_text_atomic(path, buf.getvalue())


def _read_rows(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [name.strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = fields
            if not all(name in fields for name in HEADER):
                raise InputError(path, f"not a submission CSV: header must contain "
                                       f"ImageId,EncodedPixels, got {','.join(fields)!r}")
            rows = []
            for row in reader:
                image_id = (row.get("ImageId") or "").strip()
                if not image_id:
                    raise InputError(path, f"line {reader.line_num}: missing ImageId")
                rows.append(row)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(path, f"malformed CSV: {e}") from None
    return fields, rows


def read_submission(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a submission or solution CSV: ImageId -> RLE strings (empty rows give [])."""
    return {k: v[0] for k, v in read_solution(path).items()}


def _size(path: object, row: dict[str, str], key: str) -> int | None:
    text = (row.get(key) or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(path, f"image {row['ImageId'].strip()}: {key} {text!r} "
                               "is not an integer") from None
    if value < 1:
        raise InputError(path, f"image {row['ImageId'].strip()}: {key} must be positive")
    return value


def read_solution(path: str | os.PathLike[str]
                  ) -> dict[str, tuple[list[str], tuple[int, int] | None]]:
    """Read a stage1_solution-style CSV: ImageId -> (RLE strings, (height, width) or None).

    The size comes from Height and Width columns when present; it is None otherwise.
    """
    fields, rows = _read_rows(path)
    has_size = "Height" in fields and "Width" in fields
    out: dict[str, tuple[list[str], tuple[int, int] | None]] = {}
    for row in rows:
        image_id = row["ImageId"].strip()
        rle = (row.get("EncodedPixels") or "").strip()
        size = None
        if has_size:
            h, w = _size(path, row, "Height"), _size(path, row, "Width")
            size = (h, w) if h is not None and w is not None else None
        rles, old = out.get(image_id, ([], None))
        if old is not None and size is not None and old != size:
            raise InputError(path, f"image {image_id}: inconsistent sizes {old} and {size}")
        if rle:
            rles.append(rle)
        out[image_id] = (rles, old if old is not None else size)
    return out
