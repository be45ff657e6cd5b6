import numpy as np
import pytest
import torch
from conftest import disc_labels

from nucleiseg.config import PostprocessConfig, preset
from nucleiseg.inference import predict_probabilities
from nucleiseg.metrics import dsb_score
from nucleiseg.model import UNet
from nucleiseg.postprocess import probabilities_to_labels
from nucleiseg.runners import TorchRunner


class BlurNet(torch.nn.Module):
    """A stand-in network with a small receptive field: logits = local mean of channel 0, scaled."""

    def forward(self, x):
        fg = torch.nn.functional.avg_pool2d(x[:, :1], 5, stride=1, padding=2, count_include_pad=False)
        return torch.cat([20 * (fg - 0.5), torch.full_like(fg, -10.0)], dim=1)


@pytest.fixture
def disc_image():
    rng = np.random.default_rng(0)
    discs = [(rng.uniform(8, 292), rng.uniform(8, 372), rng.uniform(4, 8)) for _ in range(60)]
    labels = disc_labels((300, 380), discs)
    image = np.where(labels > 0, 220, 10).astype(np.uint8)
    return np.stack([image] * 3, -1), labels


def test_tiled_and_untiled_prediction_give_the_same_instances(disc_image):
    image, truth = disc_image
    config = preset("release-0.1.0")
    whole = predict_probabilities(TorchRunner(BlurNet()), image, config, tile=1024)
    tiled = predict_probabilities(TorchRunner(BlurNet()), image, config, tile=128, overlap=32)
    np.testing.assert_allclose(whole, tiled, atol=5e-3)  # tile edges see padding, with tiny blend weight
    post = PostprocessConfig()
    a, b = probabilities_to_labels(whole, post), probabilities_to_labels(tiled, post)
    assert a.max() > 30 and dsb_score(a, b) == 1.0


# Tiles vs one pass with the bundled model, on images whose sides are multiples of the stride (so the one pass
# is not padded either): measured at overlap 64, max |difference| 0.37 (128-px tiles) and 0.53 (256-px tiles),
# mean <= 0.0017. The network's receptive field is 188 px, so a tile's outputs within 94 px of an inner tile
# edge differ from the one pass; only tiles that discard that halo before blending can match it.
# (inference.tile_grid: tiles drop 96 px at inner edges and start on multiples of the stride.)
TILE_MAX_DIFF = 0.02
TILE_MEAN_DIFF = 0.005


@pytest.fixture(scope="module")
def bundled_images():
    from conftest import SAMPLE

    import nucleiseg
    from nucleiseg.io import read_image

    seg = nucleiseg.load_model(tta=False)
    a = read_image(next(SAMPLE.glob("1631352d*/images/*.png")))  # 256 x 320 fluorescence
    b = read_image(next(SAMPLE.glob("2a1a294e*/images/*.png")))[:512, :512]  # crowded fluorescence
    return seg, [(img, seg.with_options(tile=4096).probabilities(img)) for img in (a, b)]


def tile_differences(bundled_images, tile: int) -> list[np.ndarray]:
    """|tiled - one pass| per image, with ``tile``-px tiles at the default overlap."""
    seg, pairs = bundled_images
    return [np.abs(seg.with_options(tile=tile).probabilities(image) - whole) for image, whole in pairs]


@pytest.mark.parametrize("tile", [128, 256])
def test_bundled_model_tiles_agree_with_one_pass_on_average(bundled_images, tile):
    assert all(d.mean() <= TILE_MEAN_DIFF for d in tile_differences(bundled_images, tile))


@pytest.mark.parametrize("tile", [128, 256])
def test_bundled_model_tiles_match_one_pass(bundled_images, tile):
    assert all(d.max() <= TILE_MAX_DIFF for d in tile_differences(bundled_images, tile))


def test_tta_is_exact_for_a_symmetric_network(disc_image):
    image, _ = disc_image
    config = preset("release-0.1.0")
    plain = predict_probabilities(TorchRunner(BlurNet()), image, config)
    tta = predict_probabilities(TorchRunner(BlurNet()), image, config, tta=True)
    np.testing.assert_allclose(plain, tta, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (17, 33)])
def test_tiny_images_are_padded_and_cropped_back(shape):
    config = preset("tiny")
    model = UNet(config.model).eval()
    prob = predict_probabilities(TorchRunner(model), np.zeros((*shape, 3), np.uint8), config)
    assert prob.shape == (2, *shape)


def test_resize_models_return_the_input_shape():
    config = preset("seed")
    model = UNet(config.model).eval()
    prob = predict_probabilities(TorchRunner(model), np.zeros((200, 150, 3), np.uint8), config)
    assert prob.shape == (1, 200, 150)
