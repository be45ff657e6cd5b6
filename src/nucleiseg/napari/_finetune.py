"""The "Fine-tune on these labels" dock widget: an image and its (corrected) Labels layer in, a model out.

The pair is saved as a plain-layout training folder inside the new model folder, the chosen model is
fine-tuned on it in a worker thread (``nucleiseg.finetune``), and the result is offered in "Segment nuclei".
"""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import Any

from napari.layers import Image, Labels
from napari.viewer import Viewer
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox, create_widget

from ._layers import image_array, labels_array
from ._models import MODELS, model_dir


def default_out() -> Path:
    """A new folder for a fine-tuned model: ~/nucleiseg-models/finetuned-<date>-<time>."""
    return Path.home() / "nucleiseg-models" / time.strftime("finetuned-%Y%m%d-%H%M%S")


def save_pair(folder: Path, name: str, image: np.ndarray, labels: np.ndarray) -> Path:
    """Write an image and its labels as ``folder/images/<name>.tif`` + ``folder/labels/<name>.tif``."""
    import tifffile

    from ..io import write_labels

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "images" / f"{name}.tif", image)
    write_labels(folder / "labels" / f"{name}.tif", labels)
    return folder


def run_finetune(image: np.ndarray, labels: np.ndarray, name: str, out: Path, init: str | None,
                 minutes: float, changes: dict[str, Any]) -> Path:
    """Save the pair into ``out/training_data`` and fine-tune ``init`` on it into ``out``."""
    from ..finetune import finetune

    if (out / "model.safetensors").exists():
        from ..errors import NucleisegError

        raise NucleisegError(f"{out}: already holds a model; choose a new folder")
    data = save_pair(out / "training_data", name, image, labels)
    return finetune(data, out, init=init or "default", **{"time_limit": minutes * 60.0, **changes})


class _QueueHandler(logging.Handler):
    """Log records of the training (any thread) into a queue that the widget polls."""

    def __init__(self, lines: queue.Queue) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.put(record.getMessage())


class FinetuneWidget(Container):
    """Fine-tune a model on the chosen image and Labels layers in the background."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.changes: dict[str, Any] = {}  # extra fine-tuning settings (tests use a tiny schedule)
        self._image = create_widget(annotation=Image, label="image")
        self._labels = create_widget(annotation=Labels, label="labels")
        self._model = ComboBox(label="start from", choices=MODELS.choices)
        self._out = FileEdit(label="new model folder", mode="d", value=default_out())
        self._minutes = SpinBox(label="time limit (min)", min=1, max=240, value=9)
        self._run = PushButton(text="Fine-tune")
        self._progress = ProgressBar(min=0, max=0, visible=False)  # busy: the epochs' count is not known ahead
        self._status = Label(value="")
        self.extend([self._image, self._labels, self._model, self._out, self._minutes, self._run, self._progress,
                     self._status])
        self._run.changed.connect(self.start)
        MODELS.added.connect(self._refresh)
        self.native.destroyed.connect(lambda *_: MODELS.added.disconnect(self._refresh))  # viewer closed
        self._lines: queue.Queue = queue.Queue()
        self._handler = _QueueHandler(self._lines)
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        """Fine-tune in a worker thread; the new model is offered in "Segment nuclei" when it is done."""
        from napari.qt.threading import create_worker

        from ..errors import NucleisegError

        if self._image.value is None or self._labels.value is None:
            self._status.value = "choose an image layer and a Labels layer"
            return
        try:
            image = image_array(self._image.value)
            labels = labels_array(self._labels.value, image.shape)
        except NucleisegError as exc:
            self._status.value = str(exc)
            return
        out = Path(self._out.value)
        self.worker = create_worker(run_finetune, image, labels, self._image.value.name.replace("/", "_"), out,
                                    model_dir(self._model.value), float(self._minutes.value), dict(self.changes))
        self.worker.returned.connect(self._finished)
        self.worker.errored.connect(lambda exc: setattr(self._status, "value", f"error: {exc}"))
        self.worker.finished.connect(self._done)
        logging.getLogger("nucleiseg").addHandler(self._handler)
        logging.getLogger("nucleiseg").setLevel(min(logging.INFO, logging.getLogger("nucleiseg").getEffectiveLevel()))
        self._run.enabled = False
        self._progress.visible = True
        self._status.value = f"fine-tuning into {out}..."
        self._timer.start()
        self.worker.start()

    def _refresh(self, _folder: str) -> None:
        self._model.reset_choices()

    def _poll(self) -> None:
        while not self._lines.empty():
            self._status.value = self._lines.get_nowait()

    def _finished(self, out: Path) -> None:
        from ..history import read_history

        self._poll()
        MODELS.add(out)
        best = max((float(r["val_dsb"]) for r in read_history(out / "history.csv")), default=float("nan"))
        self._status.value = (f"done: {out.name}, validation DSB {best:.3f} (on the training image); "
                              "selected in Segment nuclei")
        self._out.value = default_out()

    def _done(self) -> None:
        self._timer.stop()
        logging.getLogger("nucleiseg").removeHandler(self._handler)
        self._run.enabled = True
        self._progress.visible = False
