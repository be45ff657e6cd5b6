"""Download and unpack the 2018 Data Science Bowl nuclei data (BBBC038) into the DSB layout.

Layout produced under ``dest``::

    downloads/<file>                              archives and solution CSVs (size checked, see below)
    stage1_train/<ImageId>/images/<ImageId>.png   + masks/*.png (one nucleus per mask)
    stage1_test/<ImageId>/images/<ImageId>.png
    stage1_test_labels/<ImageId>.tif              uint16 labels decoded from stage1_solution.csv
    stage2_test_final/<ImageId>/images/<ImageId>.png
    stage2_test_final_labels/<ImageId>.tif        only the scored stage 2 images

``<images dir>/.complete`` marks a finished part; a later call skips it.

What is checked: each download's size against the size recorded in :data:`FILES` when there is one (none is
recorded yet), else against the Content-Length the server sends; a download whose length cannot be checked
(no recorded size and no Content-Length) is refused unless ``verify=False`` (``--no-verify``). The SHA-256 of
every file is computed and logged, and compared with :data:`FILES` once one is recorded there. Files copied
from a local folder are checked only against what :data:`FILES` records.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import logging
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import tifffile
from tqdm import tqdm

from nucleiseg.atomic import atomic_path, write_text_atomic
from nucleiseg.errors import NucleisegError
from nucleiseg.rle import read_solution, rle_to_labels

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.broadinstitute.org/bbbc/BBBC038/"

# name -> (announced size in bytes, sha256); None = not known yet.
# The BBBC038 page and the Kaggle data page announce only rounded sizes (MB), not byte counts,
# and no checksums; an exact value cannot be justified from them, so all are None for now.
# When a value is None the download is still checked against the server's Content-Length, and
# the computed sha256 and size are logged at INFO so they can be recorded here.
FILES: dict[str, tuple[int | None, str | None]] = {
    "stage1_train.zip": (None, None),
    "stage1_test.zip": (None, None),
    "stage1_solution.csv": (None, None),
    "stage2_test_final.zip": (None, None),
    "stage2_solution_final.csv": (None, None),
}

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
MAX_ATTEMPTS = 5
RETRY_DELAY_S = 2.0
_USER_AGENT = "nucleiseg-fetch (python urllib)"


@dataclass(frozen=True)
class _Part:
    archive: str
    solution: str | None
    images_dir: str
    labels_dir: str | None
    scored_only: bool  # keep only solution rows whose Usage is non-empty and not "Ignored"


PARTS: dict[str, _Part] = {
    "stage1_train": _Part("stage1_train.zip", None, "stage1_train", None, False),
    "stage1_test": _Part("stage1_test.zip", "stage1_solution.csv", "stage1_test",
                         "stage1_test_labels", False),
    "stage2_test": _Part("stage2_test_final.zip", "stage2_solution_final.csv", "stage2_test_final",
                         "stage2_test_final_labels", True),
}

MARKER = ".complete"


def fetch_dsb2018(
    dest: str | Path,
    base_url: str = DEFAULT_BASE_URL,
    parts: Iterable[str] = ("stage1_train", "stage1_test", "stage2_test"),
    files: Mapping[str, tuple[int | None, str | None]] | None = None,
    verify: bool = True,
) -> Path:
    """Download, check (see the module docstring) and unpack DSB2018 (BBBC038) parts into ``dest``; return
    ``dest``.

    ``base_url`` is an http(s) URL of a folder holding the published files, or a local folder
    path / ``file://`` URL with already-downloaded copies (offline use). ``parts`` picks among
    ``stage1_train``, ``stage1_test`` and ``stage2_test``. ``files`` overrides entries of
    :data:`FILES` (name -> (size in bytes or None, sha256 or None)). Interrupted downloads resume
    from ``dest/downloads/<name>.part``; finished parts (marker ``.complete``) are skipped. ``verify=False``
    accepts a download whose length cannot be checked.
    Raises :class:`NucleisegError` on network errors, failed checks and unsafe archives.
    """
    dest = Path(dest)
    parts = list(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise NucleisegError(f"unknown DSB2018 part(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(PARTS)}")
    table = dict(FILES)
    table.update(files or {})
    source = _Source(base_url)
    dest.mkdir(parents=True, exist_ok=True)

    summary: list[str] = []
    for name in parts:
        part = PARTS[name]
        images_root = dest / part.images_dir
        if (images_root / MARKER).exists():
            log.info("%s: already complete in %s, skipping", name, images_root)
            summary.append(f"{name}: already present")
            continue
        archive = _obtain(source, part.archive, dest / "downloads", table, verify)
        solution = (_obtain(source, part.solution, dest / "downloads", table, verify)
                    if part.solution else None)
        n_images = _unpack(archive, images_root)
        text = f"{name}: {n_images} images in {images_root}"
        if solution is not None and part.labels_dir is not None:
            n_labels = _write_labels(solution, images_root, dest / part.labels_dir,
                                     part.scored_only)
            text += f", {n_labels} label images in {dest / part.labels_dir}"
        write_text_atomic(images_root / MARKER, text + "\n")
        summary.append(text)
    log.info("DSB2018 in %s: %s", dest, "; ".join(summary))
    return dest


# --------------------------------------------------------------------------- sources


class _Source:
    """Where the published files come from: an http(s) folder URL or a local folder."""

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlparse(base_url)
        self.folder: Path | None = None
        self.base_url = base_url
        if parsed.scheme in ("http", "https"):
            self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        elif parsed.scheme == "file":
            self.folder = Path(urllib.request.url2pathname(parsed.path))
        elif parsed.scheme == "" or len(parsed.scheme) == 1:  # plain path (or C:\ drive)
            self.folder = Path(base_url).expanduser()
        else:
            raise NucleisegError(f"unsupported base URL {base_url!r}: use http(s)://, file:// "
                                 "or a local folder")
        if self.folder is not None and not self.folder.is_dir():
            raise NucleisegError(f"{self.folder}: not a folder (base URL for offline files)")

    def url(self, name: str) -> str:
        return urllib.parse.urljoin(self.base_url, urllib.parse.quote(name))


def _obtain(source: _Source, name: str, downloads: Path,
            table: Mapping[str, tuple[int | None, str | None]], verify: bool = True) -> Path:
    """Return ``downloads/name``, downloading or copying and checking it first if missing."""
    size, sha256 = table.get(name, (None, None))
    final = downloads / name
    if final.exists():
        if size is None or final.stat().st_size == size:
            return final
        log.warning("%s: has %d bytes, expected %d; fetching again",
                    final, final.stat().st_size, size)
        final.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / (name + ".part")
    if source.folder is not None:
        _copy_local(source.folder / name, part)
    else:
        _download(source.url(name), part, size, verify)
    _verify(part, name, size, sha256)
    part.replace(final)
    return final


def _copy_local(src: Path, part: Path) -> None:
    if not src.is_file():
        raise NucleisegError(f"{src}: not found in the offline folder")
    with src.open("rb") as fin, part.open("wb") as fout, _bar(src.name, src.stat().st_size) as bar:
        while chunk := fin.read(CHUNK_BYTES):
            fout.write(chunk)
            bar.update(len(chunk))


def _bar(name: str, total: int | None, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, disable=None, leave=False)


def _download(url: str, part: Path, size: int | None, verify: bool = True) -> None:
    """Download ``url`` into ``part``, resuming an existing partial file with a Range request; its length is
    checked against ``size`` or else the server's Content-Length (with ``verify``, one of them is required)."""
    total: int | None = size
    for attempt in range(1, MAX_ATTEMPTS + 1):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.warning("%s: larger than the announced %d bytes; starting again", part, size)
            part.unlink()
            offset = 0
        if size is not None and offset == size:
            return
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                # Range not satisfiable: the partial file may already be whole.
                complete = _content_range_total(exc.headers.get("Content-Range"))
                exc.close()
                if complete == offset:
                    return
                log.warning("%s: server refused to resume; starting again", url)
                part.unlink()
                continue
            exc.close()
            raise NucleisegError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise NucleisegError(f"cannot download {url}: {reason}") from None

        with response:
            mode = "wb"
            if offset and response.status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start == offset:
                    mode = "ab"
                else:
                    log.warning("%s: server resumed at %s instead of %d; starting again",
                                url, start, offset)
            if mode == "wb":
                if offset:
                    log.info("%s: server does not resume (HTTP %d); starting from zero",
                             url, response.status)
                offset = 0
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                total = offset + int(length)
            elif total is None and verify:
                raise NucleisegError(f"{url}: the server sends no Content-Length and no size is recorded for "
                                     "this file, so the download cannot be checked; use --no-verify to accept it")
            error: Exception | None = None
            with part.open(mode) as out, _bar(part.name[: -len(".part")], total, offset) as bar:
                try:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as exc:
                    error = exc
        got = part.stat().st_size
        if error is None and total is not None and got > total:
            part.unlink()
            raise NucleisegError(f"{url}: received {got} bytes, more than the {total} announced; removed the "
                                 "file, run again to download it afresh")
        if error is None and (total is None or got == total):
            return
        why = f": {error}" if error is not None else ""
        log.warning("%s: stopped at %d of %s bytes%s; resuming (attempt %d of %d)",
                    url, got, total if total is not None else "?", why, attempt + 1, MAX_ATTEMPTS)
        time.sleep(RETRY_DELAY_S * attempt)
    got = part.stat().st_size if part.exists() else 0
    raise NucleisegError(f"cannot download {url}: connection kept dropping ({got} of "
                         f"{total if total is not None else '?'} bytes); run again to resume")


