"""Whole `nucleiseg predict` processes: this code against release 0.1.0 (commit 1eb2e30), alternately, in one run.

Setup (once; needs the package index): two virtual environments under /tmp
    python bench/predict_end_to_end.py setup
  - /tmp/nucleiseg-0.1.0: torch==2.13.0 + nucleiseg 0.1.0 from `git archive 1eb2e30` (as its README installed it)
  - /tmp/nucleiseg-core:  this working tree, core install only (`pip install .`: no torch)
Run (on a quiet machine):
    python bench/predict_end_to_end.py run [--images 132] [--repeats 3] [--json bench/predict_end_to_end.json]
        [--new-args "--diameter none"]   (0.1.0 had no rescaling: compare at the same settings too)
  - the same DSB2018 validation images (splits/dsb2018_val.txt, spread over all image sizes) predicted by a
    whole process of each install, alternately, --repeats times: median seconds, MP/s and the ratio;
  - start-up: a whole process on one 256 x 256 image, each install, alternately;
  - per-stage seconds of the current code (import, model load, read, normalise, network, post-process,
    write; one image at a time so the stages add up) and the pipelined total;
  - installed size (`du -s` of site-packages) of both environments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train"
OLD, CORE = Path("/tmp/nucleiseg-0.1.0"), Path("/tmp/nucleiseg-core")
RELEASE = "1eb2e30"


def sh(*cmd: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def setup(old: Path, core: Path) -> None:
    src = old / "src-0.1.0"
    src.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", RELEASE], check=True, capture_output=True).stdout
    sh("tar", "-x", "-C", src, input=archive)
    sh(sys.executable, "-m", "venv", old / "venv")
    sh(old / "venv/bin/pip", "install", "-q", "torch==2.13.0")
    sh(old / "venv/bin/pip", "install", "-q", src)
    sh(sys.executable, "-m", "venv", core / "venv")
    sh(core / "venv/bin/pip", "install", "-q", ROOT)  # not editable: the package and its model count in the size


def site_packages_kb(venv: Path) -> int:
    (site,) = venv.glob("lib/python*/site-packages")
    return int(subprocess.run(["du", "-s", "-k", str(site)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def val_images(n: int) -> list[Path]:
    """``n`` validation images, taken round-robin over image sizes so every size is represented."""
    from PIL import Image

    ids = [ln.strip() for ln in (ROOT / "src/nucleiseg/splits/dsb2018_val.txt").read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    by_size: dict[tuple[int, int], list[Path]] = {}
    for image_id in ids:
        path = DATA / image_id / "images" / f"{image_id}.png"
        with Image.open(path) as im:
            by_size.setdefault(im.size, []).append(path)
    groups, picked = [sorted(v) for _, v in sorted(by_size.items())], []
    while len(picked) < n and any(groups):
        for group in groups:
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return picked


def megapixels(paths: list[Path]) -> float:
    from PIL import Image

    total = 0
    for p in paths:
        with Image.open(p) as im:
            total += im.size[0] * im.size[1]
    return total / 1e6


def whole_process(venv: Path, inputs: list[Path], out: Path, extra: list[str] = ()) -> float:
    """Seconds for one `nucleiseg predict` process (start to exit)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    start = time.perf_counter()
    proc = subprocess.run([str(venv / "bin/nucleiseg"), "predict", *map(str, inputs), "-o", str(out), *extra],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{venv}: predict failed:\n{proc.stderr[-2000:]}")
    return seconds


STAGES = r'''
import importlib, json, sys, time
t0 = time.perf_counter()
# import_module, not `import a.b as c`: the package's lazy API exposes a function named predict
inference, predict, segmenter = (importlib.import_module(f"nucleiseg.{m}") for m in ("inference", "predict", "segmenter"))
t_import = time.perf_counter() - t0
times = dict.fromkeys(["read", "normalise", "network", "postprocess", "write"], 0.0)
def timed(stage, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[stage] += time.perf_counter() - start
    return wrapper
t0 = time.perf_counter()
seg = segmenter.load_model(threads=None)
t_load = time.perf_counter() - t0
seg.model.run = timed("network", seg.model.run)
inference.normalize = timed("normalise", inference.normalize)
inference.percentiles = timed("normalise", inference.percentiles)
segmenter.probabilities_to_labels = timed("postprocess", segmenter.probabilities_to_labels)
predict.read_image = timed("read", predict.read_image)
predict._write_outputs = timed("write", predict._write_outputs)
load = segmenter.load_model
segmenter.load_model = lambda *a, **k: seg  # the model loaded (and timed) above
paths, out = sys.argv[1:-1], sys.argv[-1]
t0 = time.perf_counter()
predict.predict(paths, out + "/serial", workers=1)
total = time.perf_counter() - t0
serial = dict(times)
segmenter.load_model = load
t0 = time.perf_counter()
predict.predict(paths, out + "/pipelined")
pipelined = time.perf_counter() - t0
print(json.dumps({"import": t_import, "model load": t_load, **serial, "other": total - sum(serial.values()),
                  "serial total": total, "pipelined total (default workers)": pipelined}))
'''


def stage_times(venv: Path, inputs: list[Path], out: Path) -> dict[str, float]:
    proc = subprocess.run([str(venv / "bin/python"), "-c", STAGES, *map(str, inputs), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    old_venv, new_venv = args.old / "venv", args.new
    images = val_images(args.images)
    mp = megapixels(images)
    print(f"{len(images)} DSB2018 validation images, {mp:.1f} MP; old {old_venv}, new {new_venv}")
    results: dict = {"images": len(images), "megapixels": mp, "old": str(old_venv), "new": str(new_venv)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        from PIL import Image

        small = next((p for p in images if Image.open(p).size == (256, 256)), images[0])
        runs: dict[str, list[float]] = {"old": [], "new": [], "old start-up": [], "new start-up": []}
        extra = {"old": [], "new": shlex.split(args.new_args)}
        results["new_args"] = args.new_args
        for r in range(args.repeats):
            for name, venv in (("old", old_venv), ("new", new_venv)):
                runs[name].append(whole_process(venv, images, tmp_path / f"{name}{r}", extra[name]))
                runs[f"{name} start-up"].append(whole_process(venv, [small], tmp_path / f"{name}-one{r}", extra[name]))
                print(f"  repeat {r + 1} {name}: {runs[name][-1]:.2f} s, one 256 px image "
                      f"{runs[f'{name} start-up'][-1]:.2f} s", flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        results["seconds"] = runs
        results["median"] = med
        print(f"whole process: 0.1.0 {med['old']:.2f} s ({mp / med['old']:.2f} MP/s), now {med['new']:.2f} s "
              f"({mp / med['new']:.2f} MP/s): x{med['old'] / med['new']:.2f} faster")
        print(f"start-up (one 256 px image): 0.1.0 {med['old start-up']:.2f} s, now {med['new start-up']:.2f} s")
        stages = stage_times(new_venv, images, tmp_path / "stages")
        results["stages_now"] = stages
        print("current code, per stage (one image at a time): " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    sizes = {"old": site_packages_kb(old_venv), "new": site_packages_kb(new_venv)}
    results["site_packages_kb"] = sizes
    print(f"site-packages: 0.1.0 {sizes['old'] / 1024:.0f} MB, now {sizes['new'] / 1024:.0f} MB "
          f"(x{sizes['new'] / sizes['old']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("setup", "run"))
    parser.add_argument("--old", type=Path, default=OLD, help="folder of the 0.1.0 install (venv/ inside)")
    parser.add_argument("--core", type=Path, default=CORE, help="folder of the core install (venv/ inside)")
    parser.add_argument("--new", type=Path, help="venv that runs the current code (default: <--core>/venv)")
    parser.add_argument("--images", type=int, default=132, help="how many validation images (default: all 132)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--new-args", default="", help='extra predict arguments for the current code, e.g. "--diameter none"')
    args = parser.parse_args()
    if args.action == "setup":
        setup(args.old, args.core)
    else:
        args.new = args.new or args.core / "venv"
        run(args)


if __name__ == "__main__":
    main()
