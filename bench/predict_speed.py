"""Prediction speed on fixed images: end to end and per stage, against a plain reference in the same run.

Run: python bench/predict_speed.py [--model RUN_DIR] [--repeats 3] [--images DIR]
- optimised: nucleiseg.predict with the torch backend (inference mode, channels-last, batched tiles,
  images pipelined in threads); the whole-process comparison with 0.1.0 is bench/predict_end_to_end.py.
- reference: one image at a time, eager PyTorch under no_grad, NCHW fp32, no read-ahead, same model
  and post-processing.
- ceiling: the FLOP rate of one large 3x3 convolution (64 -> 64 channels, 1024x1024) on this CPU;
  the network's rate is its FLOPs (counted by torch's FlopCounterMode) over the network stage's time.
Medians over --repeats whole runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nucleiseg.data import list_inputs
from nucleiseg.io import read_image, write_labels
from nucleiseg.postprocess import probabilities_to_labels
from nucleiseg.predict import predict
from nucleiseg.segmenter import load_model
from nucleiseg.transforms import normalize, percentiles

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "nucleiseg" / "sample"


def conv_ceiling_gflops() -> float:
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 1024, 1024).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 9 * 1024 * 1024
    times = []
    with torch.inference_mode():
        for _ in range(5):
            t = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t)
    return flops / min(times[1:]) / 1e9


def network_flops(model: torch.nn.Module, h: int, w: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, h, w))
    return float(counter.get_total_flops())


def stages(seg, paths: list[Path], out: Path) -> dict[str, float]:
    """Seconds per stage for one pass over ``paths`` with the optimised code path, run stage by stage."""
    from nucleiseg.inference import _pad_to, _run_batch

    t = {"read": 0.0, "normalise": 0.0, "network": 0.0, "postprocess": 0.0, "write": 0.0}
    stride = seg.config.model.stride
    for p in paths:
        t0 = time.perf_counter()
        image = read_image(p)
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        x = normalize(image, seg.config.normalization, percentiles(image))
        x = _pad_to(x, -(-h // stride) * stride, -(-w // stride) * stride).transpose(2, 0, 1)[None]
        x = np.ascontiguousarray(x)
        t2 = time.perf_counter()
        prob = _run_batch(seg.model, x, seg.tta)[0][:, :h, :w]
        t3 = time.perf_counter()
        labels = probabilities_to_labels(prob, seg.post)
        t4 = time.perf_counter()
        write_labels(out / f"{p.stem}.tif", labels)
        t5 = time.perf_counter()
        for k, a, b in (("read", t0, t1), ("normalise", t1, t2), ("network", t2, t3), ("postprocess", t3, t4),
                        ("write", t4, t5)):
            t[k] += b - a
    return t


def reference(seg, paths: list[Path], out: Path) -> None:
    """Plain loop: eager PyTorch, NCHW fp32 model copy, no batching, no read-ahead."""
    import copy

    model = copy.deepcopy(seg.model.model).to(memory_format=torch.contiguous_format)
    stride = seg.config.model.stride
    for p in paths:
        image = read_image(p)
        h, w = image.shape[:2]
        x = normalize(image, seg.config.normalization)
        hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
        x = np.pad(x, ((0, hp - h), (0, wp - w), (0, 0)), mode="reflect").transpose(2, 0, 1)[None]
        with torch.no_grad():
            prob = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x)))).numpy()[0][:, :h, :w]
        write_labels(out / f"{p.stem}.tif", probabilities_to_labels(prob, seg.post))


def network_seconds(model, inputs: list[np.ndarray], repeats: int) -> float:
    """Median seconds for the network alone over pre-normalised padded inputs."""
    from nucleiseg.inference import _run_batch

    runs = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        for x in inputs:
            _run_batch(model, x, False)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs[1:])


def onnx_vs_torch(seg, model_dir: Path | None, paths: list[Path], repeats: int) -> tuple[float, float]:
    """(torch seconds, onnxruntime seconds) for the network stage on the same inputs."""
    from nucleiseg.export import export_onnx
    from nucleiseg.runners import OnnxRunner
    from nucleiseg.inference import _pad_to

    stride = seg.config.model.stride
    inputs = []
    for p in paths:
        image = read_image(p)
        h, w = image.shape[:2]
        x = _pad_to(normalize(image, seg.config.normalization), -(-h // stride) * stride, -(-w // stride) * stride)
        inputs.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(Path(tmp) / "m.onnx", model_dir)
        onnx = OnnxRunner(Path(tmp) / "m.onnx", device="cpu")
        return network_seconds(seg.model, inputs, repeats), network_seconds(onnx, inputs, repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--images", type=Path, default=SAMPLE)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seg = load_model(args.model, tta=False, backend="torch")  # the torch path; onnx below
    paths = [it.image for it in list_inputs([args.images])]
    mpix = sum(np.prod(read_image(p).shape[:2]) for p in paths) / 1e6
    print(f"{len(paths)} images, {mpix:.2f} MP, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"preset {seg.config.preset}")
    runs: dict[str, list[float]] = {"optimised": [], "reference": []}
    per_stage: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        reference(seg, paths[:1], Path(tmp))  # warm-up: one-off kernel selection per shape
        predict([args.images], Path(tmp) / "warm", model_dir=args.model, tta=False, backend="torch")
        for _ in range(args.repeats):
            t = time.perf_counter()
            predict([args.images], Path(tmp) / "opt", model_dir=args.model, tta=False, backend="torch")
            runs["optimised"].append(time.perf_counter() - t)
            t = time.perf_counter()
            reference(seg, paths, Path(tmp))
            runs["reference"].append(time.perf_counter() - t)
            per_stage.append(stages(seg, paths, Path(tmp)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    for k, s in med.items():
        print(f"{k:10} end to end: {s:.2f} s  {mpix / s:.2f} MP/s  {len(paths) / s:.2f} images/s")
    print(f"speed-up optimised / reference: x{med['reference'] / med['optimised']:.2f}")
    stage_med = {k: statistics.median(d[k] for d in per_stage) for k in per_stage[0]}
    for k, s in stage_med.items():
        print(f"  stage {k:12} {s:.3f} s  {mpix / s:8.2f} MP/s")
    ceiling = conv_ceiling_gflops()
    stride = seg.config.model.stride
    flops_all = sum(network_flops(seg.model.model, -(-read_image(p).shape[0] // stride) * stride,
                                  -(-read_image(p).shape[1] // stride) * stride) for p in paths)
    rate = flops_all / stage_med["network"] / 1e9
    print(f"network: {flops_all / 1e9:.1f} GFLOP at {rate:.1f} GFLOP/s; 3x3 conv ceiling {ceiling:.1f} GFLOP/s "
          f"-> {100 * rate / ceiling:.0f} % of ceiling")
    t_torch, t_onnx = onnx_vs_torch(seg, args.model, paths, args.repeats)
    print(f"network only: torch {t_torch:.2f} s ({mpix / t_torch:.2f} MP/s), onnxruntime {t_onnx:.2f} s "
          f"({mpix / t_onnx:.2f} MP/s), onnx/torch time x{t_onnx / t_torch:.2f}")


if __name__ == "__main__":
    main()