def _content_range_start(value: str | None) -> int | None:
    """Start offset of a ``Content-Range: bytes start-end/total`` header."""
    try:
        return int(value.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    """Total size of a ``Content-Range: bytes .../total`` header."""
    try:
        return int(value.rsplit("/", 1)[1])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, name: str, size: int | None, sha256: str | None) -> None:
    """Check size and sha256 (when known); remove the file and raise on a mismatch."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink()
        raise NucleisegError(f"{name}: size mismatch, got {actual_size} bytes, expected {size}; "
                             "removed the bad file, run again to download it afresh")
    digest = _sha256(path)
    if sha256 is None:
        log.info("%s: %d bytes, sha256 %s (not yet recorded in nucleiseg.fetch.FILES)",
                 name, actual_size, digest)
    elif digest != sha256.lower():
        path.unlink()
        raise NucleisegError(f"{name}: sha256 mismatch, got {digest}, expected {sha256.lower()}; "
                             "removed the bad file, run again to download it afresh")


# --------------------------------------------------------------------------- unpacking


def _safe_members(zf: zipfile.ZipFile, archive: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry name; return (entry, relative path) for the files."""
    members = []
    for info in zf.infolist():
        name = info.filename
        rel = PurePosixPath(name.replace("\\", "/"))
        if (name.startswith(("/", "\\")) or rel.is_absolute() or ".." in rel.parts
                or (rel.parts and ":" in rel.parts[0])):
            raise NucleisegError(f"{archive}: unsafe entry {name!r} (absolute path or '..'); "
                                 "refusing to unpack")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise NucleisegError(f"{archive}: unsafe entry {name!r} (symbolic link); "
                                 "refusing to unpack")
        if not info.is_dir():
            members.append((info, rel))
    return members


