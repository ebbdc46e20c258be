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
class LoraConfig:
    """LoRA on the q, k and v projections of every block (DeeCLIP: r=16, alpha=32, dropout 0.05)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model and feed it.

    ``feature_layers`` use transformers' ``hidden_states`` numbering: index i is the output of
    block i-1 (0 would be the embeddings). For DeeCLIP the last index is the deep feature and the
    others are the shallow ones.
    """

    name: str
    arch: str  # "deeclip" | "univfd"
    vision: VisionConfig = field(default_factory=VisionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    feature_layers: tuple[int, ...] = ()
    fuser_hidden: int = 4
    lora: LoraConfig | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
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

    @property
    def blocks_needed(self) -> int:
        """How many transformer blocks the forward pass must run."""
        if self.arch == "deeclip":
            return self.feature_layers[-1]
        return self.vision.layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        return cls(
            vision=vision,
            preprocess=PreprocessConfig(**pre),
            lora=LoraConfig(**lora) if lora else None,
            feature_layers=tuple(data.pop("feature_layers", ())),
            **data,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


ARCHS = ("deeclip", "univfd")


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
