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


def test_real_network_tiles_agree_closely(disc_image):
    image, _ = disc_image
    config = preset("tiny")
    torch.manual_seed(0)
    model = UNet(config.model).eval()
    whole = predict_probabilities(TorchRunner(model), image, config, tile=1024)
    tiled = predict_probabilities(TorchRunner(model), image, config, tile=128, overlap=48)
    assert whole.shape == tiled.shape == (2, 300, 380)
    assert np.abs(whole - tiled).mean() < 0.01


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
