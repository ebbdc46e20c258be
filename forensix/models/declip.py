"""DeCLIP (Smeu, Oneață, Oneață, WACV 2025): localizing the generated or inpainted regions of an image.

A frozen OpenAI CLIP ViT-L/14 vision tower is read at one block (the authors' ``feature_layer``
"layer20" = the output of 0-based block 20 = ``hidden_states[21]``; the blocks after it are never
built or run), and a decoder turns its 16x16 patch tokens into a 256x256 map of logits; per-pixel
P(fake) = sigmoid(logit). Decoders, with the authors' module layout so their ``fc.N.*`` keys load
one to one:

- ``conv-K``: 4 stages of K/4 x [Conv2d 5x5, BatchNorm2d, ReLU], each followed by a x2 bilinear
  upsampling (16 -> 256), then Conv2d(64 -> 1, 5x5) (:class:`ConvDecoder`);
- ``linear``: one logit per patch token, the 16x16 grid upsampled bicubically (:class:`LinearDecoder`);
- ``attention``: two CLIP residual attention blocks over all 257 tokens with the causal mask of
  the release, then the linear head (:class:`AttentionDecoder`).

Released weights: the authors' checkpoints (github.com/bit-ml/DeCLIP), ViT-L/14, ``layer20``,
``conv-20``, one per training set (Pluralistic, LaMa, RePaint-p2-9k, LDM, COCO-SD); each holds the
whole OpenAI CLIP next to the decoder. Import with
:func:`forensix.models.checkpoints.convert_declip`. Preprocessing: Resize((224, 224)) bilinear,
no crop, CLIP mean/std.

ViT+RN50 (``cfg.cnn``): OpenAI RN50's ``layer3`` map (B, 1024, 14, 14), resized bilinearly to the
ViT's 16x16 grid, is concatenated after the ViT's channels (2048 in all) and decoded by a conv
decoder whose final conv follows an Upsample(size=256), as the authors build it for any name with
"RN50". Its release holds only the decoder; the two backbones are OpenAI's CLIP weights. Not
implemented: the RN50-only and XceptionNet localizers (no released weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from .backbone import ClipVisionTower, ResNetTower
from .config import DecoderConfig, ModelConfig


def patch_tokens(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """The grid x grid patch tokens (B, grid², C) of hidden-state tokens with or without the class token."""
    n = tokens.shape[1]
    if n == grid * grid + 1:
        return tokens[:, 1:]
    if n == grid * grid:
        return tokens
    raise ValueError(f"expected {grid * grid} patch tokens (+1 class token), got {n} tokens")


def tokens_to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch tokens (B, grid², C), class token optional, as a feature map (B, C, grid, grid), row-major."""
    patches = patch_tokens(tokens, grid)
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], grid, grid)


