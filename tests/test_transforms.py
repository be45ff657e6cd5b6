"""Intensity normalisation: statistics come from whole pixels, whatever the image size."""

import numpy as np
import pytest

from nucleiseg.transforms import normalize, percentiles


def _green_nuclei(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dim-background grey image with bright squares covering ~5 % of it, and its RGB copy with the
    signal in the green channel only."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 30, size=(side, side), dtype=np.uint8)
    for y in range(0, side - 40, side // 5):
        for x in range(0, side - 40, side // 5):
            grey[y:y + side // 22, x:x + side // 22] = 240
    rgb = np.zeros((side, side, 3), np.uint8)
    rgb[..., 1] = grey
    return grey, rgb


@pytest.mark.parametrize("side", [1024, 1100, 1500, 2000])
def test_percentiles_of_large_rgb_images_match_the_exact_ones(side):
    # 1024x1024x3 = 3.1 M values: the old stride over interleaved values was 3 and saw the red channel only
    _, rgb = _green_nuclei(side)
    exact = np.percentile(rgb, (1.0, 99.8))
    lo, hi = percentiles(rgb)
    assert hi == pytest.approx(exact[1], abs=2) and hi > 200
    assert lo == pytest.approx(exact[0], abs=2)


def test_green_channel_image_normalises_nuclei_to_one():
    grey, rgb = _green_nuclei(1024)
    y = x = 10
    assert grey[y, x] == 240
    assert normalize(rgb, "percentile")[y, x, 1] == pytest.approx(1.0, abs=0.05)


def test_bundled_model_finds_the_same_nuclei_in_a_green_rgb_copy():
    """The reported defect: a 1024x1024 RGB fluorescence image with the signal in green found 1 nucleus."""
    import nucleiseg
    from conftest import SAMPLE

    image = nucleiseg.read_image(SAMPLE / "2c83c86dd4e5dacc024b55629375567fb8e320a82ef86f541cfe54764040fc25"
                                 / "images" / "2c83c86dd4e5dacc024b55629375567fb8e320a82ef86f541cfe54764040fc25.png")
    grey = image[..., :3].mean(axis=-1).astype(np.uint8)
    reps = (-(-1024 // grey.shape[0]), -(-1024 // grey.shape[1]))
    grey = np.tile(grey, reps)[:1024, :1024]
    rgb = np.zeros(grey.shape + (3,), np.uint8)
    rgb[..., 1] = grey
    model = nucleiseg.load_model()
    n_grey = int(model.segment(grey).max())
    n_green = int(model.segment(rgb).max())
    assert n_grey >= 8
    assert abs(n_green - n_grey) <= max(2, 0.1 * n_grey)
