"""UnivFD (Ojha et al., CVPR 2023): a linear probe on the CLIP ViT-L/14 image embedding.

Score = sigmoid(Linear(768 -> 1) on encode_image). Released head: ``fc_weights.pth``; the
backbone is OpenAI's CLIP ViT-L/14 (see weights/manifest.json).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import ClipVisionTower
from .config import ModelConfig


class UnivFD(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ClipVisionTower(cfg.vision, pooled=True)
        self.backbone.requires_grad_(False)
        self.fc = nn.Linear(cfg.vision.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone.embed(x)).squeeze(-1)
