"""Model configs: every forensix model is described by data and built by one factory.

Configs are JSON files in ``forensix/models/configs/`` (in the style of open_clip's model_configs);
the same dataclasses travel inside every checkpoint forensix writes, so the preprocessing a model
needs is never separated from its weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded RGB image becomes the model's input tensor.

    ``mode``:
      - ``resize_crop``: shortest edge to ``resize`` (PIL, ``interpolation``), then center crop
        ``crop`` with floor offsets, as transformers' CLIPImageProcessor (DeeCLIP's pipeline);
      - ``center_crop``: no resize; torchvision CenterCrop(``crop``) with rounded offsets and zero
        padding of smaller images (UnivFD's test pipeline);
      - ``squash``: Resize((crop, crop)) ignoring aspect ratio (DeCLIP's pipeline).
    """

    mode: str = "resize_crop"
    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.mode not in ("resize_crop", "center_crop", "squash"):
            raise ValueError(f"unknown preprocessing mode {self.mode!r}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest", "lanczos"):
            raise ValueError(f"unknown interpolation {self.interpolation!r}")


@dataclass(frozen=True)
class VisionConfig:
    """An OpenAI-layout CLIP ViT vision tower (QuickGELU, pre-LayerNorm, class token)."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    mlp_ratio: float = 4.0
    output_dim: int = 768  # CLIP projection width (used by the pooled embedding)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class ResNetConfig:
    """OpenAI CLIP's ModifiedResNet (RN50: layers 3,4,6,3, width 64), read at the output of ``layer3``.

    DeCLIP's ViT+RN50 localizer concatenates that map (16·width channels, image_size/16 square)
    with the ViT's patch tokens; ``layer4`` and the attention pool are never built.
    """

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(self.layers) != 4 or min(self.layers) < 1 or self.width < 2 or self.width % 2:
            raise ValueError(f"a ResNet needs 4 positive stage depths and an even width, got {self}")

    @property
    def channels(self) -> int:
        """Channels of the ``layer3`` output (Bottleneck expansion 4 x stage width 4·width)."""
        return 16 * self.width


@dataclass(frozen=True)
class LoraConfig:
    """LoRA on the q, k and v projections of every block (DeeCLIP: r=16, alpha=32, dropout 0.05)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05

    @property
    def scale(self) -> float:
        return self.alpha / self.r


DECLIP_DECODERS = ("conv-4", "conv-12", "conv-20", "linear", "attention")


