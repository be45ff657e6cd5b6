"""Tests for nucleiseg.fetch against a tiny local BBBC038 look-alike served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import logging
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import run_cli
from PIL import Image

from nucleiseg import fetch
from nucleiseg.errors import NucleisegError
from nucleiseg.fetch import fetch_dsb2018

# ----------------------------------------------------------------------------- tiny data set

TRAIN_SHAPE = (16, 16)
TEST_SHAPE = (12, 16)  # not square, so a height/width swap would show


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _masks(shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Two non-overlapping, asymmetric nuclei."""
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[1 + seed:4 + seed, 2:7] = True
    b[6:10, 9 + seed:14] = True
    b[6, 9 + seed] = False
    return [a, b]


def _rle(mask: np.ndarray) -> str:
    """Kaggle RLE: 1-indexed start/length pairs over the column-major pixel order."""
    flat = np.concatenate([[0], mask.T.ravel().astype(np.int8), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


def _image(shape: tuple[int, int], masks: list[np.ndarray]) -> np.ndarray:
    img = np.full(shape + (3,), 20, np.uint8)
    for m in masks:
        img[m] = 200
    return img


@dataclass
class Data:
    folder: Path
    train_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    test1_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    test2_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    scored2: set[str] = field(default_factory=set)

    def manifest(self) -> dict[str, tuple[int, str]]:
        return {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in self.folder.iterdir()}


def _make_data(folder: Path) -> Data:
    folder.mkdir(parents=True)
    data = Data(folder)
    with zipfile.ZipFile(folder / "stage1_train.zip", "w") as zf:
        for k in range(2):
            iid = f"train{k}"
            masks = _masks(TRAIN_SHAPE, k)
            data.train_masks[iid] = masks
            zf.writestr(f"{iid}/images/{iid}.png", _png(_image(TRAIN_SHAPE, masks)))
            for j, m in enumerate(masks):
                zf.writestr(f"{iid}/masks/m{j}.png", _png(m.astype(np.uint8) * 255))

    def test_zip(name: str, prefix: str, n: int, store: dict) -> None:
        with zipfile.ZipFile(folder / name, "w") as zf:
            for k in range(n):
                iid = f"{prefix}{k}"
                masks = _masks(TEST_SHAPE, k % 2)
                store[iid] = masks
                zf.writestr(f"{iid}/images/{iid}.png", _png(_image(TEST_SHAPE, masks)))

    test_zip("stage1_test.zip", "test", 2, data.test1_masks)
    rows = ["ImageId,EncodedPixels,Height,Width,Usage"]
    for iid, masks in data.test1_masks.items():
        rows += [f"{iid},{_rle(m)},{TEST_SHAPE[0]},{TEST_SHAPE[1]},Public" for m in masks]
    (folder / "stage1_solution.csv").write_text("\n".join(rows) + "\n")

    # stage 2: no Height/Width columns (shape read from the image); one decoy is Ignored
    test_zip("stage2_test_final.zip", "final", 3, data.test2_masks)
    rows = ["ImageId,EncodedPixels,Usage"]
    usage = {"final0": "Private", "final1": "Ignored", "final2": "Public"}
    for iid, masks in data.test2_masks.items():
        rows += [f"{iid},{_rle(m)},{usage[iid]}" for m in masks]
    (folder / "stage2_solution_final.csv").write_text("\n".join(rows) + "\n")
    data.scored2 = {"final0", "final2"}
    return data


# ----------------------------------------------------------------------------- HTTP server


class _State:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (file name, Range header)
        self.cut: dict[str, int] = {}  # file name -> bytes to send before dropping, once
        self.honour_range = True
        self.send_length = True  # False: no Content-Length (the body ends when the connection closes)
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((name, rng))
                cut = state.cut.pop(name, None)
            path = state.root / name
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            if rng and state.honour_range:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if state.send_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@dataclass
class Server:
    url: str
    state: _State
    data: Data


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "RETRY_DELAY_S", 0.0)
    monkeypatch.setattr(fetch, "TIMEOUT_S", 5.0)


@pytest.fixture
def data(tmp_path: Path) -> Data:
    return _make_data(tmp_path / "published")


@pytest.fixture
def server(data: Data) -> Iterator[Server]:
    state = _State(data.folder)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/bbbc/BBBC038/", state, data)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------- checks


def _check_labels(labels: np.ndarray, masks: list[np.ndarray]) -> None:
    assert labels.dtype == np.uint16
    assert labels.shape == masks[0].shape
    union = np.zeros(labels.shape, bool)
    values = set()
    for m in masks:
        vals = np.unique(labels[m])
        assert len(vals) == 1 and vals[0] != 0
        values.add(int(vals[0]))
        union |= m
    assert len(values) == len(masks)
    assert not labels[~union].any()


def _check_layout(dest: Path, data: Data) -> None:
    for iid, masks in data.train_masks.items():
        assert (dest / "stage1_train" / iid / "images" / f"{iid}.png").is_file()
        assert len(list((dest / "stage1_train" / iid / "masks").glob("*.png"))) == len(masks)
    for iid, masks in data.test1_masks.items():
        assert (dest / "stage1_test" / iid / "images" / f"{iid}.png").is_file()
        _check_labels(tifffile.imread(dest / "stage1_test_labels" / f"{iid}.tif"), masks)
    for iid, masks in data.test2_masks.items():
        assert (dest / "stage2_test_final" / iid / "images" / f"{iid}.png").is_file()
        label_file = dest / "stage2_test_final_labels" / f"{iid}.tif"
        if iid in data.scored2:
            _check_labels(tifffile.imread(label_file), masks)
        else:
            assert not label_file.exists()
    for d in ("stage1_train", "stage1_test", "stage2_test_final"):
        assert (dest / d / ".complete").is_file()


# ----------------------------------------------------------------------------- tests


def test_full_fetch_layout_labels_and_idempotent(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    out = fetch_dsb2018(dest, server.url, files=server.data.manifest())
    assert out == dest
    _check_layout(dest, server.data)
    # train masks decode to the same nuclei as the published mask PNGs
    m0 = np.asarray(Image.open(dest / "stage1_train/train0/masks/m0.png")) > 0
    assert np.array_equal(m0, server.data.train_masks["train0"][0])
    assert not list((dest / "downloads").glob("*.part"))
    assert len(server.state.requests) == 5

    fetch_dsb2018(dest, server.url, files=server.data.manifest())
    assert len(server.state.requests) == 5  # nothing fetched again


def test_resume_existing_part_with_range(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    blob = (server.data.folder / name).read_bytes()
    (dest / "downloads").mkdir(parents=True)
    half = len(blob) // 2
    (dest / "downloads" / f"{name}.part").write_bytes(blob[:half])
    fetch_dsb2018(dest, server.url, parts=["stage1_train"], files=server.data.manifest())
    assert server.state.requests == [(name, f"bytes={half}-")]
    assert (dest / "downloads" / name).read_bytes() == blob
    assert (dest / "stage1_train" / ".complete").exists()


def test_resume_after_dropped_connection(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    server.state.cut[name] = 100
    sizes_unknown = {n: (None, None) for n in fetch.FILES}  # completeness from Content-Length
    fetch_dsb2018(dest, server.url, parts=["stage1_train"], files=sizes_unknown)
    assert server.state.requests == [(name, None), (name, "bytes=100-")]
    assert (dest / "downloads" / name).read_bytes() == (server.data.folder / name).read_bytes()


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    server.state.honour_range = False
    (dest / "downloads").mkdir(parents=True)
    (dest / "downloads" / f"{name}.part").write_bytes(b"garbage")
    fetch_dsb2018(dest, server.url, parts=["stage1_train"], files=server.data.manifest())
    assert server.state.requests == [(name, "bytes=7-")]
    assert (dest / "downloads" / name).read_bytes() == (server.data.folder / name).read_bytes()


@pytest.mark.parametrize("what", ["size", "sha256"])
def test_verification_failure_removes_file(server: Server, tmp_path: Path, what: str) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    size, digest = server.data.manifest()[name]
    bad = (size + 1, digest) if what == "size" else (size, "0" * 64)
    with pytest.raises(NucleisegError, match=rf"{name}.*{what} mismatch"):
        fetch_dsb2018(dest, server.url, parts=["stage1_train"], files={name: bad})
    assert not (dest / "downloads" / name).exists()
    assert not (dest / "downloads" / f"{name}.part").exists()
    assert not (dest / "stage1_train" / ".complete").exists()


def test_unknown_sha256_is_logged(server: Server, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    name = "stage1_train.zip"
    size, digest = server.data.manifest()[name]
    with caplog.at_level(logging.INFO, logger="nucleiseg.fetch"):
        fetch_dsb2018(tmp_path / "dsb", server.url, parts=["stage1_train"],
                      files={name: (size, None)})
    assert digest in caplog.text


def test_unreachable_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bbbc/"
    with pytest.raises(NucleisegError, match=rf"cannot download {url}stage1_train.zip"):
        fetch_dsb2018(tmp_path / "dsb", url, parts=["stage1_train"])


def test_http_404(server: Server, tmp_path: Path) -> None:
    (server.data.folder / "stage1_test.zip").unlink()
    with pytest.raises(NucleisegError, match=r"stage1_test.zip: HTTP 404"):
        fetch_dsb2018(tmp_path / "dsb", server.url, parts=["stage1_test"])


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_folder_offline(data: Data, tmp_path: Path, as_uri: bool) -> None:
    dest = tmp_path / "dsb"
    base = data.folder.as_uri() if as_uri else str(data.folder)
    fetch_dsb2018(dest, base, files=data.manifest())
    _check_layout(dest, data)
    assert (data.folder / "stage1_train.zip").exists()  # source left alone


def test_local_folder_missing_file(data: Data, tmp_path: Path) -> None:
    (data.folder / "stage1_solution.csv").unlink()
    with pytest.raises(NucleisegError, match="stage1_solution.csv: not found"):
        fetch_dsb2018(tmp_path / "dsb", str(data.folder), parts=["stage1_test"])


@pytest.mark.parametrize("entry", ["../evil.txt", "train0/../../evil.txt", "/tmp/evil.txt"])
def test_unsafe_zip_entry_rejected(tmp_path: Path, entry: str) -> None:
    src = tmp_path / "published"
    src.mkdir()
    with zipfile.ZipFile(src / "stage1_train.zip", "w") as zf:
        zf.writestr("ok0/images/ok0.png", _png(np.zeros((4, 4), np.uint8)))
        zf.writestr(entry, b"pwned")
    dest = tmp_path / "a" / "dsb"
    with pytest.raises(NucleisegError, match="unsafe entry"):
        fetch_dsb2018(dest, str(src), parts=["stage1_train"])
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (dest / "stage1_train" / ".complete").exists()


def test_unknown_part(tmp_path: Path) -> None:
    with pytest.raises(NucleisegError, match="unknown DSB2018 part"):
        fetch_dsb2018(tmp_path, str(tmp_path), parts=["stage3"])


def test_complete_part_with_unknown_size_accepts_416(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    blob = (server.data.folder / name).read_bytes()
    (dest / "downloads").mkdir(parents=True)
    (dest / "downloads" / f"{name}.part").write_bytes(blob)
    fetch_dsb2018(dest, server.url, parts=["stage1_train"], files={name: (None, None)})
    assert server.state.requests == [(name, f"bytes={len(blob)}-")]
    assert (dest / "downloads" / name).read_bytes() == blob


def test_cli_fetch_then_evaluate_scores_the_decoded_solution(server: Server, tmp_path: Path) -> None:
    """`nucleiseg fetch` through the CLI, then the decoded stage-1 test labels score 1.0 against themselves."""
    dest = tmp_path / "dsb"
    fetch_dsb2018(dest, server.url, files=server.data.manifest())  # warm: the CLI call below must be a no-op
    proc = run_cli("fetch", "dsb2018", "--dest", dest, "--base-url", server.url, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DSB2018 data in" in proc.stdout
    labels = dest / "stage1_test_labels"
    truth = tmp_path / "truth"
    (truth / "images").mkdir(parents=True)
    (truth / "labels").mkdir()
    for tif in labels.glob("*.tif"):
        (truth / "labels" / tif.name).symlink_to(tif)
        (truth / "images" / f"{tif.stem}.png").symlink_to(dest / "stage1_test" / tif.stem / "images" / f"{tif.stem}.png")
    from nucleiseg.evaluate import evaluate

    summary = evaluate(labels, truth, out_dir=tmp_path / "scores", quiet=True)
    assert summary["overall"]["dsb"] == 1.0 and summary["overall"]["n_images"] == len(list(labels.glob("*.tif")))


def test_download_without_length_is_refused_unless_no_verify(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dsb"
    name = "stage1_train.zip"
    server.state.send_length = False
    with pytest.raises(NucleisegError, match=rf"{name}: the server sends no Content-Length.*--no-verify"):
        fetch_dsb2018(dest, server.url, parts=["stage1_train"])
    assert not (dest / "downloads" / name).exists()
    assert not (dest / "downloads" / f"{name}.part").exists()  # refused before any byte was written
    fetch_dsb2018(dest, server.url, parts=["stage1_train"], verify=False)
    assert (dest / "downloads" / name).read_bytes() == (server.data.folder / name).read_bytes()


def test_recorded_size_makes_content_length_unnecessary(server: Server, tmp_path: Path) -> None:
    name = "stage1_train.zip"
    server.state.send_length = False
    size, _ = server.data.manifest()[name]
    fetch_dsb2018(tmp_path / "dsb", server.url, parts=["stage1_train"], files={name: (size, None)})
    assert (tmp_path / "dsb" / "stage1_train" / ".complete").exists()


def test_cli_fetches_only_the_parts_asked_for(server: Server, tmp_path: Path) -> None:
    """A mirror holding only the stage 1 test files: --parts stage1_test fetches just those."""
    for name in ("stage1_train.zip", "stage2_test_final.zip", "stage2_solution_final.csv"):
        (server.data.folder / name).unlink()
    dest = tmp_path / "dsb"
    proc = run_cli("fetch", "dsb2018", "--dest", dest, "--base-url", server.url, "--parts", "stage1_test")
    assert proc.returncode == 0, proc.stderr
    assert sorted(name for name, _ in server.state.requests) == ["stage1_solution.csv", "stage1_test.zip"]
    assert (dest / "stage1_test" / ".complete").exists() and not (dest / "stage1_train").exists()
    assert "sha256" in proc.stderr  # the computed digests are logged, to be recorded later
    proc = run_cli("fetch", "dsb2018", "--dest", dest, "--base-url", server.url, "--parts", "stage1_test,stage3")
    assert proc.returncode == 1 and "unknown DSB2018 part(s) stage3" in proc.stderr and "Traceback" not in proc.stderr
