"""One factory for every forensix model: config in, module out (the family's builder, models/registry.py)."""

from __future__ import annotations

from torch import nn

from .config import ModelConfig
from .lora import add_lora


def create_model(cfg: ModelConfig, *, with_lora: bool = False) -> nn.Module:
    """Build the model ``cfg`` describes, with random weights.

    ``with_lora`` wraps the backbone's q/k/v projections in trainable LoRA layers (config's r,
    alpha, dropout; the attributor's backbone is the whole CLIP: both towers). Build under
    ``torch.device("meta")`` to skip initialisation before a load.
    """
    model = cfg.family.build(cfg)
    if with_lora:
        if cfg.lora is None:
            raise ValueError(f"config {cfg.name!r} has no LoRA settings")
        add_lora(model.backbone, cfg.lora)
    return model
