"""Reading and writing weights: the authors' checkpoints and forensix's own safetensors format.

Foreign checkpoints are translated by pure functions (``convert_*``: state dict in, forensix config
and state dict out, every key accounted for), then loaded strictly by :func:`load_weights`, which
names every missing, unexpected or mis-shaped key. Pickles are only ever read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .backbone import split_in_proj
from .config import (
    DECLIP_DECODERS,
    DecoderConfig,
    LoraConfig,
    ModelConfig,
    PreprocessConfig,
    ResNetConfig,
    VisionConfig,
    get_config,
)
from .declip import build_decoder
from .factory import create_model

FORMAT_NAME = "forensix"
FORMAT_VERSION = "1"
DEECLIP_LAYERS = (1, 3, 5, 8, 10, 13, 15, 17, 19, 21, 22, 23)


class CheckpointError(ValueError):
    """A weights file that can't be used; the message names the file, key and shapes."""


# --------------------------------------------------------------------------------------------
# Reading files


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a .safetensors file, or the object in a torch pickle (read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if is_safetensors(path):
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    if not zipfile.is_zipfile(path):
        # Legacy (pre-1.6) torch pickles are not zip archives and can't be memory-mapped.
        return _torch_load(path, mmap=False)
    return _torch_load(path, mmap=True)


def _torch_load(path: Path, mmap: bool) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types for bad files; all mean "not usable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable weights file ({first})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def is_safetensors(path: Path) -> bool:
    """safetensors files start with a little-endian u64 header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


def safetensors_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def detect_format(state: Mapping[str, Any]) -> str:
    """Which kind of checkpoint a loaded state dict is."""
    keys = set(state)
    if any(k.startswith("mmfuser.") for k in keys):
        return "deeclip-official"
    if keys == {"weight", "bias"}:
        return "univfd-head"
    if isinstance(state.get("model"), Mapping) and "feature_layer" in keys and "decoder_type" in keys:
        return "declip-official"
    if any(k.startswith("visual.") for k in keys):
        return "openai-clip"
    return "unknown"


# --------------------------------------------------------------------------------------------
# Strict loading


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    for key in sorted(expected.keys() - state.keys()):
        problems.append(f"missing key {key} (expected shape {expected[key]})")
    for key in sorted(state.keys() - expected.keys()):
        problems.append(f"unexpected key {key} (shape {tuple(state[key].shape)})")
    for key in sorted(expected.keys() & state.keys()):
        if tuple(state[key].shape) != expected[key]:
            problems.append(f"key {key} has shape {tuple(state[key].shape)}, expected {expected[key]}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"{source}: " + "; ".join(problems[:8]) + more)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """Check every key and shape, then load (``assign`` so a meta-device model takes the tensors)."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def build_and_load(cfg: ModelConfig, state: Mapping[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """Build ``cfg`` on the meta device (no wasted initialisation) and load ``state`` into it."""
    with_lora = any(".lora_A." in k for k in state)
    with torch.device("meta"):
        model = create_model(cfg, with_lora=with_lora)
    load_weights(model, state, source)
    return model.eval()


# --------------------------------------------------------------------------------------------
# forensix's own format


def save_checkpoint(
    path: Path,
    cfg: ModelConfig,
    state: Mapping[str, torch.Tensor],
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Write a forensix safetensors checkpoint: tensors + config (with threshold) + provenance."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_json(),
        "provenance": json.dumps(dict(provenance or {}), sort_keys=True),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def read_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, tensors and provenance of a forensix safetensors checkpoint."""
    path = Path(path)
    if not is_safetensors(path):
        raise CheckpointError(f"{path}: not a safetensors file")
    meta = safetensors_metadata(path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: safetensors file without forensix metadata (no 'format' = forensix)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: forensix format version {meta.get('format_version')!r} is not supported")
    try:
        cfg = ModelConfig.from_json(meta["config"])
        provenance = json.loads(meta.get("provenance", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad config in metadata ({e})") from e
    return cfg, read_state_dict(path), provenance


# --------------------------------------------------------------------------------------------
# DeeCLIP official checkpoint (transformers CLIPVisionModel + peft names)

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


def _strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Checkpoints saved from DataParallel carry a leading ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key}")
    return tuple(state[key].shape)


def _vision_from_shapes(
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
    (width,) = _shape(state, cls, source)
    patch_size = _shape(state, patch, source)[-1]
    tokens, _ = _shape(state, pos, source)
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise CheckpointError(f"{source}: {tokens} position embeddings is not 1 + a square grid")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(block, k)))
    hidden, _ = _shape(state, mlp, source)
    return VisionConfig(
        width=width,
        layers=depth,
        heads=heads or max(1, width // 64),
        patch_size=patch_size,
        image_size=grid * patch_size,
        mlp_ratio=hidden / width,
        output_dim=output_dim,
    )


def _infer_deeclip_config(
    state: Mapping[str, torch.Tensor],
    vision_prefix: str,
    feature_layers: tuple[int, ...] | None,
    heads: int | None,
    lora_alpha: float,
    source: str,
) -> ModelConfig:
    p = vision_prefix
    output_dim, _ = _shape(state, "clip_model.visual_projection.weight", source)
    fuser_hidden, _ = _shape(state, "mmfuser.mlp.fc1.weight", source)
    lora_a = p + "encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
    rank = state[lora_a].shape[0] if lora_a in state else 16
    full = get_config("deeclip-vit-l-14")
    vision = _vision_from_shapes(
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
    state = _strip_module_prefix(state)
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


# --------------------------------------------------------------------------------------------
# UnivFD: fc_weights.pth head + OpenAI CLIP backbone (open_clip / OpenAI layout)


def _infer_openai_vision(state: Mapping[str, torch.Tensor], heads: int | None, source: str) -> VisionConfig:
    return _vision_from_shapes(
        state,
        cls="visual.class_embedding",
        patch="visual.conv1.weight",
        pos="visual.positional_embedding",
        block=r"visual\.transformer\.resblocks\.(\d+)\.",
        mlp="visual.transformer.resblocks.0.mlp.c_fc.weight",
        output_dim=_shape(state, "visual.proj", source)[1],
        heads=heads,
        source=source,
    )


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
    clip = _strip_module_prefix(clip)
    vision = _infer_openai_vision(clip, heads, source)
    full = get_config("univfd-vit-l-14")
    cfg = replace(full, name=full.name if vision == full.vision else "univfd-custom", vision=vision)
    visual = {k: v for k, v in clip.items() if k.startswith("visual.")}
    if "visual.attnpool.c_proj.weight" in visual or "visual.layer1.0.conv1.weight" in visual:
        raise CheckpointError(f"{source}: a ResNet CLIP; UnivFD needs a ViT backbone")
    out = {"backbone." + k: v for k, v in split_in_proj(visual, "visual.").items()}
    out["fc.weight"], out["fc.bias"] = head["weight"], head["bias"]
    return cfg, out


# --------------------------------------------------------------------------------------------
# DeCLIP official checkpoint: {'model': state_dict, 'feature_layer': 'layerN', 'decoder_type': ...}

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
    width = 2 * _shape(visual, "visual.conv1.weight", source)[0]
    depths = [0, 0, 0, 0]
    for key in visual:
        if (m := _RESNET_VISUAL.fullmatch(key)) and m.group(3):
            stage = int(m.group(3)) - 1
            depths[stage] = max(depths[stage], int(m.group(4)) + 1)
    if min(depths) < 1:
        raise CheckpointError(f"{source}: the RN50 backbone lacks a residual stage (blocks per stage: {depths})")
    return ResNetConfig(layers=tuple(depths), width=width)


def _visual_keys(clip: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of an OpenAI-layout CLIP state dict, in fp32 (the text tower is ignored)."""
    visual = {k: v.float() if v.is_floating_point() else v for k, v in _strip_module_prefix(clip).items()}
    visual = {k: v for k, v in visual.items() if k.startswith("visual.")}
    if not visual:
        raise CheckpointError(f"{source}: no CLIP vision tower (visual.*) in this backbone file")
    return visual


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
    for key, value in _strip_module_prefix(model).items():
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
        visual, cnn_visual = _visual_keys(backbone, "ViT backbone"), _visual_keys(cnn_backbone, "RN50 backbone")
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

    vision = _infer_openai_vision(visual, heads, source)
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


# --------------------------------------------------------------------------------------------
# Training from OpenAI's CLIP: the frozen backbone's weights, everything else freshly initialised


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
    parts = [("backbone", model.backbone, split_in_proj(_visual_keys(clip, source), "visual."))]
    if cnn_clip is not None:
        parts.append(("cnn", model.cnn, _visual_keys(cnn_clip, source)))
    for name, module, found in parts:
        # The file is a whole CLIP: the blocks the model never built, ln_post and the projection
        # (RN50: layer4 and the attention pool) are left out on purpose; the rest loads strictly.
        wanted = module.state_dict().keys()
        load_weights(module, {k: v for k, v in found.items() if k in wanted}, f"{source} ({name})")
