"""Screenshot for the README: the Segment nuclei widget docked in napari with the segmented sample.

Run on an X display (e.g. Xvfb :99 & DISPLAY=:99 QT_QPA_PLATFORM=xcb python docs/napari_screenshot.py);
Qt's offscreen platform renders the OpenGL canvas black.
"""
import time
import warnings
warnings.filterwarnings("ignore")
import napari
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 820)
viewer.open_sample("nucleiseg", "fluorescence")
_, widget = viewer.window.add_plugin_dock_widget("nucleiseg", "Segment nuclei")
widget.start()
app = QApplication.instance()
t = time.time()
while widget.worker is None or widget.worker.is_running or not widget._run.enabled:
    app.processEvents(); time.sleep(0.05)
    if time.time() - t > 300: raise SystemExit("timeout")
viewer.layers["nuclei (fluorescence) centroids"].visible = False
viewer.layers.selection.active = viewer.layers["nuclei (fluorescence) nuclei"]
for _ in range(40):
    app.processEvents(); time.sleep(0.05)
from PIL import Image
viewer.reset_view()
for _ in range(20):
    app.processEvents(); time.sleep(0.05)
from napari._qt.dialogs.qt_notification import NapariQtNotification
for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
    toast.close()
for _ in range(20):
    app.processEvents(); time.sleep(0.05)
full = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False))
full.convert("RGB").save("docs/napari_widget.png", optimize=True)
print(widget._status.value)
viewer.close()
