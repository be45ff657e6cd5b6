"""Int8 quantisation of a model folder's ONNX network: onnxruntime's static quantiser (QDQ, per-channel weights),
calibrated on what the network sees when it segments training images. Needs the ``onnx`` package
(``nucleiseg[train]``); running the result needs onnxruntime only."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .checkpoint import INT8_ONNX, default_model_dir
from .errors import NucleisegError
from .runners import TORCH_HINT

if TYPE_CHECKING:
    from .segmenter import Segmenter

log = logging.getLogger(__name__)

CALIBRATION_KEY = "nucleiseg.calibration"
CROP = 256  # calibration inputs are cropped to this side: enough context, bounded memory


def calibration_batches(seg: "Segmenter", data: list[str | os.PathLike[str]], images: int = 32,
                        seed: int = 0) -> tuple[list[np.ndarray], str]:
    """Network inputs (1, C, h, w) captured while ``seg`` (the fp32 model) segments up to ``images`` training
    images (never their validation part), taken round-robin over the ``data`` folders; and a one-line
    description."""
    from .data import list_dataset, train_val_split
    from .io import read_image

    rng = np.random.default_rng(seed)
    pools = []
    for folder in data:
        train, _ = train_val_split(list_dataset(folder, need_annotations=False))
        pools.append([train[i] for i in rng.permutation(len(train))])
    picked = [pool[k] for k in range(max(map(len, pools), default=0)) for pool in pools if k < len(pool)][:images]
    if not picked:
        raise NucleisegError("int8 calibration: no training images in " + ", ".join(map(str, data)))
    captured: list[np.ndarray] = []
    run = seg.model.run

    def capture(batch: np.ndarray) -> np.ndarray:
        for x in batch:
            y0 = int(rng.integers(0, max(1, x.shape[1] - CROP + 1)))
            x0 = int(rng.integers(0, max(1, x.shape[2] - CROP + 1)))
            captured.append(np.ascontiguousarray(x[None, :, y0:y0 + CROP, x0:x0 + CROP], np.float32))
        return run(batch)

    seg.model.run = capture
    try:
        for item in picked:
            seg.segment(read_image(item.image))
    finally:
        seg.model.run = run
    what = f"{len(picked)} training images of " + ", ".join(Path(d).resolve().name for d in data)
    return captured, what


def quantize_onnx(data: list[str | os.PathLike[str]], model_dir: str | Path | None = None,
                  path: str | os.PathLike[str] | None = None, images: int = 32) -> Path:
    """Write an int8 copy of the folder's ``model.onnx`` (default: ``<model folder>/model.int8.onnx``),
    calibrated (min/max) on ``images`` training images of the ``data`` folders. The file keeps the weights
    digest of the fp32 file, so a stale int8 file is noticed like a stale export."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise NucleisegError(f"int8 quantisation needs the onnx package: {TORCH_HINT}") from None
    from .atomic import atomic_path
    from .export import DIGEST_KEY
    from .segmenter import load_model

    folder = default_model_dir() if model_dir is None else Path(model_dir)
    path = folder / INT8_ONNX if path is None else Path(path)
    seg = load_model(folder, device="cpu", precision="fp32")  # exports model.onnx first if it is stale
    fp32 = seg.model
    digest = fp32.metadata.get(DIGEST_KEY, "")
    batches, what = calibration_batches(seg, data, images)
    log.info("int8 calibration on %d crops from %s", len(batches), what)
    name = fp32.session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # symbolic shape inference cannot follow the dynamic height/width; onnx's own inference suffices here
        quant_pre_process(str(fp32.path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(quantized))
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({DIGEST_KEY: digest, CALIBRATION_KEY: what})
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp_path:
        onnx.save(model, str(tmp_path))
    return path

