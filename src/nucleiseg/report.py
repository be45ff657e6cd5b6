"""Static HTML evaluation report: score table, precision-versus-IoU plot and the worst-scored images.

Everything is written into one folder: ``index.html`` plus the SVG plot and PNG pictures it links to by
relative name, so the folder can be copied or zipped and opened anywhere (no external resources, no JavaScript).
"""

from __future__ import annotations

import datetime
import html
import logging
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .io import write_png
from .metrics import IOU_THRESHOLDS, iou_matrix
from .overlay import display_rgb, draw_comparison

log = logging.getLogger(__name__)

PLOT_NAME = "precision.svg"
INDEX_NAME = "index.html"
MAX_PNG_WIDTH = 1024
GAP = 8  # white pixels between the truth and prediction panels
TRUTH_COLOR = (0, 255, 0)  # as nucleiseg.overlay.draw_comparison
PRED_COLOR = (255, 255, 0)
MIN_PANEL = 240  # small images are enlarged (by a whole factor) to about this width
_WORST_RE = re.compile(r"^worst_\d+_[A-Za-z0-9_.-]*\.png$")
_KIND_COLORS = {"fluorescence": "#1f77b4", "brightfield": "#ff7f0e", "histology": "#2ca02c"}

Loader = Callable[[str], "tuple[np.ndarray, np.ndarray, np.ndarray]"]


def error_masks(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of missed true nuclei and false-positive predicted nuclei (no partner with IoU > 0.5)."""
    iou = iou_matrix(truth, pred)  # rows: sorted nonzero truth ids, columns: sorted nonzero pred ids
    t_ids = np.unique(truth)
    t_ids = t_ids[t_ids != 0]
    p_ids = np.unique(pred)
    p_ids = p_ids[p_ids != 0]
    matched = iou > 0.5
    missed_ids = t_ids[~matched.any(axis=1)] if t_ids.size else t_ids
    false_ids = p_ids[~matched.any(axis=0)] if p_ids.size else p_ids
    return np.isin(truth, missed_ids), np.isin(pred, false_ids)


def _scale(width: int) -> float:
    """Display scale for one panel: shrink so two panels fit MAX_PNG_WIDTH, enlarge tiny images."""
    max_panel = (MAX_PNG_WIDTH - GAP) // 2
    if width > max_panel:
        return max_panel / width
    if width < MIN_PANEL:
        return float(max(1, MIN_PANEL // max(width, 1)))
    return 1.0


def _nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = array.shape[:2]
    rows = np.minimum((np.arange(shape[0]) * h) // shape[0], h - 1)
    cols = np.minimum((np.arange(shape[1]) * w) // shape[1], w - 1)
    return array[rows[:, None], cols[None, :]]


def _brighten(rgb: np.ndarray) -> np.ndarray:
    """Stretch a dark 8-bit image (dim fluorescence, where display_rgb keeps the values) so its 99.9th
    percentile becomes white; images that already reach near white are returned unchanged."""
    top = float(np.percentile(rgb, 99.9))
    if top >= 200:
        return rgb
    return np.clip(rgb.astype(np.float32) * (255 / max(top, 1.0)), 0, 255).astype(np.uint8)


def comparison_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Side-by-side RGB array: left truth outlines (green) with missed nuclei red, right predicted outlines
    (yellow) with false positives magenta; scaled so the whole is at most MAX_PNG_WIDTH wide."""
    from .transforms import as_rgb

    image = as_rgb(image)
    missed, false_pos = error_masks(truth, pred)
    rgb = _brighten(display_rgb(image))
    h, w = truth.shape
    s = _scale(w)
    shape = (max(1, round(h * s)), max(1, round(w * s)))
    if shape != (h, w):
        from PIL import Image

        if s < 1:
            rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(
                (shape[1], shape[0]), Image.Resampling.BOX))
        else:
            rgb = _nearest(rgb, shape)
        truth, pred = _nearest(truth, shape), _nearest(pred, shape)
        missed, false_pos = _nearest(missed, shape), _nearest(false_pos, shape)
    none = np.zeros_like(missed)
    empty = np.zeros_like(truth)
    left = draw_comparison(rgb, truth, empty, missed, none)
    right = draw_comparison(rgb, empty, pred, none, false_pos)
    if shape[1] > 300:  # the browser shows two panels side by side at about half size: widen the outlines
        from skimage.segmentation import find_boundaries

        left[find_boundaries(truth, mode="thick")] = TRUTH_COLOR
        right[find_boundaries(pred, mode="thick")] = PRED_COLOR
    gap = np.full((shape[0], GAP, 3), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([left, gap, right], axis=1))


