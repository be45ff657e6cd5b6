"""ONNX export and an onnxruntime-backed model that plugs into the same inference code."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .errors import NucleisegError
from .segmenter import Segmenter, load_model


def export_onnx(path: str | os.PathLike[str], model_dir: str | Path | None = None, opset: int = 17) -> Path:
    """Write the model as ONNX with dynamic batch, height and width (inputs must be multiples of the stride).

    Uses the TorchScript exporter, which needs no extra package (the dynamo exporter needs onnxscript).
    """
    seg = load_model(model_dir)
    path = Path(path)
    stride = seg.config.model.stride
    example = torch.zeros(1, seg.config.model.in_channels, 2 * stride, 2 * stride)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(seg.model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=opset, dynamo=False)
    return path


class OnnxModule(nn.Module):
    """Runs an exported network with onnxruntime; called like the torch model (NCHW logits)."""

    def __init__(self, onnx_path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise NucleisegError("the onnx backend needs onnxruntime: pip install 'nucleiseg[onnx]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise NucleisegError(f"{onnx_path}: cannot load ONNX model ({exc})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return torch.from_numpy(logits)


def onnx_segmenter(seg: Segmenter, onnx_path: str | os.PathLike[str] | None = None,
                   model_dir: str | Path | None = None) -> Segmenter:
    """A copy of ``seg`` whose network runs in onnxruntime.

    Without ``onnx_path`` the model is exported once into the cache folder, keyed by a hash of its weights
    and config, so later runs reuse the export.
    """
    if onnx_path is None:
        onnx_path = _cached_export(model_dir)
    return dataclasses.replace(seg, model=OnnxModule(onnx_path))


def _cached_export(model_dir: str | Path | None) -> Path:
    import hashlib

    from .checkpoint import CONFIG, WEIGHTS, default_model_dir
    from .data import cache_dir

    folder = default_model_dir() if model_dir is None else Path(model_dir)
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        digest.update((folder / name).read_bytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:20]}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(path, model_dir)
    return path