@dataclass(frozen=True)
class DecoderConfig:
    """DeCLIP's mask decoder on the feature block's tokens (Smeu et al., WACV 2025).

    ``kind``: ``conv-K`` (K convolutions in ``len(channels)`` upsampling stages, then one 5x5
    conv to a single channel), ``linear`` (one logit per patch token, bicubic upsampling) or
    ``attention`` (two causal CLIP attention blocks, then the linear head). ``channels`` are the
    conv stages' widths (the first conv takes the backbone width); empty for the other kinds.
    ``mask_size``: side of the square logit map the decoder returns.
    """

    kind: str = "conv-20"
    channels: tuple[int, ...] = (512, 256, 128, 64)
    mask_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.kind not in DECLIP_DECODERS:
            raise ValueError(f"unknown decoder {self.kind!r}; known: {', '.join(DECLIP_DECODERS)}")
        if self.is_conv:
            if not self.channels or min(self.channels) < 1:
                raise ValueError(f"a {self.kind} decoder needs positive stage widths, got {list(self.channels)}")
            if self.convs % len(self.channels):
                stages = len(self.channels)
                raise ValueError(f"{self.kind}: {self.convs} convolutions do not split into {stages} stages")
        elif self.channels:
            raise ValueError(f"a {self.kind} decoder has no conv stages; channels must be empty")
        if self.mask_size < 1:
            raise ValueError(f"mask_size must be positive, got {self.mask_size}")

    @property
    def is_conv(self) -> bool:
        return self.kind.startswith("conv-")

    @property
    def convs(self) -> int:
        """K of ``conv-K``: the convolutions before the final one (0 for the other kinds)."""
        return int(self.kind[len("conv-") :]) if self.is_conv else 0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model and feed it.

    ``feature_layers`` use transformers' ``hidden_states`` numbering: index i is the output of
    block i-1 (0 would be the embeddings). For DeeCLIP the last index is the deep feature and the
    others are the shallow ones. For DeCLIP it is the one block that feeds the decoder: the
    authors' ``feature_layer`` "layerN" (0-based block N) is ``feature_layers = (N + 1,)``.
    ``decoder`` is DeCLIP's mask decoder (None for the image-level detectors).
    """

    name: str
    arch: str  # "deeclip" | "univfd" | "declip"
    vision: VisionConfig = field(default_factory=VisionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    feature_layers: tuple[int, ...] = ()
    fuser_hidden: int = 4
    lora: LoraConfig | None = None
    decoder: DecoderConfig | None = None
    cnn: ResNetConfig | None = None  # DeCLIP ViT+RN50: the RN50 whose layer3 joins the ViT features
    threshold: float = 0.5
    temperature: float = 1.0  # score = sigmoid(logit / temperature); set by `forensix calibrate`

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; known: {', '.join(ARCHS)}")
        if self.arch == "deeclip":
            layers = self.feature_layers
            if len(layers) < 2:
                raise ValueError("deeclip needs at least two feature layers (shallow ones, then the deep one)")
            if list(layers) != sorted(set(layers)):
                raise ValueError(f"feature_layers must be strictly increasing, got {list(layers)}")
            if layers[0] < 1 or layers[-1] > self.vision.layers:
                raise ValueError(
                    f"feature_layers must lie in 1..{self.vision.layers} (hidden_states numbering), got {list(layers)}"
                )
        if self.arch == "declip":
            layers = self.feature_layers
            if len(layers) != 1 or not 1 <= layers[0] <= self.vision.layers:
                raise ValueError(
                    f"declip needs one feature layer in 1..{self.vision.layers} (hidden_states numbering: "
                    f"layerN is N+1), got {list(layers)}"
                )
            if self.decoder is None:
                raise ValueError("declip needs a decoder config")
            if self.decoder.is_conv:
                size = self.vision.grid * 2 ** len(self.decoder.channels)
                if size != self.decoder.mask_size:
                    raise ValueError(
                        f"a {self.vision.grid}x{self.vision.grid} grid through {len(self.decoder.channels)} x2 "
                        f"stages gives {size}px masks, not mask_size {self.decoder.mask_size}"
                    )
            if self.cnn is not None and not self.decoder.is_conv:
                raise ValueError(f"the ViT+RN50 localizer has a conv decoder, not {self.decoder.kind!r}")
        elif self.decoder is not None or self.cnn is not None:
            raise ValueError(f"{self.arch} has no mask decoder; decoder and cnn must be null")

    @property
    def blocks_needed(self) -> int:
        """How many transformer blocks the forward pass must run."""
        if self.arch in ("deeclip", "declip"):
            return self.feature_layers[-1]
        return self.vision.layers

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.decoder is None:
            # Detector configs (and the metadata of their checkpoints) read as they did before DeCLIP.
            del data["decoder"]
        if self.cnn is None:
            del data["cnn"]  # likewise for the ViT-only localizers
        if self.temperature == 1.0:
            del data["temperature"]  # likewise for uncalibrated models
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        vision = VisionConfig(**data.pop("vision", {}))
        pre = dict(data.pop("preprocess", {}))
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(pre[key])
        lora = data.pop("lora", None)
        decoder = data.pop("decoder", None)
        cnn = data.pop("cnn", None)
        return cls(
            vision=vision,
            preprocess=PreprocessConfig(**pre),
            lora=LoraConfig(**lora) if lora else None,
            decoder=DecoderConfig(**decoder) if decoder else None,
            cnn=ResNetConfig(**cnn) if cnn else None,
            feature_layers=tuple(data.pop("feature_layers", ())),
            **data,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


ARCHS = ("deeclip", "univfd", "declip")


def list_configs() -> list[str]:
    """Names of the bundled configs."""
    root = resources.files("forensix.models") / "configs"
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def get_config(name: str) -> ModelConfig:
    """A bundled config by name (e.g. ``deeclip-vit-l-14``)."""
    path = resources.files("forensix.models") / "configs" / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no model config named {name!r}; known: {', '.join(list_configs())}")
    return ModelConfig.from_json(path.read_text())
