"""The "Segment nuclei" dock widget: image layer in, Labels layer (and centroids with measurements) out."""

from __future__ import annotations

from collections.abc import Iterator
from napari.layers import Image
from napari.viewer import Viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, create_widget

from ._layers import image_array
from ._models import MODELS, model_dir

_LOADED: dict[str | None, object] = {}  # loaded models by folder, so a second run starts at once


def _load(folder: str | None):
    if folder not in _LOADED:
        from ..segmenter import load_model

        _LOADED[folder] = load_model(folder)
    return _LOADED[folder]


def segment_steps(image: np.ndarray, folder: str | None, diameter: float, tta: bool,
                  measure: bool) -> Iterator[str | dict]:
    """Load the model, segment and measure, yielding a status line before each step; the last item is the
    result: labels, the diameter used, and the measurements (or None)."""
    yield "loading the model"
    seg = _load(folder).with_options(tta=tta, diameter=diameter or "auto")
    yield "segmenting"
    labels, used = seg.segment_with_diameter(image)
    table = None
    if measure:
        yield "measuring"
        from ..measure import measure as measure_nuclei

        table = measure_nuclei(labels, image, used)
    yield {"labels": labels, "diameter": used, "table": table}


class SegmentWidget(Container):
    """Segment the chosen image layer with the bundled model or a model folder, in a worker thread."""

    STEPS = 4

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._image = create_widget(annotation=Image, label="image")
        self._model = ComboBox(label="model", choices=MODELS.choices)
        self._folder = FileEdit(label="model folder", mode="d", tooltip="add a trained model folder to the list")
        self._diameter = FloatSpinBox(label="diameter (px)", min=0, max=1000, step=1, value=0,
                                      tooltip="nucleus diameter in pixels; 0: estimate it from the image")
        self._tta = CheckBox(text="test-time augmentation (8x slower)")
        self._points = CheckBox(text="add centroids with measurements", value=True)
        self._run = PushButton(text="Segment")
        self._progress = ProgressBar(min=0, max=self.STEPS, value=0, visible=False)
        self._status = Label(value="")
        self.extend([self._image, self._model, self._folder, self._diameter, self._tta, self._points, self._run,
                     self._progress, self._status])
        self._folder.changed.connect(self._add_folder)
        self._run.changed.connect(self.start)
        MODELS.added.connect(self._offer)
        self.native.destroyed.connect(lambda *_: MODELS.added.disconnect(self._offer))  # viewer closed

    def _add_folder(self) -> None:
        folder = self._folder.value
        if folder and folder.is_dir() and str(folder) not in (".", ""):
            MODELS.add(folder)

    def _offer(self, folder: str) -> None:
        """A new model (picked or fine-tuned): list it and select it."""
        self._model.reset_choices()
        self._model.value = folder

    def start(self) -> None:
        """Segment the chosen image in a worker thread; the layers are added when it returns."""
        from napari.qt.threading import create_worker

        from ..errors import NucleisegError

        layer = self._image.value
        if layer is None:
            self._status.value = "choose an image layer"
            return
        try:
            image = image_array(layer)
        except NucleisegError as exc:
            self._status.value = str(exc)
            return
        self.worker = create_worker(segment_steps, image, model_dir(self._model.value), float(self._diameter.value),
                                    bool(self._tta.value), bool(self._points.value))
        self.worker.yielded.connect(lambda item: self._step(layer, item))
        self.worker.errored.connect(lambda exc: setattr(self._status, "value", f"error: {exc}"))
        self.worker.finished.connect(self._done)
        self._run.enabled = False
        self._progress.value, self._progress.visible = 0, True
        self.worker.start()

    def _step(self, layer, item: str | dict) -> None:
        self._progress.value = min(self.STEPS, self._progress.value + 1)
        if isinstance(item, str):
            self._status.value = f"{item}..."
        else:
            self._show(layer, **item)

    def _done(self) -> None:
        self._run.enabled = True
        self._progress.visible = False

    def _show(self, layer, labels: np.ndarray, diameter: float, table: dict | None) -> None:
        """Add (or update) the labels and centroid layers beside the image layer."""
        scale, translate = layer.scale[-2:], layer.translate[-2:]
        name = f"{layer.name} nuclei"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=scale, translate=translate)
        if table is not None:
            points = np.stack([table["centroid_y"], table["centroid_x"]], axis=1) if len(table["label"]) else np.zeros((0, 2))
            pname = f"{layer.name} centroids"
            if pname in self.viewer.layers:
                self.viewer.layers.remove(pname)
            self.viewer.add_points(points, name=pname, features=table, size=max(3.0, (diameter or 10) / 4),
                                   face_color="yellow", scale=scale, translate=translate, visible=True)
        size = f", nucleus diameter {diameter:.1f} px" if diameter else ""
        self._status.value = f"{len(np.unique(labels)) - 1} nuclei{size}"
