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
:func:`convert_declip` (the ``declip-official`` format). Preprocessing: Resize((224, 224)) bilinear,
no crop, CLIP mean/std.

ViT+RN50 (``cfg.cnn``): OpenAI RN50's ``layer3`` map (B, 1024, 14, 14), resized bilinearly to the
ViT's 16x16 grid, is concatenated after the ViT's channels (2048 in all) and decoded by a conv
decoder whose final conv follows an Upsample(size=256), as the authors build it for any name with
"RN50". Its release holds only the decoder; the two backbones are OpenAI's CLIP weights. Not
implemented: the RN50-only and XceptionNet localizers (no released weights).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from .backbone import ClipVisionTower, ResNetTower, split_in_proj
from .checkpoints import CheckpointError
from .clip_weights import openai_vision, strip_module_prefix, tensor_shape, visual_keys
from .config import DECLIP_DECODERS, DecoderConfig, ModelConfig, ResNetConfig, get_config
from .registry import CheckpointFormat, ConvertOptions, Family, register_family


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


# --------------------------------------------------------------------------------------------
# The authors' checkpoint: {'model': state_dict, 'feature_layer': 'layerN', 'decoder_type': ...}

DECLIP_MASK_SIZE = 256  # the authors' linear and attention decoders interpolate to 256x256
_DECLIP_TEXT = (
    "transformer.",
    "token_embedding.",
    "ln_final.",
    "positional_embedding",
    "text_projection",
    "logit_scale",
)
_DECLIP_VISUAL = re.compile(
    r"visual\.(class_embedding|positional_embedding|conv1\.weight|proj|ln_(pre|post)\.(weight|bias)"
    r"|transformer\.resblocks\.(\d+)\..+)"
)
_DECLIP_DECODER_PREFIXES = ("fc.", "att1.", "att2.")
# OpenAI RN50 keys (open_clip's ModifiedResNet has the same): the stem, layer1..4, the attention pool.
_RESNET_VISUAL = re.compile(r"visual\.((conv|bn)[123]\..+|layer([1-4])\.(\d+)\..+|attnpool\..+)")


def _declip_conv_layout(
    fc: Mapping[str, torch.Tensor], kind: str, grid: int, source: str, resized: bool = False
) -> DecoderConfig:
    """Stage widths of a ``conv-K`` decoder read from its ``fc.N`` convolutions.

    The authors' Sequential puts K convs (each followed by BN and ReLU) in S stages, each stage
    followed by an Upsample, then the final conv: its index is 3K + S (3K + S + 1 for the RN50
    variants, ``resized``, which add an Upsample(size=256) before it).
    """
    k = DecoderConfig(kind=kind).convs
    convs = {}
    for key, value in fc.items():
        if (m := re.fullmatch(r"fc\.(\d+)\.weight", key)) and value.dim() == 4:
            convs[int(m.group(1))] = tuple(value.shape)
    found = ", ".join(f"fc.{i}" for i in sorted(convs)) or "none"
    if len(convs) != k + 1:
        raise CheckpointError(
            f"{source}: decoder_type {kind!r} has {k} convolutions plus a final one; "
            f"the checkpoint's decoder has {len(convs)} (at {found})"
        )
    stages = max(convs) - 3 * k - int(resized)
    per_stage = k // stages if stages > 0 and k % stages == 0 else 0
    starts = [s * (3 * per_stage + 1) for s in range(stages)] if per_stage else []
    if not starts or any(i not in convs for i in starts):
        variant = "ViT+RN50" if resized else "ViT"
        raise CheckpointError(
            f"{source}: decoder_type {kind!r}: the convolutions at {found} are not laid out as the "
            f"authors' {variant} conv decoder"
        )
    return DecoderConfig(kind=kind, channels=tuple(convs[i][0] for i in starts), mask_size=grid * 2**stages)


