"""LoRA on the q/k/v projections through peft, and merging it away for inference."""

from __future__ import annotations

import peft
from peft.tuners.lora import LoraLayer
from torch import nn

from .config import LoraConfig

# Matches the q/k/v Linear layers of every block of a ClipVisionTower (and nothing else).
QKV_TARGETS = r".*resblocks\.\d+\.attn\.(q_proj|k_proj|v_proj)"


def add_lora(module: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Wrap every q/k/v projection under ``module`` in a peft LoRA layer (adapter "default").

    peft initialises B to zero, so the wrapped module computes exactly what it did before.
    """
    config = peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none", target_modules=QKV_TARGETS
    )
    return peft.inject_adapter_in_model(config, module)


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA layer into its base weight (W0 + alpha/r * B @ A) and unwrap it.

    Returns how many layers were merged; afterwards the module holds plain nn.Linear layers.
    """
    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in targets:
        layer.merge()
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, layer.get_base_layer())
    return len(targets)
