"""Several datasets at once, scale normalisation and the distance representation, on synthetic data."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from conftest import disc_labels, write_dsb_folder

from nucleiseg.config import PostprocessConfig, preset
from nucleiseg.data import DatasetSpec, median_diameter
from nucleiseg.errors import NucleisegError
from nucleiseg.metrics import dsb_score
from nucleiseg.representations import REPRESENTATIONS, distance_watershed, normalized_distance, representation
from nucleiseg.scale import DEAD_BAND, labels_to_shape, sample_windows, scale_factor


def test_scale_factor_dead_band_and_limits():
    assert scale_factor(20, 20) == 1.0
    assert scale_factor(20 * DEAD_BAND * 0.99, 20) == 1.0
    assert scale_factor(80, 20) == pytest.approx(0.25)
    assert scale_factor(5, 20) == pytest.approx(4.0)
    assert scale_factor(1, 20) == 4.0 and scale_factor(10_000, 20) == 0.1
    assert scale_factor(0, 20) == 1.0 and scale_factor(30, 0) == 1.0


def test_labels_to_shape_keeps_ids_and_drops_vanished_nuclei():
    labels = disc_labels((100, 100), [(30, 30, 10), (70, 70, 12), (10, 90, 0.5)])
    big = labels_to_shape(labels, (300, 300))
    assert big.shape == (300, 300) and big.max() == labels.max()
    small = labels_to_shape(labels, (20, 20))
    assert small.max() == 2 and set(np.unique(small)) == {0, 1, 2}


def test_shrunk_image_probabilities_are_decoded_on_the_full_resolution_grid():
    from nucleiseg.postprocess import decoding_grid, labels_on_grid
    from nucleiseg.representations import representation
    from nucleiseg.scale import resize_raw

    truth = disc_labels((240, 240), [(60, 60, 30), (60, 170, 25), (170, 110, 35)])
    small = labels_to_shape(truth, (80, 80))  # probabilities of the image shrunk 3x
    prob = representation("distance").make_target(small).astype(np.float32)
    grid, area = decoding_grid(prob, truth.shape)
    assert grid.shape == (3, 240, 240) and area == pytest.approx(9.0)
    post = PostprocessConfig(mask_threshold=0.5, seed_threshold=0.5, min_seed_size=2, min_size=10)
    fine = labels_on_grid(prob, post, truth.shape, targets="distance")
    blocky = labels_to_shape(distance_watershed(prob[0], prob[2], post), truth.shape)
    assert fine.max() == blocky.max() == 3
    # interpolated probabilities give outlines closer to the truth than nearest-neighbour labels
    assert ((fine > 0) != (truth > 0)).sum() < 0.8 * ((blocky > 0) != (truth > 0)).sum()
    # probabilities of an enlarged image are decoded at the network's scale and resized down
    big = representation("distance").make_target(labels_to_shape(truth, (480, 480))).astype(np.float32)
    assert decoding_grid(big, truth.shape)[1] == 1.0
    assert labels_on_grid(big, post, truth.shape, targets="distance").shape == truth.shape
    assert resize_raw(np.ones((4, 4, 3)), 1.0).shape == (4, 4, 3)


@pytest.mark.parametrize("shape", [(37, 53, 3), (120, 90, 3), (1, 9, 3), (64, 64, 1)])
@pytest.mark.parametrize("factor", [0.23, 0.5, 0.71, 1.6, 3.0])
def test_fast_resize_computes_what_skimage_and_scipy_do(shape, factor):
    from scipy.ndimage import zoom
    from skimage.transform import resize

    from nucleiseg.scale import linear_resize, resize_raw, scaled_shape

    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    out = scaled_shape(shape, factor)
    expected = resize(image, out + shape[2:], order=1, mode="reflect", anti_aliasing=factor < 1, preserve_range=True)
    np.testing.assert_allclose(resize_raw(image, factor), expected, atol=1e-3)
    prob = np.moveaxis(image, -1, 0) / 255
    expected = np.stack([zoom(c, (out[0] / shape[0], out[1] / shape[1]), order=1, mode="nearest", grid_mode=True)
                         for c in prob])
    np.testing.assert_allclose(linear_resize(prob, out, axes=(1, 2)), expected, atol=1e-5)


def test_sample_windows_cover_small_images_whole_and_sample_large_ones():
    assert sample_windows((500, 700)) == [(slice(0, 500), slice(0, 700))]
    windows = sample_windows((5000, 6000), size=1024)
    assert len(windows) == 4
    assert all(w[0].stop - w[0].start == 1024 for w in windows)


def test_median_diameter_of_discs():
    labels = disc_labels((200, 200), [(50, 50, 10), (150, 150, 10), (50, 150, 10)])
    assert median_diameter(labels) == pytest.approx(20, rel=0.05)
    assert median_diameter(np.zeros((5, 5), np.int32)) == 0.0


def test_normalized_distance_peaks_at_one_in_each_nucleus_even_when_touching():
    labels = disc_labels((60, 80), [(30, 25, 12), (30, 47, 12)])  # overlapping discs: they touch
    d = normalized_distance(labels)
    assert d[labels == 0].max() == 0
    for i in (1, 2):
        assert d[labels == i].max() == pytest.approx(1.0)
    # the valley between the two nuclei is low
    touching = (labels == 2) & np.roll(labels == 1, 1, axis=1)
    assert d[touching].max() <= 0.1


def test_distance_watershed_splits_touching_nuclei():
    truth = disc_labels((60, 90), [(30, 25, 12), (30, 47, 12), (30, 70, 9)])
    target = representation("distance").make_target(truth)
    labels = distance_watershed(target[0], target[2], PostprocessConfig(seed_threshold=0.5, min_seed_size=0, min_size=0))
    assert labels.max() == 3
    assert dsb_score(truth, labels) > 0.8


def test_every_representation_round_trips_its_own_target():
    truth = disc_labels((64, 64), [(20, 20, 8), (20, 34, 8), (48, 44, 10)])
    post = PostprocessConfig(mask_threshold=0.5, seed_threshold=0.6, border_threshold=0.5, min_seed_size=0, min_size=0)
    for rep in REPRESENTATIONS.values():
        target = rep.make_target(truth)
        assert target.shape == (rep.out_channels, 64, 64) and target.dtype == np.float32
        labels = rep.decode(target, post)
        expected = 2 if rep.name == "foreground" else 3  # foreground alone cannot split touching nuclei
        assert labels.max() == expected, rep.name


def test_unknown_representation_is_a_clear_error():
    with pytest.raises(NucleisegError, match="unknown target representation"):
        representation("flows")


def test_dataset_spec_parses_weights(tmp_path):
    assert DatasetSpec.parse(str(tmp_path)) == DatasetSpec(tmp_path, 1.0)
    assert DatasetSpec.parse(f"{tmp_path}:2.5") == DatasetSpec(tmp_path, 2.5)
    with pytest.raises(NucleisegError, match="weight"):
        DatasetSpec.parse(f"{tmp_path}:0")
    with pytest.raises(NucleisegError, match="DIR:WEIGHT"):
        DatasetSpec.parse(f"{tmp_path}:abc")


def _disc_set(root, n, radius, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
        discs = [(rng.uniform(12, 52), rng.uniform(12, 52), radius) for _ in range(3)]
        labels = disc_labels((64, 64), discs)
        image = np.where(labels > 0, 200, 20).astype(np.uint8)
        write_dsb_folder(root, f"{root.name}{i}", np.stack([image] * 3, -1), labels)
    return root


def test_training_on_two_datasets_records_both_and_scores_each(tmp_path, monkeypatch):
    from nucleiseg.train import train

    monkeypatch.setenv("NUCLEISEG_WORKERS", "0")
    small = _disc_set(tmp_path / "small", 4, 5, 0)
    large = _disc_set(tmp_path / "large", 4, 9, 1)
    config = dataclasses.replace(preset("tiny"), epochs=2, samples_per_epoch=8, targets="distance",
                                 model=dataclasses.replace(preset("tiny").model, out_channels=3),
                                 canonical_diameter=12.0, val_fraction=0.25)
    out = train([str(small), f"{large}:3"], tmp_path / "run", config)
    saved = json.loads((out / "config.json").read_text())
    assert [d["name"] for d in saved["datasets"]] == ["small", "large"]
    assert [d["weight"] for d in saved["datasets"]] == [1.0, 3.0]
    assert all(len(d["sha256"]) == 64 for d in saved["datasets"])
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"val_dsb_small", "val_dsb_large"} <= set(rows[0])
    mean = np.mean([float(rows[-1]["val_dsb_small"]), float(rows[-1]["val_dsb_large"])])
    assert float(rows[-1]["val_dsb"]) == pytest.approx(mean, abs=1e-4)


def test_sampling_weights_set_each_datasets_share(tmp_path):
    from nucleiseg.training_data import CropDataset

    pairs = [(np.full((64, 64, 3), v, np.uint8), np.zeros((64, 64), np.int32)) for v in (10, 10, 10, 250)]
    # three images of dataset A at weight 1, one of dataset B at weight 3: B should get half the samples
    config = dataclasses.replace(preset("tiny"), augment=False, normalization="scale255")
    data = CropDataset(pairs, config, 400, probabilities=np.array([1, 1, 1, 3.0]))
    share_b = np.mean([float(data[i][0].mean()) > 0.5 for i in range(400)])
    assert 0.42 < share_b < 0.58


def test_crops_are_rescaled_to_the_canonical_diameter():
    from nucleiseg.training_data import CropDataset

    labels = disc_labels((256, 256), [(64, 64, 20), (64, 192, 20), (192, 64, 20), (192, 192, 20)])
    image = np.where(labels > 0, 200, 20).astype(np.uint8)[..., None].repeat(3, -1)
    config = dataclasses.replace(preset("tiny"), augment=False, canonical_diameter=10.0, input_size=64)
    data = CropDataset([(image, labels)], config, 4, diameters=[median_diameter(labels)])
    _, target = data[0]
    fg = target[0].numpy() > 0.5
    from scipy import ndimage

    lab, n = ndimage.label(fg)
    sizes = np.bincount(lab.ravel())[1:]
    full = sizes[sizes > 0.8 * sizes.max()]
    assert np.sqrt(4 * np.median(full) / np.pi) == pytest.approx(10.0, rel=0.2)


def test_init_from_another_architecture_is_a_one_line_error(tmp_path):
    from nucleiseg.checkpoint import init_weights_from
    from nucleiseg.model import UNet

    with pytest.raises(NucleisegError, match="does not fit"):
        init_weights_from(UNet(preset("tiny").model), "default")


def test_init_copies_the_shared_head_channels():
    import torch

    from nucleiseg.checkpoint import default_model_dir, init_weights_from
    from nucleiseg.config import load_config
    from nucleiseg.model import UNet

    bundled = load_config(default_model_dir() / "config.json").model
    wider_head = dataclasses.replace(bundled, out_channels=bundled.out_channels + 1)
    model = UNet(wider_head)
    init_weights_from(model, None)
    from safetensors.torch import load_file

    state = load_file(str(default_model_dir() / "model.safetensors"))
    n = bundled.out_channels
    assert torch.equal(model.head.weight[:n], state["head.weight"])
    assert torch.equal(model.down[0].block[0].weight, state["down.0.block.0.weight"])


def test_validation_feeds_batches_to_the_models_device(monkeypatch):
    """A GPU run crashed at its first validation: CPU batches went to a model on the GPU. Here the model
    sits on the meta device (no data, any op works), so a CPU batch raises the same device error."""
    import torch

    import importlib

    train_module = importlib.import_module("nucleiseg.train")
    from nucleiseg.model import UNet
    from nucleiseg.training_data import CropDataset

    config = dataclasses.replace(preset("tiny"), augment=False)
    pairs = [(np.zeros((64, 64, 3), np.uint8), disc_labels((64, 64), [(32, 32, 8)]))]
    data = CropDataset(pairs, config, 2)
    model = UNet(config.model).to("meta")
    seen = []

    class Recorder:
        def loss(self, logits, target, kind):
            seen.append((logits.device.type, target.device.type))
            return torch.tensor(0.5)

    monkeypatch.setattr(train_module, "representation", lambda name: Recorder())
    assert train_module.validation_loss(model, config, [data[0], data[1]]) == pytest.approx(0.5)
    assert seen == [("meta", "meta")]


def _fragmenting_segmenter(diameter: float, fragment: float = 24.0):
    """A Segmenter whose stand-in "network" sees the image's nuclei (``diameter`` px at scale 1) whole while
    they are at most 30 px across at the scale it is run at, and as a grid of ``fragment``-px pieces when
    larger, as a network trained on 16-px nuclei does; returns (segmenter, scales it was run at)."""
    from nucleiseg.segmenter import Segmenter

    seen: list[float] = []

    class Fragmenting(Segmenter):
        def _labels_at(self, image, factor):
            seen.append(factor)
            h, w = max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor))
            d = diameter * factor
            size = d if d <= 30 else fragment
            step = int(size * 1.5) + 1  # a grid of discs, one per step x step cell
            yy, xx = np.mgrid[:h, :w]
            inside = (yy % step - step / 2) ** 2 + (xx % step - step / 2) ** 2 <= (size / 2) ** 2
            return np.where(inside, (yy // step) * (w // step + 1) + xx // step + 1, 0).astype(np.int32)

    class NoNetwork:
        def run(self, batch):
            raise AssertionError("not used")

    return Fragmenting(NoNetwork(), dataclasses.replace(preset("tiny"), canonical_diameter=16.0),
                       PostprocessConfig()), seen


@pytest.mark.parametrize("diameter", [8.0, 16.0, 26.0, 45.0, 110.0])
def test_auto_diameter_looks_coarser_while_nuclei_look_larger_than_canonical(diameter):
    seg, seen = _fragmenting_segmenter(diameter)
    estimate = seg.estimate_diameter(np.zeros((1024, 1024, 3), np.uint8))
    assert estimate == pytest.approx(diameter, rel=0.1)
    # small nuclei cost one pass; canonical ones at most one quarter-size look more; larger ones are looked
    # at again, coarser
    if diameter < 16:
        assert seen == [1.0]
    elif diameter == 16:
        assert seen in ([1.0], [1.0, 0.5])
    else:
        assert len(seen) > 1 and seen[-1] < 1


@pytest.mark.parametrize("fragment", [17.0, 19.5, 20.5, 28.0])
def test_auto_diameter_does_not_flip_on_the_size_of_fragments(fragment):
    """Fragments just under or just over 1.25x canonical (where a fixed cut-off once sat) give one answer."""
    seg, _ = _fragmenting_segmenter(110.0, fragment)
    assert seg.estimate_diameter(np.zeros((1024, 1024, 3), np.uint8)) == pytest.approx(110.0, rel=0.15)


def test_auto_diameter_stops_at_small_images():
    seg, seen = _fragmenting_segmenter(110.0)
    seg.estimate_diameter(np.zeros((200, 200, 3), np.uint8))
    assert min(seen) * 200 >= 64  # never segments a copy under 64 px