def _declip_decoder(
    decoder: dict[str, torch.Tensor], kind: str, width: int, grid: int, source: str, resized: bool = False
) -> DecoderConfig:
    """The decoder config the checkpoint's ``fc.*`` (and ``att1/att2.*``) keys describe, or an error."""
    if kind.startswith("conv-"):
        cfg = _declip_conv_layout(decoder, kind, grid, source, resized)
    else:
        head = decoder.get("fc.0.weight")
        if head is not None and head.dim() != 2:
            raise CheckpointError(
                f"{source}: decoder_type {kind!r} has a Linear head at fc.0; the checkpoint's fc.0.weight has "
                f"shape {tuple(head.shape)} (a conv decoder?)"
            )
        cfg = DecoderConfig(kind=kind, channels=(), mask_size=DECLIP_MASK_SIZE)
    with torch.device("meta"):
        expected = build_decoder(cfg, width, grid, resized).state_dict()
    for key in expected.keys() - decoder.keys():
        if key.endswith(".num_batches_tracked"):
            # A BatchNorm counter, unused at inference: absent from some saves.
            decoder[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(expected.keys() - decoder.keys())
    unexpected = sorted(decoder.keys() - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(
            f"{source}: decoder_type {kind!r} does not match the checkpoint's decoder keys: " + "; ".join(parts)
        )
    return cfg


def _resnet_from_shapes(visual: Mapping[str, torch.Tensor], source: str) -> ResNetConfig:
    """An OpenAI ModifiedResNet's depths and width from its ``visual.*`` keys (stem conv1 has width/2 filters)."""
    width = 2 * tensor_shape(visual, "visual.conv1.weight", source)[0]
    depths = [0, 0, 0, 0]
    for key in visual:
        if (m := _RESNET_VISUAL.fullmatch(key)) and m.group(3):
            stage = int(m.group(3)) - 1
            depths[stage] = max(depths[stage], int(m.group(4)) + 1)
    if min(depths) < 1:
        raise CheckpointError(f"{source}: the RN50 backbone lacks a residual stage (blocks per stage: {depths})")
    return ResNetConfig(layers=tuple(depths), width=width)


def convert_declip(
    obj: Mapping[str, Any],
    *,
    backbone: Mapping[str, torch.Tensor] | None = None,
    cnn_backbone: Mapping[str, torch.Tensor] | None = None,
    heads: int | None = None,
    source: str = "checkpoint",
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Translate the authors' DeCLIP checkpoint into a forensix config and state dict.

    ``obj`` is the whole file: ``{'model': state_dict, 'feature_layer': 'layerN', 'decoder_type':
    'conv-K' | 'linear' | 'attention', 'optimizer', 'total_steps'}`` (the optimizer is not read).
    For the ViT backbone the state dict holds the whole OpenAI CLIP under ``model.`` and the decoder
    under ``fc.`` (and ``att1.``/``att2.``). A ViT+RN50 checkpoint holds only ``fc.*``: its two
    frozen backbones are OpenAI's CLIP ViT and RN50, passed as ``backbone`` and ``cnn_backbone``
    (OpenAI / open_clip ``visual.*`` layout). The vision tower's size is read from its shapes
    (heads = width/64 unless given) and its fused attention projections are split into q/k/v.
    Dropped on purpose: text towers, the ViT blocks after the feature block, ``ln_post``, ``proj``,
    RN50's ``layer4`` and attention pool; any other key without a place is an error, and so is a
    decoder whose keys don't match ``decoder_type``. Floating tensors are returned in fp32, as the
    authors' code runs them.
    """
    model = obj.get("model") if isinstance(obj, Mapping) else None
    if not isinstance(model, Mapping):
        raise CheckpointError(f"{source}: not a DeCLIP checkpoint (no 'model' state dict)")
    layer, kind = obj.get("feature_layer"), obj.get("decoder_type")
    m = re.fullmatch(r"layer(\d+)", layer) if isinstance(layer, str) else None
    if m is None:
        raise CheckpointError(f"{source}: feature_layer {layer!r} is not of the form 'layerN'")
    if kind not in DECLIP_DECODERS:
        raise CheckpointError(f"{source}: unknown decoder_type {kind!r}; known: {', '.join(DECLIP_DECODERS)}")
    block = int(m.group(1))  # 0-based block whose output feeds the decoder

    visual: dict[str, torch.Tensor] = {}
    decoder: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_module_prefix(model).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.float()
        rest = key[len("model.") :] if key.startswith("model.") else None
        if rest is not None and rest.startswith("visual."):
            visual[rest] = value
        elif rest is not None and rest.startswith(_DECLIP_TEXT):
            continue  # CLIP's text tower: DeCLIP never uses it
        elif key.startswith(_DECLIP_DECODER_PREFIXES):
            decoder[key] = value
        else:
            unknown.append(key)
    cnn_visual: dict[str, torch.Tensor] = {}
    if not visual:  # the ViT+RN50 release: the decoder alone
        if backbone is None or cnn_backbone is None:
            raise CheckpointError(
                f"{source}: a ViT+RN50 DeCLIP checkpoint (only the decoder, fc.*); it also needs OpenAI's CLIP "
                "ViT-L/14 and RN50 backbones: use a declip-vitrn50-* entry of 'forensix weights list', whose "
                "fetch downloads them"
            )
        visual, cnn_visual = visual_keys(backbone, "ViT backbone"), visual_keys(cnn_backbone, "RN50 backbone")
        if "visual.layer1.0.conv1.weight" in visual or "visual.class_embedding" in cnn_visual:
            raise CheckpointError(f"{source}: the ViT and RN50 backbones are swapped")
        unknown += [k for k in cnn_visual if not _RESNET_VISUAL.fullmatch(k)]
    elif backbone is not None or cnn_backbone is not None:
        raise CheckpointError(f"{source}: this checkpoint holds its own CLIP ViT; backbone files are not used")
    if "visual.layer1.0.conv1.weight" in visual:
        raise CheckpointError(f"{source}: a ResNet CLIP backbone alone; forensix supports DeCLIP on ViT and ViT+RN50")
    unknown += ["model." + k for k in visual if not _DECLIP_VISUAL.fullmatch(k)]
    if unknown:
        raise CheckpointError(f"{source}: unexpected keys {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))

    vision = openai_vision(visual, heads, source)
    if block >= vision.layers:
        raise CheckpointError(
            f"{source}: feature_layer {layer!r} is the output of block {block}; the checkpoint's tower has "
            f"{vision.layers} blocks"
        )
    cnn = _resnet_from_shapes(cnn_visual, "RN50 backbone") if cnn_visual else None
    width = vision.width + (cnn.channels if cnn is not None else 0)
    decoder_cfg = _declip_decoder(decoder, kind, width, vision.grid, source, resized=cnn is not None)
    full = get_config("declip-vit-l-14-layer20-conv20")
    cfg = ModelConfig(
        name="declip-custom",
        arch="declip",
        vision=vision,
        preprocess=replace(full.preprocess, resize=vision.image_size, crop=vision.image_size),
        feature_layers=(block + 1,),
        decoder=decoder_cfg,
        cnn=cnn,
    )
    for known in (full, get_config("declip-vit-rn50-layer20-conv20")):
        if replace(cfg, name=known.name) == known:
            cfg = known

    out: dict[str, torch.Tensor] = {}
    for key, value in split_in_proj(visual, "visual.").items():
        m = _DECLIP_VISUAL.fullmatch(key)
        index = m.group(4) if m else None
        if key.startswith("visual.ln_post.") or key == "visual.proj" or (index is not None and int(index) > block):
            continue  # after the feature block: never run
        out["backbone." + key] = value
    for key, value in cnn_visual.items():
        if not key.startswith(("visual.layer4.", "visual.attnpool.")):  # after layer3: never run
            out["cnn." + key] = value
    out.update({"decoder." + k: v for k, v in decoder.items()})
    return cfg, out


def check_config(cfg: ModelConfig) -> None:
    layers = cfg.feature_layers
    if len(layers) != 1 or not 1 <= layers[0] <= cfg.vision.layers:
        raise ValueError(
            f"declip needs one feature layer in 1..{cfg.vision.layers} (hidden_states numbering: "
            f"layerN is N+1), got {list(layers)}"
        )
    if cfg.decoder is None:
        raise ValueError("declip needs a decoder config")
    if cfg.decoder.is_conv:
        size = cfg.vision.grid * 2 ** len(cfg.decoder.channels)
        if size != cfg.decoder.mask_size:
            raise ValueError(
                f"a {cfg.vision.grid}x{cfg.vision.grid} grid through {len(cfg.decoder.channels)} x2 "
                f"stages gives {size}px masks, not mask_size {cfg.decoder.mask_size}"
            )
    if cfg.cnn is not None and not cfg.decoder.is_conv:
        raise ValueError(f"the ViT+RN50 localizer has a conv decoder, not {cfg.decoder.kind!r}")


def decoder_only(obj: Mapping[str, Any]) -> bool:
    """Whether an authors' checkpoint is a ViT+RN50 one: the decoder without a CLIP inside."""
    model = obj.get("model")
    return isinstance(model, Mapping) and not any("visual." in key for key in model)


BACKBONE_ROLES = ("backbone", "cnn_backbone")  # ViT+RN50: OpenAI CLIP ViT-L/14, then RN50


def _recognise(obj: Mapping[str, Any]) -> bool:
    return isinstance(obj.get("model"), Mapping) and "feature_layer" in obj and "decoder_type" in obj


def _convert(
    obj: Mapping[str, Any], options: ConvertOptions, source: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    backbones = {role: options.companions[role] for role in BACKBONE_ROLES if role in options.companions}
    return convert_declip(obj, **backbones, source=source)


register_family(
    Family(
        arch="declip",
        kind="localizer",
        build=DeCLIP,
        fields=("decoder", "cnn"),
        check=check_config,
        blocks_needed=lambda cfg: cfg.feature_layers[-1],
        formats=(
            CheckpointFormat(
                name="declip-official",
                recognise=_recognise,
                convert=_convert,
                companions=lambda obj: BACKBONE_ROLES if decoder_only(obj) else (),
                recipe=lambda obj: {"feature_layer": obj["feature_layer"], "decoder_type": obj["decoder_type"]},
                trained_on="as released by the authors (see the file name: the Dolos generator it was trained on)",
            ),
        ),
    )
)
