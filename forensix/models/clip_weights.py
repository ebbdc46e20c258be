"""OpenAI CLIP checkpoints in the OpenAI / open_clip layout: what every CLIP-based family's translation shares.

Sizes are read from tensor shapes (heads = width / 64 unless given, as in every OpenAI CLIP), a
``module.`` prefix from DataParallel is dropped, and :func:`load_clip_backbone` copies a CLIP's
vision tower into a model's frozen ``backbone`` (and ``cnn``) before training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .backbone import split_in_proj
from .checkpoints import CheckpointError, load_weights
from .config import VisionConfig


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Checkpoints saved from DataParallel carry a leading ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def tensor_shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key}")
    return tuple(state[key].shape)


def vision_from_shapes(
    state: Mapping[str, torch.Tensor],
    *,
    cls: str,
    patch: str,
    pos: str,
    block: str,
    mlp: str,
    output_dim: int,
    heads: int | None,
    source: str,
) -> VisionConfig:
    """A ViT's size read from its tensors; ``block`` is a regex whose group 1 is the block index.

    heads = width / 64 unless given, as in every OpenAI CLIP.
    """
    (width,) = tensor_shape(state, cls, source)
    patch_size = tensor_shape(state, patch, source)[-1]
    tokens, _ = tensor_shape(state, pos, source)
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise CheckpointError(f"{source}: {tokens} position embeddings is not 1 + a square grid")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(block, k)))
    hidden, _ = tensor_shape(state, mlp, source)
    return VisionConfig(
        width=width,
        layers=depth,
        heads=heads or max(1, width // 64),
        patch_size=patch_size,
        image_size=grid * patch_size,
        mlp_ratio=hidden / width,
        output_dim=output_dim,
    )


def openai_vision(state: Mapping[str, torch.Tensor], heads: int | None, source: str) -> VisionConfig:
    return vision_from_shapes(
        state,
        cls="visual.class_embedding",
        patch="visual.conv1.weight",
        pos="visual.positional_embedding",
        block=r"visual\.transformer\.resblocks\.(\d+)\.",
        mlp="visual.transformer.resblocks.0.mlp.c_fc.weight",
        output_dim=tensor_shape(state, "visual.proj", source)[1],
        heads=heads,
        source=source,
    )


def visual_keys(clip: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of an OpenAI-layout CLIP state dict, in fp32 (the text tower is ignored)."""
    visual = {k: v.float() if v.is_floating_point() else v for k, v in strip_module_prefix(clip).items()}
    visual = {k: v for k, v in visual.items() if k.startswith("visual.")}
    if not visual:
        raise CheckpointError(f"{source}: no CLIP vision tower (visual.*) in this backbone file")
    return visual


def load_clip_backbone(
    model: nn.Module,
    clip: Mapping[str, torch.Tensor],
    cnn_clip: Mapping[str, torch.Tensor] | None = None,
    source: str = "CLIP weights",
) -> None:
    """Copy an OpenAI-layout CLIP's vision tower (open_clip's safetensors) into ``model.backbone``.

    ``cnn_clip`` is the RN50 CLIP for a ViT+RN50 localizer's ``model.cnn``. Only the blocks the
    model built are read; every backbone key the model has must be found, with its shape. Call it
    before LoRA is added (peft renames the wrapped weights).
    """
    parts = [("backbone", model.backbone, split_in_proj(visual_keys(clip, source), "visual."))]
    if cnn_clip is not None:
        parts.append(("cnn", model.cnn, visual_keys(cnn_clip, source)))
    for name, module, found in parts:
        # The file is a whole CLIP: the blocks the model never built, ln_post and the projection
        # (RN50: layer4 and the attention pool) are left out on purpose; the rest loads strictly.
        wanted = module.state_dict().keys()
        load_weights(module, {k: v for k, v in found.items() if k in wanted}, f"{source} ({name})")
