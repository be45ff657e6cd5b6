"""The napari plugin as a user meets it: discovered by napari, sample opened, widgets run in a real viewer.

Runs with QT_QPA_PLATFORM=offscreen; napari's canvas needs OpenGL, which Qt's offscreen platform takes from
an X display, so a virtual one (Xvfb) is started when there is no DISPLAY. Without napari the module is
skipped; without Xvfb it is skipped too, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


@pytest.fixture(scope="session", autouse=True)
def _headless_display():
    """Qt offscreen, with a virtual X display for OpenGL when there is none.

    Xvfb stays up until this process has exited (a shell waits for it), so Qt never loses its display while
    the interpreter shuts down, and Xvfb never outlives the tests by more than a second.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if os.environ.get("DISPLAY"):
        yield
        return
    if shutil.which("Xvfb") is None:
        message = "napari tests need an X display for OpenGL: apt-get install xvfb"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    display = f":{100 + os.getpid() % 800}"
    watchdog = (f"Xvfb {display} -screen 0 1600x1000x24 -nolisten tcp & x=$!; "
                f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill $x")
    subprocess.Popen(["sh", "-c", watchdog], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    for _ in range(50):  # the server is up once its socket exists
        if os.path.exists(f"/tmp/.X11-unix/X{display[1:]}"):
            break
        time.sleep(0.1)
    yield


def _wait(qtbot, widget, timeout_s: float) -> None:
    """Wait for the widget's worker thread to finish."""
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.worker.is_running and widget._run.enabled,
                    timeout=int(timeout_s * 1000))


def test_plugin_is_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("nucleiseg")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Segment nuclei", "Fine-tune on these labels"]
    assert {s.key for s in manifest.contributions.sample_data} == {"fluorescence", "histology"}


def test_sample_is_segmented_by_the_widget_like_the_api(make_napari_viewer, qtbot):
    import nucleiseg

    viewer = make_napari_viewer()
    viewer.open_sample("nucleiseg", "fluorescence")
    image_layer = viewer.layers["nuclei (fluorescence)"]
    assert image_layer.data.shape == (520, 696)
    _, widget = viewer.window.add_plugin_dock_widget("nucleiseg", "Segment nuclei")
    assert widget._image.value is image_layer
    widget.start()
    _wait(qtbot, widget, 120)
    labels = viewer.layers["nuclei (fluorescence) nuclei"].data
    expected = nucleiseg.load_model().segment(image_layer.data)
    n = len(np.unique(expected)) - 1
    assert n > 10 and len(np.unique(labels)) - 1 == n
    points = viewer.layers["nuclei (fluorescence) centroids"]
    assert len(points.data) == n and "area" in points.features
    assert widget._status.value.startswith(f"{n} nuclei")


def test_finetune_widget_offers_its_model_to_the_segment_widget(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("torch")
    from nucleiseg.data import list_dataset, load_item
    from nucleiseg.napari._sample import HISTOLOGY, SAMPLE

    item = next(it for it in list_dataset(SAMPLE) if it.image_id == HISTOLOGY)
    image, truth = load_item(item)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="he", rgb=True)
    viewer.add_labels(truth, name="corrected")
    _, segment = viewer.window.add_plugin_dock_widget("nucleiseg", "Segment nuclei")
    _, tune = viewer.window.add_plugin_dock_widget("nucleiseg", "Fine-tune on these labels")
    assert tune._labels.value is viewer.layers["corrected"]
    tune._out.value = tmp_path / "mine"
    tune.changes = {"epochs": 1, "samples_per_epoch": 8}
    tune.start()
    _wait(qtbot, tune, 300)
    assert (tmp_path / "mine" / "model.safetensors").is_file(), tune._status.value
    assert (tmp_path / "mine" / "training_data" / "labels" / "he.tif").is_file()
    assert segment._model.value == str((tmp_path / "mine").resolve())
    assert "validation DSB" in tune._status.value


def test_reader_opens_label_tiffs_only(tmp_path):
    import tifffile

    from nucleiseg import write_labels
    from nucleiseg.napari._reader import get_reader

    labels = np.zeros((64, 64), np.int32)
    labels[5:15, 5:15], labels[30:40, 20:30] = 1, 2
    write_labels(tmp_path / "labels.tif", labels)
    layers = get_reader(str(tmp_path / "labels.tif"))(str(tmp_path / "labels.tif"))
    data, meta, kind = layers[0]
    assert kind == "labels" and meta["name"] == "labels" and np.array_equal(data, labels)
    camera = (np.random.default_rng(0).normal(1000, 30, (64, 64))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "camera.tif", camera)
    assert get_reader(str(tmp_path / "camera.tif")) is None
    assert get_reader(str(tmp_path / "image.png")) is None
