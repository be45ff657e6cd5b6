"""U-Net built from small modules; depth, widths, dropout and normalisation come from ``ModelConfig``."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class DoubleConv(nn.Module):
    """Two 3x3 convolutions with ReLU, optional normalisation, dropout between them (the seed's block)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float, norm: str) -> None:
        super().__init__()
        bias = norm == "none"
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Up(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation with the skip, then a DoubleConv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv = DoubleConv(out_ch + skip_ch, out_ch, dropout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, out, 2H, 2W)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net returning logits of shape (B, out_channels, H, W); H and W must be multiples of ``stride``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        w, d = config.widths, config.dropout
        self.down = nn.ModuleList()
        in_ch = config.in_channels
        for width, drop in zip(w, d):
            self.down.append(DoubleConv(in_ch, width, drop, config.norm))
            in_ch = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            Up(w[i + 1], w[i], w[i], d[i], config.norm) for i in reversed(range(len(w) - 1))
        )
        self.head = nn.Conv2d(w[0], config.out_channels, 1)
        self._init_weights()

    @property
    def stride(self) -> int:
        return self.config.stride

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                # He-normal as in the seed (Keras he_normal is a truncated normal; plain normal is close enough)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()  # bottleneck (B, w[-1], H/stride, W/stride)
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)  # (B, out_channels, H, W) logits
