import os

import numpy as np
import pytest
import tifffile
from conftest import SAMPLE, disc_labels, write_dsb_folder
from PIL import Image

from nucleiseg.data import (
    image_kind,
    list_dataset,
    list_inputs,
    load_item,
    load_item_cached,
    train_val_split,
)
from nucleiseg.errors import InputError, NucleisegError
from nucleiseg.io import read_image, read_labels, write_labels


def test_dsb_layout_merges_masks_into_instances(synthetic_dsb):
    items = list_dataset(synthetic_dsb)
    assert [it.image_id for it in items] == [f"img{i}" for i in range(6)]
    image, labels = load_item(items[0])
    assert image.shape == (64, 64, 3) and labels.shape == (64, 64)
    assert labels.max() == len(items[0].masks)


def test_plain_layout_with_tiff_labels(tmp_path):
    labels = disc_labels((32, 40), [(10, 10, 5), (20, 30, 6)])
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((32, 40), 100, np.uint8)).save(tmp_path / "images" / "a.png")
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels.astype(np.uint16))
    (item,) = list_dataset(tmp_path)
    image, read = load_item(item)
    assert image.shape == (32, 40, 3)
    np.testing.assert_array_equal(read, labels)


@pytest.mark.parametrize("mode,channels", [("RGBA", 4), ("RGB", 3), ("L", 1)])
def test_read_image_modes_give_rgb(tmp_path, mode, channels):
    arr = np.random.default_rng(0).integers(0, 255, (10, 12, channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(), mode=mode).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], arr[..., 0])


def test_read_16bit_tiff(tmp_path):
    arr = np.random.default_rng(0).integers(0, 65535, (10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", arr)
    image = read_image(tmp_path / "x.tif")
    assert image.dtype == np.uint16 and image.shape == (10, 12, 3)


def test_mask_of_other_size_names_the_file(tmp_path):
    d = write_dsb_folder(tmp_path, "a", np.zeros((20, 20, 3), np.uint8), disc_labels((20, 20), [(10, 10, 4)]))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(d / "masks" / "wrong.png")
    (item,) = list_dataset(tmp_path)
    with pytest.raises(InputError, match="wrong.png.*differs"):
        load_item(item)


def test_dsb_folder_without_masks_is_an_error(tmp_path):
    (tmp_path / "a" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "images" / "a.png")
    with pytest.raises(InputError, match="masks"):
        list_dataset(tmp_path)
    assert len(list_inputs([tmp_path])) == 1  # prediction needs no masks


def test_cache_hit_and_miss_return_the_same_arrays(synthetic_dsb, tmp_path):
    item = list_dataset(synthetic_dsb)[0]
    miss = load_item_cached(item, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    hit = load_item_cached(item, tmp_path / "cache")
    for a, b, c in zip(miss, hit, load_item(item)):
        assert a.dtype == b.dtype == c.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert hit[1].dtype == np.int32


def test_cache_is_invalidated_by_a_same_size_edit_with_the_old_mtime(synthetic_dsb, tmp_path):
    item = list_dataset(synthetic_dsb)[0]
    _, first = load_item_cached(item, tmp_path / "cache")
    mask = item.masks[0]
    before = mask.stat()
    old = np.asarray(Image.open(mask)).copy()
    Image.fromarray(np.zeros_like(old)).save(mask)  # erase one nucleus
    blob = mask.read_bytes()
    mask.write_bytes(blob + b"\0" * (before.st_size - len(blob)))  # same size (PNG ignores trailing bytes)
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old modification time
    assert mask.stat().st_size == before.st_size and mask.stat().st_mtime_ns == before.st_mtime_ns
    _, changed = load_item_cached(item, tmp_path / "cache")
    assert (changed > 0).sum() < (first > 0).sum()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # stale entry replaced


def test_cache_is_invalidated_by_a_new_cache_version(synthetic_dsb, tmp_path, monkeypatch):
    import nucleiseg.data as data

    item = list_dataset(synthetic_dsb)[0]
    load_item_cached(item, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    monkeypatch.setattr(data, "CACHE_VERSION", data.CACHE_VERSION + 1)
    load_item_cached(item, tmp_path / "cache")
    (new,) = (tmp_path / "cache").glob("*.npz")
    assert new != entry


def test_image_kinds_of_bundled_sample():
    kinds = {it.image_id[:8]: image_kind(read_image(it.image)) for it in list_dataset(SAMPLE)}
    assert sorted(kinds.values()).count("histology") == 2
    assert sorted(kinds.values()).count("brightfield") == 1


def test_committed_split_is_used_for_dsb_ids():
    items = list_dataset(SAMPLE)
    train, val = train_val_split(items)
    assert len(val) == len(items) and not train  # every sample image comes from the validation split


def test_random_split_for_other_data(synthetic_dsb):
    train, val = train_val_split(list_dataset(synthetic_dsb), 0.5, seed=1)
    assert len(train) == 3 and len(val) == 3
    assert not {i.image_id for i in train} & {i.image_id for i in val}


def test_write_labels_roundtrip_and_dtype(tmp_path):
    labels = disc_labels((16, 16), [(8, 8, 4)])
    write_labels(tmp_path / "l.tif", labels)
    assert tifffile.imread(tmp_path / "l.tif").dtype == np.uint16
    np.testing.assert_array_equal(read_labels(tmp_path / "l.tif"), labels)
    big = np.arange(70000 * 1, dtype=np.int64).reshape(1, -1) + 1
    write_labels(tmp_path / "big.tif", big)
    assert tifffile.imread(tmp_path / "big.tif").dtype == np.uint32


def test_inputs_that_collide_on_name_are_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / sub / "x.png")
    with pytest.raises(NucleisegError, match="also used"):
        list_inputs([tmp_path / "a", tmp_path / "b"])


def test_a_single_dsb_image_folder_is_an_input(synthetic_dsb):
    items = list_inputs([synthetic_dsb / "img2"])
    assert [it.image_id for it in items] == ["img2"]
    assert items[0].image.name == "img2.png"
