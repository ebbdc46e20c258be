"""`forensix weights import`: an authors' checkpoint of any registered family in, forensix safetensors out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import __version__
from .models.checkpoints import CheckpointError, check_loadable, has_lora_keys, read_model_file, save_checkpoint
from .models.config import ModelConfig
from .models.registry import ConvertOptions, get_format


def import_checkpoint(
    src: Path,
    dest: Path,
    *,
    feature_layers: tuple[int, ...] | None = None,
    merge_lora: bool = True,
    lora_alpha: float = 32.0,
    threshold: float | None = None,
) -> ModelConfig:
    """Convert an authors' checkpoint (DeeCLIP, DeCLIP, a UnivFD head, ...); every key and shape is checked
    before writing.

    ``feature_layers``, ``merge_lora`` and ``lora_alpha`` concern families that use them (DeeCLIP); a
    DeCLIP file names its feature layer and decoder itself.
    """
    src, dest = Path(src), Path(dest)
    if dest.suffix != ".safetensors":
        raise CheckpointError(f"{dest}: the output must be a .safetensors file")
    options = ConvertOptions(feature_layers=feature_layers, merge_lora=merge_lora, lora_alpha=lora_alpha)
    found = read_model_file(src, options=options)
    if found.native:
        raise CheckpointError(f"{src}: already a forensix checkpoint ({found.config.name}); nothing to import")
    cfg = found.config if threshold is None else replace(found.config, threshold=threshold, band_low=None)
    kept_lora = has_lora_keys(found.state)
    check_loadable(replace(found, config=cfg))
    recipe = {"lora": "kept" if kept_lora else "merged"} if cfg.lora is not None else {}
    provenance = {
        **found.provenance,
        **recipe,
        **found.recipe,
        "trained_on": get_format(found.format)[1].trained_on,
        "forensix_version": __version__,
    }
    save_checkpoint(dest, cfg, found.state, provenance)
    return cfg
