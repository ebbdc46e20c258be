"""DeeCLIP's training loss: triplet loss on the token embeddings + 2 x BCE on the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """The authors' triplet loss on per-token embeddings (B, T, C).

    Their distance is the squared difference summed over the token axis, one value per channel
    (B, C); the hinge max(0, d(a, p) - d(a, n) + margin) is taken per channel and averaged.
    """
    d_pos = (anchor - positive).pow(2).sum(dim=1)
    d_neg = (anchor - negative).pow(2).sum(dim=1)
    return F.relu(d_pos - d_neg + margin).mean()


def deeclip_loss(
    embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, bce_weight: float = 2.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Triplet + ``bce_weight`` x BCE for a batch laid out ``[anchors, positives, negatives]`` (3B rows).

    Every logit is paired with its own image's label (the authors' script paired them in the wrong
    order for batch > 1).
    """
    if embeddings.shape[0] % 3:
        raise ValueError(f"a triplet batch has 3B rows, got {embeddings.shape[0]}")
    a, p, n = embeddings.chunk(3)
    triplet = triplet_loss(a, p, n, margin)
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return triplet + bce_weight * bce, {"triplet": triplet.item(), "bce": bce.item()}
