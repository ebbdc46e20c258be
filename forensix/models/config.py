"""Model configs: every forensix model is described by data and built by one factory.

Configs are JSON files in ``forensix/models/configs/`` (in the style of open_clip's model_configs);
the same dataclasses travel inside every checkpoint forensix writes, so the preprocessing a model
needs is never separated from its weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any

from ..verdicts import check_band
from .registry import Family, families, get_family

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE_LIMIT = 1 << 16  # no size in any config is larger: a config read from a weights file is untrusted


def _check_sizes(config: object, *names: str) -> None:
    """Each named field a whole number from 1 to SIZE_LIMIT (a 0 would divide by zero, a 10**9 build forever)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= SIZE_LIMIT:
            what = f"{type(config).__name__}.{name}"
            raise ValueError(f"{what} must be a whole number from 1 to {SIZE_LIMIT}, got {value!r}")


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
        _check_sizes(self, "resize", "crop")
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
        _check_sizes(self, "width", "layers", "heads", "patch_size", "image_size", "output_dim")
        if not _is_number(self.mlp_ratio) or not 0 < self.mlp_ratio <= 64:
            raise ValueError(f"mlp_ratio must be a number in (0, 64], got {self.mlp_ratio!r}")
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
        _check_sizes(self, "width")
        depths_ok = len(self.layers) == 4 and all(isinstance(n, int) and 1 <= n <= 256 for n in self.layers)
        if not depths_ok or self.width % 2:
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

    def __post_init__(self) -> None:
        _check_sizes(self, "r")
        if not _is_number(self.alpha) or not math.isfinite(self.alpha):
            raise ValueError(f"lora alpha must be a finite number, got {self.alpha!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class TextConfig:
    """An OpenAI-layout CLIP text tower (causal transformer, QuickGELU, pooled at the end-of-text token).

    ``vocab_size`` 49408 is open_clip's BPE tokenizer (bundled with open_clip, read offline).
    """

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 768
    heads: int = 12
    layers: int = 12

    def __post_init__(self) -> None:
        _check_sizes(self, "context_length", "width", "heads", "layers")
        if not isinstance(self.vocab_size, int) or not 1 <= self.vocab_size <= 1 << 20:
            raise ValueError(f"vocab_size must be a whole number from 1 to {1 << 20}, got {self.vocab_size!r}")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class AttributionConfig:
    """Source attribution: one caption per class, ``classes[0]`` = ``real``, then the generators.

    The bundled configs' classes are placeholders: training sets those of its data. ``clip_model``
    names the open_clip model whose sizes ``vision`` and ``text`` repeat (checked when the model is
    built); empty for custom sizes.
    """

    classes: tuple[str, ...] = ("real", "fake")
    real_caption: str = "a real photo"
    caption_template: str = "an image generated by {}"
    text: TextConfig = field(default_factory=TextConfig)
    clip_model: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(self.classes) < 2 or self.classes[0] != "real":
            raise ValueError(f"attribution classes are 'real' then at least one generator, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes) or not all(c.strip() for c in self.classes):
            raise ValueError(f"attribution classes must be distinct and non-empty, got {list(self.classes)}")
        if self.caption_template.count("{}") != 1:
            raise ValueError(f"caption_template needs one '{{}}' for the generator, got {self.caption_template!r}")

    @property
    def captions(self) -> tuple[str, ...]:
        return (self.real_caption, *(self.caption_template.format(c) for c in self.classes[1:]))


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
            if not self.channels or not all(isinstance(c, int) and 1 <= c <= SIZE_LIMIT for c in self.channels):
                raise ValueError(f"a {self.kind} decoder needs positive stage widths, got {list(self.channels)}")
            if self.convs % len(self.channels):
                stages = len(self.channels)
                raise ValueError(f"{self.kind}: {self.convs} convolutions do not split into {stages} stages")
        elif self.channels:
            raise ValueError(f"a {self.kind} decoder has no conv stages; channels must be empty")
        _check_sizes(self, "mask_size")

    @property
    def is_conv(self) -> bool:
        return self.kind.startswith("conv-")

    @property
    def convs(self) -> int:
        """K of ``conv-K``: the convolutions before the final one (0 for the other kinds)."""
        return int(self.kind[len("conv-") :]) if self.is_conv else 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model and feed it.

    ``feature_layers`` use transformers' ``hidden_states`` numbering: index i is the output of
    block i-1 (0 would be the embeddings). For DeeCLIP the last index is the deep feature and the
    others are the shallow ones. For DeCLIP it is the one block that feeds the decoder: the
    authors' ``feature_layer`` "layerN" (0-based block N) is ``feature_layers = (N + 1,)``.
    ``decoder`` is DeCLIP's mask decoder (None for the image-level detectors). ``attribution``
    (arch ``attribution`` only): the classes, their captions and the text tower; ``vision.output_dim``
    is then the joint embedding width of both towers.
    """

    name: str
    arch: str  # a registered family (models/registry.py): "deeclip" | "univfd" | "declip" | "attribution" | ...
    vision: VisionConfig = field(default_factory=VisionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    feature_layers: tuple[int, ...] = ()
    fuser_hidden: int = 4
    lora: LoraConfig | None = None
    decoder: DecoderConfig | None = None
    cnn: ResNetConfig | None = None  # DeCLIP ViT+RN50: the RN50 whose layer3 joins the ViT features
    attribution: AttributionConfig | None = None
    threshold: float = 0.5
    temperature: float = 1.0  # score = sigmoid(logit / temperature); set by `forensix calibrate`
    band_low: float | None = None  # scores in [band_low, threshold) are 'uncertain' (forensix.verdicts)
    settings: dict[str, Any] = field(default_factory=dict)  # a family's own settings (Family.settings)

    def __post_init__(self) -> None:
        # Stored in files anyone can edit: a string, NaN or 7.5 must not load and judge every image alike.
        if not _is_number(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        if not _is_number(self.temperature) or not 0.0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        check_band(self.band_low, self.threshold)
        get_family(self.arch).validate(self)

    @property
    def family(self) -> Family:
        """What this config's architecture is (kind, builder, checkpoint formats): models/registry.py."""
        return get_family(self.arch)

    @property
    def kind(self) -> str:
        """``detector``, ``localizer`` or ``attributor``."""
        return self.family.kind

    def setting(self, name: str) -> Any:
        """A family setting: this config's value, else the family's default."""
        return self.settings.get(name, self.family.settings[name])

    @property
    def blocks_needed(self) -> int:
        """How many transformer blocks the forward pass must run."""
        return self.family.blocks_needed(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.decoder is None:
            # Detector configs (and the metadata of their checkpoints) read as they did before DeCLIP.
            del data["decoder"]
        if self.cnn is None:
            del data["cnn"]  # likewise for the ViT-only localizers
        if self.attribution is None:
            del data["attribution"]  # likewise for every model but the attributor
        if self.temperature == 1.0:
            del data["temperature"]  # likewise for uncalibrated models
        if self.band_low is None:
            del data["band_low"]  # likewise for models without an uncertain band
        if not self.settings:
            del data["settings"]  # likewise for the families without settings of their own
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
        attribution = dict(data.pop("attribution", None) or {})
        if attribution:
            attribution["text"] = TextConfig(**attribution.get("text", {}))
        return cls(
            vision=vision,
            preprocess=PreprocessConfig(**pre),
            lora=LoraConfig(**lora) if lora else None,
            decoder=DecoderConfig(**decoder) if decoder else None,
            cnn=ResNetConfig(**cnn) if cnn else None,
            attribution=AttributionConfig(**attribution) if attribution else None,
            feature_layers=tuple(data.pop("feature_layers", ())),
            **data,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def _config_files() -> dict[str, Any]:
    """Every known JSON config by name: the bundled ones, then those of families registered from elsewhere."""
    folders = [resources.files("forensix.models") / "configs"]
    folders += [f.configs for f in families() if f.configs is not None]
    found: dict[str, Any] = {}
    for folder in folders:
        for p in folder.iterdir():
            if p.name.endswith(".json"):
                found.setdefault(p.name[: -len(".json")], p)
    return found


def list_configs() -> list[str]:
    """Names of the known configs."""
    return sorted(_config_files())


def get_config(name: str) -> ModelConfig:
    """A known config by name (e.g. ``deeclip-vit-l-14``)."""
    files = _config_files()
    if name not in files:
        raise KeyError(f"no model config named {name!r}; known: {', '.join(sorted(files))}")
    return ModelConfig.from_json(files[name].read_text())
