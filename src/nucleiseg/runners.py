"""Network runners: a normalised (B, 3, H, W) float32 batch in, (B, C, H, W) probabilities out.

``OnnxRunner`` (onnxruntime, the default, needs no torch) and ``TorchRunner`` (PyTorch) both implement
``Runner``; inference code only sees that interface. Each runner knows its own device.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .errors import NucleisegError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
TORCH_HINT = 'pip install torch==2.13.0 "nucleiseg[train]"'


class Runner(Protocol):
    """What inference needs from a network."""

    device: str  # "cpu" or "cuda"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 normalised images, H and W multiples of the stride, to (B, C, H, W) float32
        probabilities."""
        ...


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise NucleisegError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


class OnnxRunner:
    """An exported network run by onnxruntime: the CUDA provider when present (unless ``device="cpu"``),
    else the CPU with ``threads`` intra-op threads (default: all cores)."""

    def __init__(self, path: str | os.PathLike[str], device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        _check_device(device)
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise NucleisegError("--device cuda: no GPU available to onnxruntime (install onnxruntime-gpu "
                                 "on a machine with a CUDA GPU, or use --device cpu)")
        use_cuda = device != "cpu" and "CUDAExecutionProvider" in available
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or cpu_count()
        # idle pool threads sleep instead of spinning, so they leave the cores to post-processing threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise NucleisegError(f"{path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None
        on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
        if device == "cuda" and not on_gpu:
            raise NucleisegError("--device cuda: onnxruntime found no usable CUDA GPU (use --device cpu)")
        self.device = "cuda" if on_gpu else "cpu"
        self.path = Path(path)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        """The model file's metadata (``nucleiseg.weights_sha256``: the weights it was exported from)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (prob,) = self.session.run([self._output], {self._input: x})
        return prob


class TorchRunner:
    """A PyTorch network (logits out) with its output activation; runs on the module's device unless
    ``device`` moves it ("auto": CUDA when available)."""

    def __init__(self, model: "nn.Module", activation: str = "sigmoid", device: str | None = None) -> None:
        torch = _import_torch()
        if activation != "sigmoid":
            raise NucleisegError(f"unknown output activation {activation!r}")
        if device is not None:
            _check_device(device)
            if device == "cuda" and not torch.cuda.is_available():
                raise NucleisegError("--device cuda: PyTorch finds no CUDA GPU (use --device cpu)")
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model = model.to(device)
        param = next(model.parameters(), None)
        self.model = model
        self.device = param.device.type if param is not None else "cpu"
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        self.model.eval()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            # channels-last lets oneDNN pick its fastest convolution kernels on CPU (about 1.8x here)
            x = x.contiguous(memory_format=torch.channels_last)
            return torch.sigmoid(self.model(x)).float().cpu().numpy()


def torch_runner(model_dir: str | Path | None = None, device: str = "auto", threads: int | None = None) -> TorchRunner:
    """A TorchRunner for a model folder's weights (default: the bundled model); ``threads`` sets torch's CPU
    threads (for the whole process)."""
    torch = _import_torch()
    from .checkpoint import load_network
    from .representations import representation

    if threads:
        torch.set_num_threads(threads)
    model, config, _ = load_network(model_dir)
    model = model.to(memory_format=torch.channels_last)
    return TorchRunner(model, representation(config.targets).activation, device)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise NucleisegError(f"the torch backend needs PyTorch: {TORCH_HINT}") from None
    return torch
