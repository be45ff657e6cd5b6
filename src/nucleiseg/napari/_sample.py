"""Sample data: bundled DSB2018 validation images (never trained on) as napari image layers."""

from __future__ import annotations

from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample"
FLUORESCENCE = "2c83c86dd4e5dacc024b55629375567fb8e320a82ef86f541cfe54764040fc25"  # 520 x 696, 24 nuclei
HISTOLOGY = "1631352dbafb8a90f11219fffd3bea368a30bc3bad3bbe0e84e19bd720df4945"  # 256 x 320, 32 nuclei


def sample_path(image_id: str) -> Path:
    """The PNG of a bundled sample image."""
    return SAMPLE / image_id / "images" / f"{image_id}.png"


def _layer(image_id: str, name: str) -> list[tuple]:
    from ..io import read_image

    image = read_image(sample_path(image_id))
    grey = bool((image == image[..., :1]).all())  # fluorescence PNGs hold three equal channels
    data = image[..., 0] if grey else image
    return [(data, {"name": name, "rgb": not grey}, "image")]


def fluorescence() -> list[tuple]:
    """A fluorescence image of nuclei (DSB2018 validation split)."""
    return _layer(FLUORESCENCE, "nuclei (fluorescence)")


def histology() -> list[tuple]:
    """An H&E histology tile (DSB2018 validation split)."""
    return _layer(HISTOLOGY, "nuclei (H&E)")
