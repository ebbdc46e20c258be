"""The CLIP ViT vision tower: open_clip's VisionTransformer with separate q/k/v projections.

open_clip builds OpenAI's layout (QuickGELU, pre-LayerNorm, class token) and fuses q, k and v
into one ``nn.MultiheadAttention.in_proj_weight``. DeeCLIP puts an independent LoRA on each of
q, k and v, so each block's attention is replaced by :class:`SplitQKVAttention`, whose three
``nn.Linear`` are what peft's standard LoRA layer wraps (docs/models.md explains the choice).
Weights in open_clip/OpenAI layout are split on load by :func:`split_in_proj`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.model import CLIPVisionCfg
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer
from torch import nn

from .config import ResNetConfig, VisionConfig


class SplitQKVAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v Linear layers and PyTorch SDPA.

    Called the way open_clip's ResidualAttentionBlock calls ``nn.MultiheadAttention``
    (batch first, returns ``(output, None)``), so it drops into open_clip's blocks unchanged.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        key = query if key is None else key
        value = key if value is None else value
        b, n, c = query.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, h, c // h).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c)), None


def split_attention(transformer: nn.Module, heads: int) -> None:
    """Give every block of an open_clip ``Transformer`` a :class:`SplitQKVAttention` (fresh weights)."""
    for block in transformer.resblocks:
        block.attn = SplitQKVAttention(transformer.width, heads)


def open_clip_vision_cfg(cfg: VisionConfig) -> CLIPVisionCfg:
    """open_clip's settings for an OpenAI-layout ViT of this size, for open_clip's ``CLIP`` (both towers).

    It describes the tower :class:`ClipVisionTower` builds (QuickGELU, LayerNorm): keep the two in step.
    """
    return CLIPVisionCfg(
        layers=cfg.layers,
        width=cfg.width,
        head_width=cfg.width // cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )


class ClipVisionTower(nn.Module):
    """CLIP ViT vision tower exposing the residual stream after any block.

    ``blocks`` is how many blocks are built and run (the rest of the tower is never built);
    ``pooled`` keeps ln_post and the projection for the CLIP image embedding.
    """

    def __init__(self, cfg: VisionConfig, blocks: int | None = None, pooled: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        # OpenAI's layout: QuickGELU, and open_clip's LayerNorm (computes in the input's dtype).
        visual = VisionTransformer(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=cfg.layers,
            heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            output_dim=cfg.output_dim,
            act_layer=QuickGELU,
            norm_layer=LayerNorm,
        )
        blocks = cfg.layers if blocks is None else blocks
        if not 1 <= blocks <= cfg.layers:
            raise ValueError(f"blocks must be in 1..{cfg.layers}, got {blocks}")
        if pooled and blocks != cfg.layers:
            raise ValueError("the pooled embedding needs every block")
        if not pooled:
            # Drop the blocks nobody reads, ln_post and the projection: never built, never run.
            visual.prune_intermediate_layers([blocks - 1], prune_norm=True, prune_head=True)
        split_attention(visual.transformer, cfg.heads)
        self.visual = visual
        self.pooled = pooled

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks)

    def hidden_states(self, x: torch.Tensor, indices: tuple[int, ...], class_token: bool = False) -> list[torch.Tensor]:
        """The tokens of ``hidden_states[i]`` for each i in ``indices`` (strictly increasing).

        transformers numbering: ``hidden_states[i]`` is the output of block i-1 (i >= 1: open_clip's
        ``forward_intermediates`` yields block outputs only, and no model reads the embeddings).
        Patch tokens (B, grid², width), or with ``class_token`` (B, 1 + grid², width), class token
        first. Blocks after the last requested one are not run.
        """
        increasing = bool(indices) and list(indices) == sorted(set(indices))
        if not (increasing and 1 <= indices[0] <= indices[-1] <= self.num_blocks):
            # open_clip would read 0 as block -1 (the last) and return unsorted indices in block order.
            raise ValueError(
                f"hidden states must be strictly increasing in 1..{self.num_blocks} (this tower's blocks), "
                f"got {list(indices)}"
            )
        out = self.visual.forward_intermediates(
            x,
            indices=[i - 1 for i in indices],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=class_token,
        )
        patches = out["image_intermediates"]
        if class_token:
            return [torch.cat(pair, dim=1) for pair in zip(out["image_intermediates_prefix"], patches)]
        return patches

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding: ln_post on the final class token, then the projection."""
        if not self.pooled:
            raise RuntimeError("this tower was built without ln_post and the projection")
        return self.visual(x)


class ResNetTower(nn.Module):
    """OpenAI CLIP's ModifiedResNet (open_clip's copy, same keys) up to the output of ``layer3``.

    ``layer4`` and the attention pool are never built: DeCLIP's ViT+RN50 localizer reads layer3 only.
    """

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # output_dim / heads / image_size only shape the attention pool, which is dropped at once.
        visual = ModifiedResNet(list(cfg.layers), output_dim=cfg.width * 32, heads=cfg.width // 2, width=cfg.width)
        del visual.layer4, visual.attnpool
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ``layer3`` map (B, 16·width, H/16, W/16)."""
        v = self.visual
        return v.layer3(v.layer2(v.layer1(v.stem(x.to(v.conv1.weight.dtype)))))


def split_in_proj(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Rewrite open_clip/OpenAI fused attention keys under ``prefix`` into q/k/v Linear keys.

    ``{prefix}transformer.resblocks.N.attn.in_proj_{weight,bias}`` (3W, ...) becomes
    ``...attn.{q,k,v}_proj.{weight,bias}``; every other key is returned unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        stem, _, kind = key.rpartition(".attn.in_proj_")
        if key.startswith(prefix) and stem and kind in ("weight", "bias"):
            if value.shape[0] % 3:
                raise ValueError(f"{key}: first dimension {value.shape[0]} is not divisible by 3")
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                out[f"{stem}.attn.{name}_proj.{kind}"] = part.clone()
        else:
            out[key] = value
    return out
