import pytest
import torch

from nucleiseg.config import ModelConfig, TrainConfig, preset
from nucleiseg.errors import NucleisegError
from nucleiseg.model import UNet


def test_seed_preset_reproduces_the_seed_network():
    config = preset("seed")
    model = UNet(config.model)
    assert [b.block[0].out_channels for b in model.down] == [16, 32, 64, 128, 256]
    # the first up-convolution has 128 filters (the seed script's 32 was a slip)
    assert model.up[0].up.out_channels == 128
    assert [u.up.out_channels for u in model.up] == [128, 64, 32, 16]
    assert [b.block[3].p for b in model.down] == [0.1, 0.1, 0.2, 0.2, 0.3]
    assert config.input_size == 128 and config.batch_size == 32 and config.epochs == 25
    assert config.normalization == "scale255" and config.optimizer == "adam" and config.lr == 1e-3
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_900_000 < n_params < 2_000_000  # the seed U-Net has about 1.94 M parameters


@pytest.mark.parametrize("name", ["seed", "default", "tiny"])
def test_forward_shape(name):
    config = preset(name)
    model = UNet(config.model).eval()
    x = torch.zeros(2, 3, 2 * model.stride, 3 * model.stride)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, config.model.out_channels, 2 * model.stride, 3 * model.stride)


def test_config_roundtrip_and_validation():
    config = preset("default")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(NucleisegError, match="unknown preset"):
        preset("huge")
    with pytest.raises(NucleisegError, match="norm"):
        ModelConfig(norm="layer")
    with pytest.raises(NucleisegError, match="multiple"):
        TrainConfig(input_size=100)
    with pytest.raises(NucleisegError, match="out_channels"):
        TrainConfig(targets="body_border")


def test_overrides_are_typed_and_validated():
    from nucleiseg.config import override

    config = override(preset("default"), ["augment=false", "model.widths=8,16,32,64,128", "lr=0.01"])
    assert config.augment is False and config.model.widths == (8, 16, 32, 64, 128) and config.lr == 0.01
    with pytest.raises(NucleisegError, match="unknown setting"):
        override(config, ["colour=red"])
    with pytest.raises(NucleisegError, match="invalid value"):
        override(config, ["epochs=many"])
    with pytest.raises(NucleisegError, match="same number of levels"):
        override(config, ["model.widths=8,16"])
