"""A loaded model with its configuration and thresholds: image in, probabilities or labels out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import PostprocessConfig, TrainConfig
from .data import median_diameter
from .errors import NucleisegError
from .inference import DEFAULT_OVERLAP, DEFAULT_TILE, predict_probabilities
from .postprocess import labels_on_grid, probabilities_to_labels
from .runners import Runner, torch_runner
from .scale import DEAD_BAND, resize_raw, sample_windows, scale_factor
from .transforms import as_rgb

log = logging.getLogger(__name__)

PROBE_LARGER = 1.0  # nuclei found larger than the canonical diameter may be fragments: look coarser
COARSER_WINS = 1.25  # a coarser look replaces the estimate only when its nuclei are this much larger...
TRUSTED = 1.0  # ...and, at the coarser scale, at least this multiple of canonical (not small ones merged)
MIN_PROBE = 0.125  # the coarsest probe: nuclei up to about 8 x canonical (130-160 px at 16) are measured


@dataclass
class Segmenter:
    """Everything needed to segment an image; build it with ``load_model``.

    ``diameter``: ``"auto"`` estimates each image's nucleus diameter and rescales the image so nuclei have the
    model's canonical diameter; a number gives the diameter in pixels; ``None`` uses the image as it is.
    Models trained without scale normalisation (``canonical_diameter`` 0) always use the image as it is.
    """

    model: Runner  # the network: OnnxRunner or TorchRunner
    config: TrainConfig
    post: PostprocessConfig
    tta: bool = False
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    diameter: str | float | None = "auto"

    def __post_init__(self) -> None:
        # a bare torch module (code written before runners, e.g. a training process started earlier) is
        # wrapped, so it keeps working; new code passes a runner
        if not hasattr(self.model, "run"):
            from .runners import TorchRunner

            self.model = TorchRunner(self.model)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) image to (C, H, W) probabilities at the image's own scale."""
        return predict_probabilities(self.model, image, self.config, tta=self.tta, tile=self.tile,
                                     overlap=self.overlap)

    def _labels_at(self, image: np.ndarray, factor: float) -> np.ndarray:
        """Labels of ``image`` segmented after resizing it by ``factor``, at the network's scale."""
        return probabilities_to_labels(self.probabilities(resize_raw(image, factor)), self.post,
                                       targets=self.config.targets)

    def _labels_on_grid(self, image: np.ndarray, factor: float) -> np.ndarray:
        """Labels of ``image`` segmented after resizing it by ``factor``, on the image's own grid."""
        if factor == 1.0:
            return self._labels_at(image, 1.0)
        return labels_on_grid(self.probabilities(resize_raw(image, factor)), self.post, image.shape[:2],
                              targets=self.config.targets)

    def segment_with_diameter(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W) or (H, W, C) image to (labels, nucleus diameter in px used for scaling; 0 if unscaled)."""
        image = as_rgb(image)
        canonical = self.config.canonical_diameter
        if not canonical or self.diameter is None:
            return self._labels_at(image, 1.0), 0.0
        if self.diameter != "auto":
            diameter = float(self.diameter)
            return self._labels_on_grid(image, scale_factor(diameter, canonical)), diameter
        windows = sample_windows(image.shape[:2])
        whole = len(windows) == 1
        probes = [self._probe_diameter(image[w]) for w in windows]
        diameter = float(np.median([d for d, _ in probes]))
        factor = scale_factor(diameter, canonical)
        if factor == 1.0 and whole:
            return probes[0][1], diameter
        labels = self._labels_on_grid(image, factor)
        seen = median_diameter(labels)
        if scale_factor(seen, canonical) != 1.0 and seen > 0 and abs(np.log(seen / diameter)) > np.log(DEAD_BAND):
            diameter, factor = seen, scale_factor(seen, canonical)
            labels = self._labels_on_grid(image, factor)
        log.debug("nucleus diameter %.1f px: image resized x%.2f", diameter, factor)
        return labels, diameter

    def estimate_diameter(self, image: np.ndarray) -> float:
        """Median nucleus diameter (px) of an (H, W, 3) image, as ``diameter="auto"`` estimates it."""
        return self._probe_diameter(as_rgb(image))[0]

    def _probe_diameter(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """(diameter, labels at the image's own scale). The network sees nuclei much larger than its canonical
        size as fragments of 1.2-2x that size, never as whole nuclei; so while what it finds is larger than
        canonical, the image is halved and segmented again (down to 1/8). A halved look that finds clearly
        larger nuclei (x1.25, in full-size pixels), themselves at least canonical at that scale, means the finer
        one saw fragments: its reading replaces the estimate; one that does not ends the search (halving small
        nuclei merges them into blobs that read larger, hence the second condition). The halvings cost at most
        a third of the first pass. (A fixed cut-off at 1.25x canonical once sat right where fragments land,
        20-21 px at 16: a change of 1 px in the first reading flipped the estimate between 20 and 110 px.)"""
        native = self._labels_at(image, 1.0)
        diameter = median_diameter(native)
        factor = 1.0
        while diameter * factor > PROBE_LARGER * self.config.canonical_diameter and factor > MIN_PROBE:
            factor /= 2
            if min(image.shape[:2]) * factor < 64:
                break
            found = median_diameter(self._labels_at(image, factor)) / factor
            if not (found > COARSER_WINS * diameter and found * factor >= TRUSTED * self.config.canonical_diameter):
                break
            diameter = found
        return diameter, native

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) image to an (H, W) int32 label image (0 background, 1..N nuclei)."""
        return self.segment_with_diameter(image)[0]

    def with_options(self, **changes) -> "Segmenter":
        return replace(self, **changes)


def load_model(run_dir: str | Path | None = None, tta: bool | None = None, backend: str = "onnx",
               device: str = "auto", threads: int | None = None, precision: str = "auto") -> Segmenter:
    """Load a trained model folder (default: the bundled model). ``tta=None`` uses the model's own default.

    ``backend`` "onnx" runs the folder's ``model.onnx`` with onnxruntime (no torch needed); "torch" rebuilds
    the network from its weights. ``device``: auto (a GPU when there is one), cpu or cuda. ``threads``: CPU
    threads for the network (default: all cores). ``precision`` (onnx backend): auto runs the folder's int8
    network (``model.int8.onnx``) on the CPU when it has an up-to-date one, else fp32; fp32 or int8 force one.
    """
    from .checkpoint import load_settings

    folder, config, post = load_settings(run_dir)
    if backend == "onnx":
        from .export import onnx_runner

        runner: Runner = onnx_runner(folder, device, threads, precision)
    elif backend == "torch":
        runner = torch_runner(folder, device, threads)
    else:
        raise NucleisegError(f"unknown backend {backend!r}: choose onnx or torch")
    use_tta = post.tta if tta is None else tta
    return Segmenter(runner, config, post, tta=bool(use_tta))


def segment(image: np.ndarray, model: Segmenter | None = None) -> np.ndarray:
    """Segment one image array with ``model`` (default: the bundled model)."""
    return (model or load_model()).segment(image)