class ConvDecoder(nn.Module):
    """``conv-K``: feature map (B, C, g, g) in, logits (B, g·2^S, g·2^S) out, S = len(channels).

    ``fc`` is one ``nn.Sequential`` in the authors' order, so its indices match their keys
    (conv-20: stage convs at 0, 3, ..., 12 | 16, ... | 32, ... | 48, ..., 60; final conv at 64).
    ``resize_to`` adds their Upsample(size) before the final conv (the RN50-based variants, whose
    final conv therefore sits one index later).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], convs: int, resize_to: int | None = None) -> None:
        super().__init__()
        per_stage = convs // len(channels)
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            for _ in range(per_stage):
                layers += [nn.Conv2d(width, out, kernel_size=5, padding=2), nn.BatchNorm2d(out), nn.ReLU()]
                width = out
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        if resize_to is not None:
            layers.append(nn.Upsample(size=(resize_to, resize_to), mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(width, 1, kernel_size=5, padding=2))
        self.fc = nn.Sequential(*layers)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(fmap).squeeze(1)


def _linear_map(fc: nn.Module, patches: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """One logit per patch token (B, grid², C) -> (B, grid, grid) -> bicubic to (B, size, size)."""
    logits = fc(patches).reshape(patches.shape[0], 1, grid, grid)
    # align_corners=False: F.interpolate's default, which the authors' call relies on.
    return F.interpolate(logits, size=(size, size), mode="bicubic", align_corners=False).squeeze(1)


class LinearDecoder(nn.Module):
    """``linear``: Linear(C -> 1) per patch token, then bicubic upsampling to ``mask_size``."""

    def __init__(self, width: int, grid: int, mask_size: int) -> None:
        super().__init__()
        self.grid, self.mask_size = grid, mask_size
        self.fc = nn.Sequential(nn.Linear(width, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return _linear_map(self.fc, patch_tokens(tokens, self.grid), self.grid, self.mask_size)


class AttentionDecoder(nn.Module):
    """``attention``: two OpenAI-layout CLIP blocks (``att1``, ``att2``), then the linear head.

    As released, the blocks run over all 1 + grid² tokens (class token first) with CLIP's *text*
    causal mask (token i attends to tokens 0..i), QuickGELU, and width/64 heads. Keys follow
    OpenAI's ResidualAttentionBlock (``attn.in_proj_weight``, ``ln_1``, ``mlp.c_fc``, ...).
    """

    def __init__(self, width: int, grid: int, mask_size: int) -> None:
        super().__init__()
        self.grid, self.mask_size = grid, mask_size
        heads = max(1, width // 64)
        self.att1 = ResidualAttentionBlock(width, heads, act_layer=QuickGELU)
        self.att2 = ResidualAttentionBlock(width, heads, act_layer=QuickGELU)
        self.fc = nn.Sequential(nn.Linear(width, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        if n != self.grid * self.grid + 1:
            raise ValueError(f"the attention decoder needs the class token and {self.grid**2} patch tokens, got {n}")
        # Built per call (not a buffer): a model built on the meta device would keep a meta buffer.
        mask = torch.full((n, n), float("-inf"), device=tokens.device).triu_(1)
        h = self.att2(self.att1(tokens, attn_mask=mask), attn_mask=mask)
        return _linear_map(self.fc, h[:, 1:], self.grid, self.mask_size)


def build_decoder(cfg: DecoderConfig, width: int, grid: int, resized: bool = False) -> nn.Module:
    """The decoder for ``width`` input channels; ``resized``: the RN50 variants' Upsample before the final conv."""
    if cfg.is_conv:
        return ConvDecoder(width, cfg.channels, cfg.convs, resize_to=cfg.mask_size if resized else None)
    if cfg.kind == "linear":
        return LinearDecoder(width, grid, cfg.mask_size)
    return AttentionDecoder(width, grid, cfg.mask_size)


class DeCLIP(nn.Module):
    """Frozen CLIP ViT read at one block (+ RN50 layer3) and a mask decoder; ``forward`` gives (B, S, S) logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.decoder is None:
            raise ValueError(f"config {cfg.name!r} has no decoder")
        self.cfg = cfg
        self.grid = cfg.vision.grid
        self.backbone = ClipVisionTower(cfg.vision, blocks=cfg.blocks_needed)
        self.backbone.requires_grad_(False)
        self.cnn = ResNetTower(cfg.cnn).requires_grad_(False) if cfg.cnn is not None else None
        width = cfg.vision.width + (cfg.cnn.channels if cfg.cnn is not None else 0)
        self.decoder = build_decoder(cfg.decoder, width, self.grid, resized=cfg.cnn is not None)

    @property
    def mask_size(self) -> int:
        return self.cfg.decoder.mask_size

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The feature block's output, class token first: (B, 1 + grid², width)."""
        (tokens,) = self.backbone.hidden_states(x, self.cfg.feature_layers, class_token=True)
        return tokens

    def forward_cnn(self, x: torch.Tensor) -> torch.Tensor:
        """ViT+RN50: RN50's layer3 map resized to the ViT grid (B, 1024, grid, grid), as the authors do."""
        assert self.cnn is not None
        return F.interpolate(self.cnn(x), size=(self.grid, self.grid), mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature block's patch tokens as a map (B, width, grid, grid), row-major, class token dropped
        (ViT+RN50: followed by the RN50 channels)."""
        fmap = tokens_to_map(self.forward_tokens(x), self.grid)
        return torch.cat([fmap, self.forward_cnn(x)], dim=1) if self.cnn is not None else fmap

    def forward_from_features(self, tokens: torch.Tensor, cnn_map: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits (B, S, S) from the feature block's hidden-state tokens (B, 1 + grid², width).

        For a caller that already ran the backbone. The conv and linear decoders also take the
        patch tokens alone (B, grid², width); the attention decoder needs the class token. ViT+RN50
        also needs ``cnn_map`` (:meth:`forward_cnn`).
        """
        if (cnn_map is None) != (self.cnn is None):
            raise ValueError("the RN50 map goes with (and only with) the ViT+RN50 localizer")
        if isinstance(self.decoder, ConvDecoder):
            fmap = tokens_to_map(tokens, self.grid)
            return self.decoder(torch.cat([fmap, cnn_map], dim=1) if cnn_map is not None else fmap)
        return self.decoder(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_features(self.forward_tokens(x), self.forward_cnn(x) if self.cnn is not None else None)
