"""Reading label images: grey ids, and colour-coded instances (one colour per nucleus)."""

import numpy as np
import pytest
import tifffile
from conftest import disc_labels
from PIL import Image

from nucleiseg.io import read_labels
from nucleiseg.metrics import score_image

# three touching-free discs whose colours share the red value (and two share green too)
DISCS = [(10, 10, 5), (10, 30, 5), (30, 20, 6)]
COLOURS = [(200, 10, 10), (200, 10, 90), (200, 150, 10)]


def _colour_image(labels: np.ndarray, channels: int) -> np.ndarray:
    rgb = np.zeros((*labels.shape, channels), np.uint8)
    if channels == 4:
        rgb[..., 3] = 255
    for i, colour in enumerate(COLOURS, start=1):
        rgb[labels == i, :3] = colour
    return rgb


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_label_image_is_read_by_unique_colour(tmp_path, channels):
    truth = disc_labels((40, 40), DISCS)
    Image.fromarray(_colour_image(truth, channels)).save(tmp_path / "labels.png")
    labels = read_labels(tmp_path / "labels.png")
    assert labels.dtype == np.int32 and labels.max() == 3
    assert score_image(truth, labels)["dsb"] == 1.0  # same instances, whatever the ids


def test_transparent_pixels_are_background(tmp_path):
    truth = disc_labels((40, 40), DISCS)
    rgba = _colour_image(truth, 4)
    rgba[truth == 3, 3] = 0  # the third nucleus erased by transparency
    Image.fromarray(rgba).save(tmp_path / "labels.png")
    labels = read_labels(tmp_path / "labels.png")
    assert labels.max() == 2 and not labels[truth == 3].any()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_grey_labels_stored_as_rgb_keep_their_ids(tmp_path, suffix):
    truth = disc_labels((40, 40), DISCS) * 7  # ids 7, 14, 21
    rgb = np.stack([truth.astype(np.uint8)] * 3, -1)
    if suffix == ".png":
        Image.fromarray(rgb).save(tmp_path / f"labels{suffix}")
    else:
        tifffile.imwrite(tmp_path / f"labels{suffix}", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_labels(tmp_path / f"labels{suffix}"), truth)


def test_16_bit_colour_labels(tmp_path):
    truth = disc_labels((40, 40), DISCS)
    rgb = np.zeros((40, 40, 3), np.uint16)
    for i, colour in enumerate([(1000, 5, 5), (1000, 5, 6), (1000, 6, 5)], start=1):
        rgb[truth == i] = colour
    tifffile.imwrite(tmp_path / "labels.tif", rgb, photometric="rgb")
    assert score_image(truth, read_labels(tmp_path / "labels.tif"))["dsb"] == 1.0
