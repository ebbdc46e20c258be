"""UnivFD (Ojha et al., CVPR 2023): a linear probe on the CLIP ViT-L/14 image embedding.

Score = sigmoid(Linear(768 -> 1) on encode_image). Released head: ``fc_weights.pth``; the
backbone is OpenAI's CLIP ViT-L/14 (see weights/manifest.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .backbone import ClipVisionTower, split_in_proj
from .checkpoints import CheckpointError
from .clip_weights import openai_vision, strip_module_prefix
from .config import ModelConfig, get_config
from .registry import CheckpointFormat, ConvertOptions, Family, register_family


class UnivFD(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ClipVisionTower(cfg.vision, pooled=True)
        self.backbone.requires_grad_(False)
        self.fc = nn.Linear(cfg.vision.output_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (B, output_dim) the head scores: CLIP's image embedding."""
        return self.backbone.embed(x)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B,) from embeddings."""
        return self.fc(embedding).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


# --------------------------------------------------------------------------------------------
# The authors' release: fc_weights.pth (the head) + OpenAI's CLIP (open_clip / OpenAI layout)


def convert_univfd(
    head: Mapping[str, torch.Tensor],
    clip: Mapping[str, torch.Tensor],
    *,
    heads: int | None = None,
    source: str = "checkpoint",
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """UnivFD from its released head ``{'weight': (1, D), 'bias': (1,)}`` and an OpenAI CLIP.

    ``clip`` is a full CLIP state dict in OpenAI / open_clip layout (``visual.*``; text keys are
    ignored). Fused attention projections are split into q/k/v.
    """
    if set(head) != {"weight", "bias"}:
        raise CheckpointError(f"{source}: UnivFD head must hold exactly 'weight' and 'bias', found {sorted(head)}")
    clip = strip_module_prefix(clip)
    vision = openai_vision(clip, heads, source)
    full = get_config("univfd-vit-l-14")
    cfg = replace(full, name=full.name if vision == full.vision else "univfd-custom", vision=vision)
    visual = {k: v for k, v in clip.items() if k.startswith("visual.")}
    if "visual.attnpool.c_proj.weight" in visual or "visual.layer1.0.conv1.weight" in visual:
        raise CheckpointError(f"{source}: a ResNet CLIP; UnivFD needs a ViT backbone")
    out = {"backbone." + k: v for k, v in split_in_proj(visual, "visual.").items()}
    out["fc.weight"], out["fc.bias"] = head["weight"], head["bias"]
    return cfg, out


def _convert(
    obj: Mapping[str, Any], options: ConvertOptions, source: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    if "backbone" not in options.companions:
        raise CheckpointError(f"{source}: a UnivFD head alone; it needs the CLIP backbone: use --model univfd")
    return convert_univfd(obj, options.companions["backbone"], source=source)


register_family(
    Family(
        arch="univfd",
        kind="detector",
        build=UnivFD,
        formats=(
            CheckpointFormat(
                name="univfd",
                recognise=lambda obj: set(obj) == {"weight", "bias"},
                convert=_convert,
                companions=lambda obj: ("backbone",),
                main_role="head",
                trained_on="as released by the authors (ProGAN, per the paper)",
            ),
        ),
    )
)
