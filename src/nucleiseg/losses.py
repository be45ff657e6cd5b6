"""Losses on logits: binary cross-entropy, optionally plus soft Dice per channel."""

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


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``bce`` (the seed's loss) or ``bce_dice``."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if kind == "bce_dice":
        loss = loss + soft_dice_loss(logits, target)
    return loss