def _unpack(archive: Path, root: Path) -> int:
    """Unpack ``archive`` (``<ImageId>/images/...`` at its root) into ``root``; count images."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _safe_members(zf, archive)
            # tolerate archives that wrap everything in one folder named like ``root``
            if members and all(rel.parts[0] == root.name and len(rel.parts) > 1
                               for _, rel in members):
                members = [(info, PurePosixPath(*rel.parts[1:])) for info, rel in members]
            root.mkdir(parents=True, exist_ok=True)
            resolved_root = root.resolve()
            for info, rel in tqdm(members, desc=f"unpack {archive.name}", unit="file",
                                  disable=None, leave=False):
                target = root.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(resolved_root):
                    raise NucleisegError(f"{archive}: unsafe entry {info.filename!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, target.open("wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        archive.unlink(missing_ok=True)
        raise NucleisegError(f"{archive}: not a valid zip file ({exc}); removed it, "
                             "run again to download it afresh") from None
    return sum(1 for _ in root.glob("*/images/*.png"))


def _scored_ids(solution: Path) -> set[str] | None:
    """ImageIds whose Usage is non-empty and not "Ignored"; None if there is no Usage column."""
    with solution.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "Usage" not in reader.fieldnames:
            return None
        return {row["ImageId"] for row in reader
                if (row.get("Usage") or "").strip() not in ("", "Ignored")}


def _image_shape(images_root: Path, image_id: str) -> tuple[int, int] | None:
    from PIL import Image

    path = images_root / image_id / "images" / f"{image_id}.png"
    if not path.exists():
        return None
    with Image.open(path) as im:
        width, height = im.size
    return height, width


def _write_labels(solution: Path, images_root: Path, labels_root: Path, scored_only: bool) -> int:
    """Decode the solution CSV into ``labels_root/<ImageId>.tif``; return how many were written."""
    table = read_solution(solution)
    ids = sorted(table)
    if scored_only:
        scored = _scored_ids(solution)
        if scored is None:
            log.warning("%s: no Usage column; writing labels for every image", solution.name)
        else:
            ids = [i for i in ids if i in scored]
            log.info("%s: %d of %d images are scored", solution.name, len(ids), len(table))
    labels_root.mkdir(parents=True, exist_ok=True)
    written = 0
    for image_id in tqdm(ids, desc=f"labels {solution.name}", unit="image", disable=None,
                         leave=False):
        rles, shape = table[image_id]
        if shape is None:
            shape = _image_shape(images_root, image_id)
            if shape is None:
                log.warning("%s: %s has no Height/Width and no image; skipped",
                            solution.name, image_id)
                continue
        rles = [r for r in rles if r and r.strip()]
        labels = rle_to_labels(rles, shape)  # uint16 (uint32 only past 65535 nuclei)
        with atomic_path(labels_root / f"{image_id}.tif") as tmp:
            tifffile.imwrite(tmp, labels)
        written += 1
    return written
