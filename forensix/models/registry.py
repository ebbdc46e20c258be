"""The model families forensix knows: what each is, how to build it, and how to read its authors' checkpoints.

A family's module (``models/deeclip.py``, ...) declares itself in one place, with
``register_family(Family(...))`` at the end of the module, as timm's ``@register_model``:

- ``arch``: the name configs give in their ``arch`` field;
- ``kind``: ``detector`` (one logit per image), ``localizer`` (a map of logits per image) or
  ``attributor`` (one logit per class); the kind fixes what the model's output means, how it is
  scored, scanned, evaluated and exported;
- ``build``: config in, module (random weights) out;
- ``fields``: the optional config fields it reads (``lora``, ``decoder``, ...; the others must be
  unset) and ``check``: its own checks of a config;
- ``formats``: the authors' checkpoint layouts it reads (:class:`CheckpointFormat`: recognise, then
  a pure translation to a forensix config and state dict, then a strict load).

``forensix.models`` imports every bundled family, so the registry is full whenever a config exists;
a family defined elsewhere registers when its module is imported. The factory, the loaders,
``weights import``, ``train --init`` and ``export-onnx`` ask the registry and never branch on a
family's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import ModelConfig

KINDS = ("detector", "localizer", "attributor")
# What the optional config fields are, for messages ("deeclip has no mask decoder").
OPTIONAL_FIELDS = {
    "lora": "LoRA settings",
    "decoder": "mask decoder",
    "cnn": "CNN backbone",
    "attribution": "attribution settings",
}


@dataclass(frozen=True)
class ConvertOptions:
    """Choices a translation may need beyond the file itself.

    ``feature_layers``: which hidden states a DeeCLIP-like fuser reads (for backbones of another
    depth than the release); ``merge_lora``: fold LoRA into the weights (inference) or keep peft's
    adapters (training goes on); ``companions``: the other files a checkpoint needs, by role (a
    UnivFD head's CLIP, a decoder-only DeCLIP's backbones), as loaded state dicts.
    """

    feature_layers: tuple[int, ...] | None = None
    merge_lora: bool = True
    lora_alpha: float = 32.0
    companions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


Converter = Callable[[Mapping[str, Any], ConvertOptions, str], "tuple[ModelConfig, dict[str, torch.Tensor]]"]


def _no_companions(obj: Mapping[str, Any]) -> tuple[str, ...]:
    return ()


def _no_recipe(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class CheckpointFormat:
    """One of the authors' checkpoint layouts.

    ``recognise(obj)``: whether a loaded file (state dict, or the authors' dict around one) is in
    this layout; ``convert(obj, options, source)``: a pure function to (config, state dict), every
    key accounted for (``source`` names the file in errors). ``companions(obj)``: the roles of the
    other files this checkpoint needs (found through the weights manifest unless given).
    ``recipe(obj)``: what the file says about how it was made, for the provenance. ``main_role``:
    the role of the file itself among a manifest entry's files.
    """

    name: str
    recognise: Callable[[Mapping[str, Any]], bool]
    convert: Converter
    main_role: str = "checkpoint"
    companions: Callable[[Mapping[str, Any]], tuple[str, ...]] = _no_companions
    recipe: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_recipe
    trained_on: str = "as released by the authors"


def _all_layers(cfg: ModelConfig) -> int:
    return cfg.vision.layers


def _no_check(cfg: ModelConfig) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """A model family: see the module docstring."""

    arch: str
    kind: str
    build: Callable[[ModelConfig], nn.Module]
    fields: tuple[str, ...] = ()
    check: Callable[[ModelConfig], None] = _no_check
    blocks_needed: Callable[[ModelConfig], int] = _all_layers
    formats: tuple[CheckpointFormat, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)  # its own config settings, with defaults
    configs: Path | None = None  # a folder of its JSON configs, for a family outside forensix/models/configs

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"family {self.arch!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        unknown = set(self.fields) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValueError(f"family {self.arch!r}: no optional config fields {sorted(unknown)}")

    def validate(self, cfg: ModelConfig) -> None:
        """Raise ValueError if ``cfg`` sets what this family does not read, or fails its checks."""
        for name, what in OPTIONAL_FIELDS.items():
            if name not in self.fields and getattr(cfg, name) is not None:
                raise ValueError(f"{self.arch} has no {what}; {name} must be null")
        unknown = set(cfg.settings) - set(self.settings)
        if unknown:
            raise ValueError(f"{self.arch} has no settings {sorted(unknown)}; known: {sorted(self.settings) or 'none'}")
        self.check(cfg)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` known by its arch name (a second family of the same name is an error)."""
    if family.arch in _FAMILIES and _FAMILIES[family.arch] != family:
        raise ValueError(f"a model family named {family.arch!r} is already registered")
    for fmt in family.formats:
        owner = next((f.arch for f in _FAMILIES.values() for g in f.formats if g.name == fmt.name), family.arch)
        if owner != family.arch:
            raise ValueError(f"checkpoint format {fmt.name!r} already belongs to family {owner!r}")
    _FAMILIES[family.arch] = family
    return family


def get_family(arch: str) -> Family:
    if arch not in _FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[arch]


def families() -> list[Family]:
    return list(_FAMILIES.values())


def find_format(obj: Mapping[str, Any]) -> tuple[Family, CheckpointFormat] | None:
    """The family and layout of a loaded foreign checkpoint, or None if no family recognises it."""
    for family in _FAMILIES.values():
        for fmt in family.formats:
            if fmt.recognise(obj):
                return family, fmt
    return None


def get_format(name: str) -> tuple[Family, CheckpointFormat]:
    """A checkpoint layout by name (a weights manifest entry's ``format``)."""
    for family in _FAMILIES.values():
        for fmt in family.formats:
            if fmt.name == name:
                return family, fmt
    known = ", ".join(sorted(f.name for fam in _FAMILIES.values() for f in fam.formats))
    raise ValueError(f"unknown checkpoint format {name!r}; known: {known}")
