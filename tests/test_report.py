"""Tests for nucleiseg.report (static HTML evaluation report) on tiny synthetic disc images."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucleiseg.data import KINDS
from nucleiseg.metrics import score_image, summarize
from nucleiseg.report import comparison_png, error_masks, write_report

N = 48
YY, XX = np.mgrid[:N, :N]
R = 7
# (cy, cx) of the three true nuclei; the first is the one a prediction misses, FP_AT is a false positive.
CENTRES = [(12, 12), (12, 34), (34, 12)]
FP_AT = (35, 35)


def disc(cy: int, cx: int, r: int = R) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def case(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image i: truth has three discs. Images 0 and 1 are predicted perfectly; the others miss the first
    disc, and odd ones also predict a false positive, with the kept discs shifted by a varying amount."""
    truth = np.zeros((N, N), np.int32)
    for k, (cy, cx) in enumerate(CENTRES):
        truth[disc(cy, cx)] = 10 * (k + 1)  # non-consecutive ids
    image = np.full((N, N, 3), 20, np.uint8)
    image[truth > 0] = 200
    if i < 2:
        return image, truth, truth.copy()
    pred = np.zeros((N, N), np.int32)
    shift = i % 4
    for k, (cy, cx) in enumerate(CENTRES[1:], start=1):
        pred[disc(cy, cx + shift)] = 7 * k
    if i % 2:
        pred[disc(*FP_AT, r=5) & (pred == 0)] = 99
    return image, truth, pred


def make(n: int, ids: list[str] | None = None):
    ids = ids or [f"img{i:02d}" for i in range(n)]
    data = {image_id: case(i) for i, image_id in enumerate(ids)}
    rows = []
    for i, image_id in enumerate(ids):
        _, truth, pred = data[image_id]
        row = score_image(truth, pred)
        row.update(image_id=image_id, kind=KINDS[i % len(KINDS)])
        rows.append(row)
    summary = {"overall": summarize(rows)}
    for kind in KINDS:
        subset = [r for r in rows if r["kind"] == kind]
        if subset:
            summary[kind] = summarize(subset)
    return rows, summary, data.__getitem__


def links(html_text: str) -> list[str]:
    return [urllib.parse.unquote(m) for m in re.findall(r'(?:src|href)="([^"]+)"', html_text)]


def worst_pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("worst_*.png"))


@pytest.fixture
def report14(tmp_path):
    rows, summary, load = make(14)
    index = write_report(tmp_path, rows, summary, load)
    return tmp_path, index, rows


def test_index_and_links_exist(report14):
    folder, index, _ = report14
    assert index == folder / "index.html" and index.is_file()
    text = index.read_text()
    refs = links(text)
    assert refs, "report links nothing"
    for ref in refs:
        assert "://" not in ref and not ref.startswith("/"), ref
        assert (folder / ref).is_file(), ref
    assert "<script" not in text.lower()
    assert "14 images" in text


def test_precision_plot_is_svg(report14):
    import xml.etree.ElementTree as ET

    folder, index, _ = report14
    root = ET.parse(folder / "precision.svg").getroot()  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and int(root.get("width")) > 100 and int(root.get("height")) > 100
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 1 + len(KINDS)  # overall and each kind present in the 14 images
    assert all(len(pl.get("points").split()) == 10 for pl in lines)  # one point per IoU threshold
    assert lines[-1].get("stroke") == "black"  # overall drawn last, on top
    legend = " ".join(t.text or "" for t in root.iter(f"{ns}text"))
    assert "overall (n=14, DSB" in legend and "IoU threshold" in legend
    assert 'src="precision.svg"' in index.read_text()
    assert not (folder / "precision_iou.png").exists()


def test_twelve_worst_are_lowest_dsb(report14):
    folder, index, rows = report14
    pngs = worst_pngs(folder)
    assert len(pngs) == 12
    text = index.read_text()
    shown = {p.name for p in pngs}
    assert {r for r in links(text) if r.startswith("worst_")} == shown
    expected = {r["image_id"] for r in sorted(rows, key=lambda r: r["dsb"])[:12]}
    assert {"img00", "img01"}.isdisjoint(expected)  # the two perfect images are not among the worst
    assert {re.match(r"worst_\d+_(.*)\.png", n).group(1) for n in shown} == expected
    # ranked lowest DSB first
    ranked = [re.match(r"worst_\d+_(.*)\.png", p.name).group(1) for p in pngs]
    dsb = {r["image_id"]: r["dsb"] for r in rows}
    assert [dsb[i] for i in ranked] == sorted(dsb[i] for i in ranked)
    for p in pngs:
        with Image.open(p) as im:
            assert im.width <= 1024


def test_missed_nucleus_is_red_false_positive_magenta(report14):
    folder, _, rows = report14
    png = next(p for p in worst_pngs(folder) if p.name.endswith("_img03.png"))  # misses disc 0, has an FP
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    panel = (rgb.shape[1] - 8) // 2
    s = panel / N
    cy, cx = CENTRES[0]
    r, g, b = rgb[int((cy + 0.5) * s), int((cx + 0.5) * s)]
    assert r > 150 and r > g + 60 and r > b + 60, (r, g, b)
    fy, fx = FP_AT
    r, g, b = rgb[int((fy + 0.5) * s), panel + 8 + int((fx + 0.5) * s)]
    assert r > 100 and b > 100 and g < r - 60 and abs(r - b) < 30, (r, g, b)  # on dark background
    # a matched nucleus is not filled red on the truth side
    cy, cx = CENTRES[1]
    r, g, b = rgb[int((cy + 0.5) * s), int((cx + 0.5) * s)]
    assert abs(r - g) < 30, (r, g, b)


def test_error_masks_use_label_ids():
    truth = np.zeros((N, N), np.int32)
    truth[disc(10, 10)] = 5
    truth[disc(30, 30)] = 9
    pred = np.zeros((N, N), np.int32)
    pred[disc(30, 30)] = 100  # matches truth 9
    pred[disc(10, 38)] = 3  # false positive
    missed, fp = error_masks(truth, pred)
    assert np.array_equal(missed, truth == 5)
    assert np.array_equal(fp, pred == 3)
    missed, fp = error_masks(np.zeros((N, N), np.int32), np.zeros((N, N), np.int32))
    assert not missed.any() and not fp.any()


def test_large_image_is_downscaled():
    truth = np.zeros((300, 1500), np.int32)
    truth[100:150, 100:150] = 1
    image = np.random.default_rng(0).integers(0, 4000, (300, 1500, 3)).astype(np.uint16)
    out = comparison_png(image, truth, np.zeros_like(truth))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1] <= 1024


def test_few_images_escaping_and_stale_pictures(tmp_path):
    rows, summary, load = make(14)
    write_report(tmp_path, rows, summary, load)
    odd = ['a<b>&"c', "img 1", "x/../y"]
    rows, summary, load = make(3, odd)
    text = write_report(tmp_path, rows, summary, load).read_text()
    assert len(worst_pngs(tmp_path)) == 3  # pictures of the earlier report are gone
    assert 'a<b>&"c' not in text and "a&lt;b&gt;&amp;&quot;c" in text
    for ref in links(text):
        assert (tmp_path / ref).is_file() and (tmp_path / ref).parent == tmp_path, ref
    assert "3 images" in text
