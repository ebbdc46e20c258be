"""DeeCLIP (Keita et al. 2025, arXiv 2504.19876): CLIP ViT + LoRA + DeeFuser, image-level detection.

Frozen CLIP ViT-L/14 vision tower (LoRA on q/k/v), the residual stream after 12 blocks; the
DeeFuser lets the deep feature attend to the concatenated shallow ones; a per-token projection,
L2-normalised, averaged over tokens, and one logit. Score = sigmoid(logit) = P(fake).
Released weights: ``deeclip_weight_complete_with_lora_5.pth`` (see weights/manifest.json);
import with :func:`forensix.models.checkpoints.convert_deeclip`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ClipVisionTower
from .config import ModelConfig


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Single-head, parameter-free attention: softmax(q k^T / sqrt(d)) v."""
    return F.scaled_dot_product_attention(q, k, v)


class FuserMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, unlike CLIP's QuickGELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DeeFuser(nn.Module):
    """Fuses shallow tokens X (B, S, D) into deep tokens F (B, T, D); returns (B, T, D)."""

    def __init__(self, dim: int, hidden: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))
        self.mlp = FuserMLP(dim, hidden)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        nx = self.norm1(shallow)
        nf = self.norm2(deep)
        ca = self.mlp(_attend(nf, nx, nx))
        n = self.norm3(ca)
        sa = _attend(n, n, n)
        # The residual is on the normalised deep feature, as in the released model.
        return nf + self.gamma2 * (ca + self.gamma1 * sa)


class DeeCLIP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, dim = cfg.vision.width, cfg.vision.output_dim
        self.backbone = ClipVisionTower(cfg.vision, blocks=cfg.blocks_needed)
        self.backbone.requires_grad_(False)
        self.fuser = DeeFuser(width, cfg.fuser_hidden)
        self.proj = nn.Linear(width, dim)
        self.fc = nn.Linear(dim, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token L2-normalised embeddings E (B, T, output_dim): what the triplet loss sees."""
        *shallow, deep = self.backbone.hidden_states(x, self.cfg.feature_layers)
        fused = self.fuser(torch.cat(shallow, dim=1), deep)
        return F.normalize(self.proj(fused), dim=-1)

    def forward_head(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits (B,) from the token embeddings."""
        return self.fc(embeddings.mean(dim=1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