def precision_svg(summary: dict) -> str:
    """SVG line chart of mean precision against IoU threshold, one line per summary entry (overall bold
    black, drawn last so it is on top), legend at the lower left."""
    w, h, left, right, top, bottom = 640, 400, 64, 16, 16, 48
    x0, x1 = 0.48, 0.97
    pw, ph = w - left - right, h - top - bottom

    def px(t: float) -> float:
        return left + (t - x0) / (x1 - x0) * pw

    def py(p: float) -> float:
        return top + (1 - p / 1.02) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="Helvetica,Arial,sans-serif" font-size="12">',
           "<title>Precision versus IoU threshold (mean over images)</title>",
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for t in IOU_THRESHOLDS:  # vertical grid lines and x ticks
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#ddd"/>'
                   f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="black"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{t:.2f}</text>')
    for p in np.linspace(0, 1, 6):  # horizontal grid lines and y ticks
        y = py(p)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>'
                   f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{p:.1f}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>'
               f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">IoU threshold</text>'
               f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               "precision  TP / (TP + FP + FN)</text>")
    fallback = iter(["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"])
    entries = []
    for name, s in summary.items():
        color = "black" if name == "overall" else _KIND_COLORS.get(name) or next(fallback, "#7f7f7f")
        entries.append((name, s, color, 2.5 if name == "overall" else 1.5))
    for name, s, color, lw in sorted(entries, key=lambda e: e[0] == "overall"):  # overall drawn on top
        pts = [(px(t), py(min(max(float(p), 0.0), 1.0)))
               for t, p in zip(IOU_THRESHOLDS, s["precisions"]) if np.isfinite(p)]
        out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                   f'stroke="{color}" stroke-width="{lw}" stroke-linejoin="round"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{lw + 1.5}" fill="{color}"/>' for x, y in pts)
    labels = [(f"{name} (n={s['n_images']}, DSB {s['dsb']:.3f})", color, lw)
              for name, s, color, lw in entries]
    lx, ly = left + 10, top + ph - 10 - 18 * len(labels)
    lw_box = 40 + 6.5 * max((len(t) for t, _, _ in labels), default=0)
    out.append(f'<rect x="{lx}" y="{ly}" width="{lw_box:.0f}" height="{18 * len(labels) + 4}" fill="white" '
               'fill-opacity="0.85" stroke="#ccc" rx="3"/>')
    for i, (text, color, lw) in enumerate(labels):
        y = ly + 13 + 18 * i
        out.append(f'<line x1="{lx + 6}" y1="{y - 4}" x2="{lx + 30}" y2="{y - 4}" stroke="{color}" '
                   f'stroke-width="{lw}"/><circle cx="{lx + 18}" cy="{y - 4}" r="{lw + 1}" fill="{color}"/>'
                   f'<text x="{lx + 36}" y="{y}">{html.escape(text)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def _safe_name(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(image_id))[:40]


def _f(x: float) -> str:
    return f"{x:.4f}"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#222;line-height:1.4}
h1{margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin-top:0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e5e5e5;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
tr.overall td{font-weight:600}
.plot{max-width:100%;height:auto}
.legend span.sw{display:inline-block;width:14px;height:14px;vertical-align:-2px;margin:0 4px 0 12px;
border:1px solid #999}
.legend span.sw:first-child{margin-left:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:24px 20px;align-items:start}
figure{margin:0;min-width:0}
figure img{display:block;width:100%;height:auto;border:1px solid #ccc}
figcaption{font-size:13px;margin-top:4px}
figcaption b{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.small{font-size:13px;color:#555}
details{margin-top:12px}summary{cursor:pointer}
"""


def _summary_table(rows: list[dict], summary: dict) -> str:
    out = ["<table><thead><tr><th>images</th><th>n</th><th>DSB</th><th>AP@0.5</th><th>AP@0.75</th>"
           "<th>true nuclei</th><th>predicted nuclei</th><th>missed @0.5</th><th>false pos. @0.5</th>"
           "</tr></thead><tbody>"]
    for name, s in summary.items():
        subset = rows if name == "overall" else [r for r in rows if r.get("kind") == name]
        fn = sum(int(r.get("fn50", 0)) for r in subset)
        fp = sum(int(r.get("fp50", 0)) for r in subset)
        cls = ' class="overall"' if name == "overall" else ""
        out.append(f"<tr{cls}><td>{html.escape(str(name))}</td><td>{s['n_images']}</td><td>{_f(s['dsb'])}</td>"
                   f"<td>{_f(s['ap50'])}</td><td>{_f(s['ap75'])}</td><td>{s['n_true']}</td>"
                   f"<td>{s['n_pred']}</td><td>{fn}</td><td>{fp}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _image_table(rows: list[dict], png_of: dict[str, str]) -> str:
    out = ["<table><thead><tr><th>image</th><th>kind</th><th>DSB</th><th>AP@0.5</th><th>AP@0.75</th>"
           "<th>true</th><th>pred</th><th>TP@0.5</th><th>FP@0.5</th><th>FN@0.5</th></tr></thead><tbody>"]
    for r in sorted(rows, key=lambda r: (r["dsb"], str(r["image_id"]))):
        name = html.escape(str(r["image_id"]))
        if r["image_id"] in png_of:
            name = f'<a href="{html.escape(urllib.parse.quote(png_of[r["image_id"]]))}">{name}</a>'
        out.append(f"<tr><td>{name}</td><td>{html.escape(str(r.get('kind', '')))}</td><td>{_f(r['dsb'])}</td>"
                   f"<td>{_f(r['ap50'])}</td><td>{_f(r['ap75'])}</td><td>{r['n_true']}</td><td>{r['n_pred']}</td>"
                   f"<td>{r.get('tp50', '')}</td><td>{r.get('fp50', '')}</td><td>{r.get('fn50', '')}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


LEGEND = (
    '<p class="legend">'
    '<span class="sw" style="background:#00ff00"></span>true nucleus outline'
    '<span class="sw" style="background:#ffff00"></span>predicted nucleus outline'
    '<span class="sw" style="background:#ff0000"></span>missed: true nucleus with no prediction at IoU&nbsp;&gt;&nbsp;0.5'
    '<span class="sw" style="background:#ff00ff"></span>false positive: prediction with no true nucleus at '
    'IoU&nbsp;&gt;&nbsp;0.5</p>'
    '<p class="small">Each picture shows the truth on the left (green outlines, missed nuclei filled red) and the '
    'prediction on the right (yellow outlines, false positives filled magenta). Click a picture to see it '
    'full size (at most 1024 pixels wide: large images are shrunk, tiny ones enlarged).</p>'
)


def write_report(report_dir: Path, rows: list[dict], summary: dict, load: Loader, n_worst: int = 12) -> Path:
    """Write ``index.html``, ``precision.svg`` and one ``worst_NN_<id>.png`` per worst image into
    ``report_dir``; return the path of ``index.html``.

    ``rows`` are per-image ``score_image`` dicts with ``image_id`` and ``kind``; ``summary`` maps
    "overall" and each kind to a ``summarize`` dict; ``load(image_id)`` returns (image, truth, pred).
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)

    write_text_atomic(report_dir / PLOT_NAME, precision_svg(summary))
    (report_dir / "precision_iou.png").unlink(missing_ok=True)  # the plot of reports before 0.2

    worst = sorted(rows, key=lambda r: (r["dsb"], str(r["image_id"])))[:max(0, n_worst)]
    png_of: dict[str, str] = {}
    figures = []
    for rank, r in enumerate(worst, 1):
        image_id = r["image_id"]
        name = f"worst_{rank:02d}_{_safe_name(image_id)}.png"
        image, truth, pred = load(image_id)
        write_png(report_dir / name, comparison_png(image, np.asarray(truth), np.asarray(pred)))
        png_of[image_id] = name
        esc = html.escape(str(image_id))
        src = html.escape(urllib.parse.quote(name))
        figures.append(
            f'<figure><a href="{src}"><img src="{src}" alt="{esc}" title="{esc}"></a>'
            f"<figcaption>{rank}. <b>{esc}</b><br>{html.escape(str(r.get('kind', '')))} &middot; "
            f"DSB {_f(r['dsb'])} &middot; AP@0.5 {_f(r['ap50'])}<br>"
            f"true {r['n_true']} &middot; predicted {r['n_pred']} &middot; "
            f"missed {r.get('fn50', '?')} &middot; false pos. {r.get('fp50', '?')}</figcaption></figure>")

    keep = set(png_of.values())
    for old in report_dir.glob("worst_*.png"):  # pictures left over from an earlier report in this folder
        if _WORST_RE.match(old.name) and old.name not in keep:
            old.unlink(missing_ok=True)

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    overall = summary.get("overall")
    headline = f"DSB score <b>{_f(overall['dsb'])}</b> over " if overall else ""
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nucleiseg evaluation report</title>
<style>{CSS}</style></head>
<body>
<h1>nucleiseg evaluation report</h1>
<p class="meta">{headline}{len(rows)} image{"s" if len(rows) != 1 else ""} &middot; generated {html.escape(now)}</p>

<h2>Scores</h2>
{_summary_table(rows, summary)}
<p class="small">DSB: mean over IoU thresholds 0.50&ndash;0.95 of TP / (TP + FP + FN), averaged over images.
AP@t: the same precision at one threshold. Counts are totals over the images.</p>

<h2>Precision versus IoU threshold</h2>
<img class="plot" src="{PLOT_NAME}" alt="precision versus IoU threshold" width="640" height="400">

<h2>The {len(worst)} lowest-scoring image{"s" if len(worst) != 1 else ""}</h2>
{LEGEND}
<div class="grid">
{chr(10).join(figures)}
</div>

<h2>All images</h2>
<details><summary>Per-image scores ({len(rows)} images, lowest DSB first)</summary>
{_image_table(rows, png_of)}
</details>
</body></html>
"""
    index = report_dir / INDEX_NAME
    write_text_atomic(index, doc)
    return index
