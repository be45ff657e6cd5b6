"""The fp32 bundled model's median nucleus diameter read at full size and at half size (in full-size pixels),
against the truth, per image: the evidence for the rule of ``Segmenter._probe_diameter`` (a coarser reading
counts only when it is 1.25x larger and at least canonical at its scale).

Run: python bench/probe_readings.py   (DSB2018 validation histology images that read over 16 px, the
validation parts of monuseg2018_train, cpm15_he and aitslab_u2os, every 6th coelho2009_u2os image)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucleiseg.data import image_kind, list_dataset, load_item_cached, median_diameter, read_split, split_file
from nucleiseg.segmenter import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def val_items(folder: Path, name: str) -> list:
    ids = set(read_split(split_file(name)))
    return [it for it in list_dataset(folder) if it.image_id in ids]


def main() -> None:
    seg = load_model(precision="fp32")
    sets = {"dsb_histology": val_items(DATA / "dsb2018" / "stage1_train", "dsb2018"),
            "monuseg": val_items(DATA / "monuseg2018_train", "monuseg2018_train"),
            "cpm15": val_items(DATA / "cpm15_he", "cpm15_he"),
            "aitslab": val_items(DATA / "aitslab_u2os", "aitslab_u2os"),
            "coelho": list_dataset(DATA / "coelho2009_u2os")[::6]}
    for name, items in sets.items():
        for item in items:
            image, labels = load_item_cached(item)
            image = image[..., :3] if image.ndim == 3 else np.stack([image] * 3, -1)
            full = median_diameter(seg._labels_at(image, 1.0))
            if name == "dsb_histology" and (image_kind(image) != "histology" or full <= 16):
                continue
            half = median_diameter(seg._labels_at(image, 0.5)) / 0.5
            print(f"{name:14} true {median_diameter(labels):6.1f}  full size {full:6.1f}  half size {half:6.1f}  "
                  f"ratio {half / max(full, 1e-9):5.2f}", flush=True)


if __name__ == "__main__":
    main()
