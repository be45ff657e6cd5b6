"""ONNX export (needs torch) and finding a model folder's up-to-date ``model.onnx`` (does not)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import INT8_ONNX, ONNX, WEIGHTS, default_model_dir
from .errors import NucleisegError
from .runners import TORCH_HINT, OnnxRunner

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

DIGEST_KEY = "nucleiseg.weights_sha256"


def weights_digest(folder: Path) -> str | None:
    """SHA-256 of the folder's weights file and network configuration (what an ONNX file is exported from);
    None without weights. Other settings (thresholds, scale, training options) do not touch the network."""
    from .checkpoint import CONFIG
    from .config import load_config

    path = folder / WEIGHTS
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes())
    network = dataclasses.asdict(load_config(folder / CONFIG).model)
    digest.update(json.dumps(network, sort_keys=True).encode())
    return digest.hexdigest()


def export_onnx(path: str | os.PathLike[str] | None = None, model_dir: str | Path | None = None) -> Path:
    """Write the model (logits and output activation: probabilities out) as ONNX with dynamic batch, height
    and width (sides must be multiples of the stride); default path: ``<model folder>/model.onnx``.

    Uses the exporter torch recommends (``dynamo=True``, through ``torch.export``; it needs onnxscript).
    The file records the SHA-256 of the weights it came from, so a stale export is noticed.
    """
    try:
        import torch
    except ImportError:
        raise NucleisegError(f"export needs PyTorch: {TORCH_HINT}") from None
    from .atomic import atomic_path
    from .checkpoint import load_model

    folder = default_model_dir() if model_dir is None else Path(model_dir)
    path = folder / ONNX if path is None else Path(path)
    network, config, _ = load_model(folder)
    stride = config.model.stride
    example = torch.zeros(1, config.model.in_channels, 2 * stride, 2 * stride)
    dim = torch.export.Dim.DYNAMIC
    program = torch.onnx.export(_probabilities_module(network), (example,), dynamo=True, input_names=["image"],
                                output_names=["probabilities"], dynamic_shapes=({0: dim, 2: dim, 3: dim},),
                                verbose=False)
    program.model.metadata_props[DIGEST_KEY] = weights_digest(folder) or ""
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


def _probabilities_module(network: "nn.Module") -> "nn.Module":
    from torch import nn

    class Probabilities(nn.Module):
        """The network followed by its sigmoid: what the ONNX file computes."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x).sigmoid()

    return Probabilities(network).eval()



PRECISIONS = ("auto", "fp32", "int8")


def onnx_runner(model_dir: str | Path | None = None, device: str = "auto", threads: int | None = None,
                precision: str = "auto") -> OnnxRunner:
    """An onnxruntime runner for a model folder's ``model.onnx``, or its ``model.int8.onnx``.

    ``precision``: int8 runs ``model.int8.onnx`` (an error when it is missing or stale); auto runs it when
    it is there, up to date and the network runs on the CPU, else fp32; fp32 runs ``model.onnx``.
    A folder whose ``model.onnx`` is missing, or was exported from other weights, is exported first when
    torch is installed (into the folder, or the cache folder when the model folder is read-only); without
    torch that is a one-line error saying how to export it.
    """
    if precision not in PRECISIONS:
        raise NucleisegError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    folder = default_model_dir() if model_dir is None else Path(model_dir)
    path, digest = folder / ONNX, weights_digest(folder)
    if precision != "fp32":
        int8 = _int8_runner(folder, digest, device, threads, required=precision == "int8")
        if int8 is not None:
            return int8
    if path.is_file():
        runner = OnnxRunner(path, device, threads)
        if digest is None or runner.metadata.get(DIGEST_KEY) == digest:
            return runner
        problem = f"{path} is out of date (exported from other weights or network settings)"
    else:
        problem = f"{folder}: no {ONNX}"
    if importlib.util.find_spec("torch") is None:
        raise NucleisegError(f"{problem}; export it where PyTorch is installed ({TORCH_HINT}): "
                             f"nucleiseg export --model {folder}")
    cached = _cached_path(digest)
    if cached.is_file():
        return OnnxRunner(cached, device, threads)
    log.info("%s; exporting it once (a minute at most)", problem)
    try:
        return OnnxRunner(export_onnx(path, folder), device, threads)
    except OSError:  # a read-only model folder
        cached.parent.mkdir(parents=True, exist_ok=True)
        return OnnxRunner(export_onnx(cached, folder), device, threads)


def _int8_runner(folder: Path, digest: str | None, device: str, threads: int | None,
                 required: bool) -> OnnxRunner | None:
    path = folder / INT8_ONNX
    hint = f"make it with: nucleiseg export --int8 --model {folder} --data TRAINING_DIR"
    if not path.is_file():
        if required:
            raise NucleisegError(f"{folder}: no {INT8_ONNX} for --precision int8; {hint}")
        return None
    if not required and (device == "cuda" or (device == "auto" and _gpu_available())):
        return None  # int8 kernels are a CPU speed-up; a GPU runs the fp32 network
    runner = OnnxRunner(path, device, threads)
    if digest is not None and runner.metadata.get(DIGEST_KEY) != digest:
        if required:
            raise NucleisegError(f"{path} is out of date (quantised from other weights); {hint}")
        log.warning("%s is out of date (quantised from other weights): using model.onnx", path)
        return None
    return runner


def _gpu_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _cached_path(digest: str | None) -> Path:
    from .data import cache_dir

    return cache_dir() / "onnx" / f"{(digest or 'none')[:20]}.onnx"
