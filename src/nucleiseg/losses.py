"""Losses on logits: binary cross-entropy, optionally plus soft Dice on chosen channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice per channel over the batch, averaged over channels."""
    prob = torch.sigmoid(logits)
    dims = (0, 2, 3)
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str,
                      dice_channels: tuple[int, ...] | None = None) -> torch.Tensor:
    """``bce`` (the seed's loss) or ``bce_dice``: Dice on ``dice_channels`` (default: all channels)."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if kind == "bce_dice":
        if dice_channels is not None and len(dice_channels) < logits.shape[1]:
            index = list(dice_channels)
            logits, target = logits[:, index], target[:, index]
        loss = loss + soft_dice_loss(logits, target)
    return loss
