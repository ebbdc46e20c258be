"""DeeCLIP (Keita et al. 2025, arXiv 2504.19876): CLIP ViT + LoRA + DeeFuser, image-level detection.

Frozen CLIP ViT-L/14 vision tower (LoRA on q/k/v), the residual stream after 12 blocks; the
DeeFuser lets the deep feature attend to the concatenated shallow ones; a per-token projection,
L2-normalised, averaged over tokens, and one logit. Score = sigmoid(logit) = P(fake).
Released weights: ``deeclip_weight_complete_with_lora_5.pth`` (see weights/manifest.json);
import with :func:`convert_deeclip` (the ``deeclip-official`` format).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ClipVisionTower
from .checkpoints import CheckpointError
from .clip_weights import strip_module_prefix, tensor_shape, vision_from_shapes
from .config import LoraConfig, ModelConfig, PreprocessConfig, get_config
from .registry import CheckpointFormat, ConvertOptions, Family, register_family

DEECLIP_LAYERS = (1, 3, 5, 8, 10, 13, 15, 17, 19, 21, 22, 23)  # the release's hidden states: shallow ones, then deep


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
        return self.head(embeddings.mean(dim=1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (B, output_dim) the head scores: the mean of the normalised token embeddings."""
        return self.forward_features(x).mean(dim=1)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B,) from pooled embeddings."""
        return self.fc(embedding).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


# --------------------------------------------------------------------------------------------
# The authors' checkpoint: a flat state dict of transformers' CLIPVisionModel + peft names

_HF_BLOCK = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_HF_BLOCK_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
    "self_attn.q_proj": "attn.q_proj",
    "self_attn.k_proj": "attn.k_proj",
    "self_attn.v_proj": "attn.v_proj",
}
_HF_STEM = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
}
_DEECLIP_VISION_PREFIXES = ("clip_model.base_model.model.vision_model.", "clip_model.base_model.model.")


def _infer_deeclip_config(
    state: Mapping[str, torch.Tensor],
    vision_prefix: str,
    feature_layers: tuple[int, ...] | None,
    heads: int | None,
    lora_alpha: float,
    source: str,
) -> ModelConfig:
    p = vision_prefix
    output_dim, _ = tensor_shape(state, "clip_model.visual_projection.weight", source)
    fuser_hidden, _ = tensor_shape(state, "mmfuser.mlp.fc1.weight", source)
    lora_a = p + "encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
    rank = state[lora_a].shape[0] if lora_a in state else 16
    full = get_config("deeclip-vit-l-14")
    vision = vision_from_shapes(
        state,
        cls=p + "embeddings.class_embedding",
        patch=p + "embeddings.patch_embedding.weight",
        pos=p + "embeddings.position_embedding.weight",
        block=re.escape(p) + r"encoder\.layers\.(\d+)\.",
        mlp=p + "encoder.layers.0.mlp.fc1.weight",
        output_dim=output_dim,
        heads=heads,
        source=source,
    )
    if feature_layers is None:
        if vision.layers != 24:
            raise CheckpointError(
                f"{source}: a {vision.layers}-block backbone is not the released ViT-L/14; "
                "say which hidden states feed the fuser (feature_layers / --feature-layers)"
            )
        feature_layers = DEECLIP_LAYERS
    name = full.name if vision == full.vision and tuple(feature_layers) == full.feature_layers else "deeclip-custom"
    return ModelConfig(
        name=name,
        arch="deeclip",
        vision=vision,
        preprocess=PreprocessConfig(),
        feature_layers=tuple(feature_layers),
        fuser_hidden=fuser_hidden,
        lora=LoraConfig(r=rank, alpha=lora_alpha, dropout=0.05),
    )


def convert_deeclip(
    state: Mapping[str, torch.Tensor],
    *,
    feature_layers: tuple[int, ...] | None = None,
    heads: int | None = None,
    lora_alpha: float = 32.0,
    merge_lora: bool = True,
    source: str = "checkpoint",
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Translate the authors' flat DeeCLIP state dict into a forensix config and state dict.

    The architecture is read from tensor shapes (width, depth, patch, tokens, MLP and fuser widths,
    LoRA rank; heads = width/64 unless given). LoRA is merged (W0 + alpha/r * B @ A) or kept under
    peft's names. Keys the model never uses (blocks after the deepest feature, post_layernorm,
    position_ids) are dropped deliberately; any other key that has no place is an error.
    """
    state = strip_module_prefix(state)
    prefix = next((p for p in _DEECLIP_VISION_PREFIXES if p + "embeddings.class_embedding" in state), None)
    if prefix is None:
        raise CheckpointError(
            f"{source}: not a DeeCLIP checkpoint (no clip_model.base_model.model.vision_model.embeddings.*)"
        )
    cfg = _infer_deeclip_config(state, prefix, feature_layers, heads, lora_alpha, source)
    blocks = cfg.blocks_needed
    vis = "backbone.visual."
    out: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest in _HF_STEM:
                out[vis + _HF_STEM[rest]] = value
            elif rest == "embeddings.position_ids" or rest.startswith("post_layernorm."):
                continue  # buffer / unused by DeeCLIP
            elif m := _HF_BLOCK.fullmatch(rest):
                index, tail = int(m.group(1)), m.group(2)
                part = next((p for p in _HF_BLOCK_PARTS if tail.startswith(p + ".")), None)
                if part is None:
                    unknown.append(key)
                    continue
                if index >= blocks:
                    continue  # a block whose output DeeCLIP never reads
                leaf = tail[len(part) + 1 :].replace("base_layer.", "")
                target = f"{vis}transformer.resblocks.{index}.{_HF_BLOCK_PARTS[part]}"
                if leaf in ("lora_A.default.weight", "lora_B.default.weight"):
                    lora.setdefault(target, {})[leaf[5]] = value
                elif leaf in ("weight", "bias"):
                    out[f"{target}.{leaf}"] = value
                else:
                    unknown.append(key)
            else:
                unknown.append(key)
        elif key.startswith("clip_model.visual_projection."):
            out["proj." + key.rpartition(".")[2]] = value
        elif key.startswith("clip_model.fc."):
            out["fc." + key.rpartition(".")[2]] = value
        elif key.startswith("mmfuser."):
            out["fuser." + key[len("mmfuser.") :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected keys {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))

    for target, ab in sorted(lora.items()):
        if set(ab) != {"A", "B"}:
            missing = "lora_B" if "A" in ab else "lora_A"
            raise CheckpointError(f"{source}: {target} has a LoRA adapter without {missing}")
        a, b = ab["A"], ab["B"]
        weight = out.get(f"{target}.weight")
        if weight is None:
            raise CheckpointError(f"{source}: {target} has LoRA but no base weight")
        if a.shape[1] != weight.shape[1] or b.shape[0] != weight.shape[0] or a.shape[0] != b.shape[1]:
            raise CheckpointError(
                f"{source}: LoRA shapes A {tuple(a.shape)} B {tuple(b.shape)} do not fit "
                f"{target}.weight {tuple(weight.shape)}"
            )
        if merge_lora:
            scale = lora_alpha / a.shape[0]
            out[f"{target}.weight"] = (weight.double() + scale * (b.double() @ a.double())).to(weight.dtype)
        else:
            out[f"{target}.base_layer.weight"] = out.pop(f"{target}.weight")
            out[f"{target}.base_layer.bias"] = out.pop(f"{target}.bias")
            out[f"{target}.lora_A.default.weight"] = a
            out[f"{target}.lora_B.default.weight"] = b
    return cfg, out


def check_config(cfg: ModelConfig) -> None:
    layers = cfg.feature_layers
    if len(layers) < 2:
        raise ValueError("deeclip needs at least two feature layers (shallow ones, then the deep one)")
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"feature_layers must be strictly increasing, got {list(layers)}")
    if layers[0] < 1 or layers[-1] > cfg.vision.layers:
        raise ValueError(
            f"feature_layers must lie in 1..{cfg.vision.layers} (hidden_states numbering), got {list(layers)}"
        )


def _convert(
    obj: Mapping[str, Any], options: ConvertOptions, source: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    return convert_deeclip(
        obj,
        feature_layers=options.feature_layers,
        lora_alpha=options.lora_alpha,
        merge_lora=options.merge_lora,
        source=source,
    )


register_family(
    Family(
        arch="deeclip",
        kind="detector",
        build=DeeCLIP,
        fields=("lora",),
        check=check_config,
        blocks_needed=lambda cfg: cfg.feature_layers[-1],
        formats=(
            CheckpointFormat(
                name="deeclip-official",
                recognise=lambda obj: any(str(k).startswith("mmfuser.") for k in obj),
                convert=_convert,
                trained_on="as released by the authors (4-class ProGAN, per the paper)",
            ),
        ),
    )
)
