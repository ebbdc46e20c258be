"""Reading and writing weights files: strict loading, forensix's own safetensors format, and reading any
weights file a registered family knows.

Foreign checkpoints are recognised and translated by their family (models/registry.py: a pure
function, state dict in, forensix config and state dict out, every key accounted for), then loaded
strictly by :func:`load_weights`, which names every missing, unexpected or mis-shaped key. Pickles
are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import weights as W
from ..files import new_file_mode, replacing
from ..text import one_line, plain
from .config import ModelConfig
from .factory import create_model
from .registry import CheckpointFormat, ConvertOptions, find_format, get_format

FORMAT_NAME = "forensix"  # what forensix writes into the metadata of its safetensors and ONNX files
FORMAT_VERSION = "1"


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
        with open_safetensors(path) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    try:
        zipped = zipfile.is_zipfile(path)
    except zipfile.BadZipFile as e:  # is_zipfile raises for some damaged end records (a "multi-disk" zip)
        raise CheckpointError(f"{path}: not a readable weights file (damaged zip archive: {e})") from None
    # Legacy (pre-1.6) torch pickles are not zip archives and can't be memory-mapped.
    return _torch_load(path, mmap=zipped)


def _torch_load(path: Path, mmap: bool) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types for bad files; all mean "not usable"
        raise CheckpointError(f"{path}: not a readable weights file ({_load_error(e)})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def _load_error(error: Exception) -> str:
    """What torch.load's error says about the file, in one plain line.

    A refused pickle's message opens with advice to load it unsafely (with terminal bold in it); what
    is wrong with the file follows "WeightsUnpickler error:".
    """
    text = plain(str(error)).strip()
    _, marker, after = text.partition("WeightsUnpickler error:")
    if marker and after.strip():
        return "its pickle is refused: " + after.strip().splitlines()[0].split(". ")[0].rstrip(".")
    return text.splitlines()[0] if text else type(error).__name__


def is_safetensors(path: Path) -> bool:
    """safetensors files start with a little-endian u64 header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


@contextmanager
def open_safetensors(path: Path) -> Iterator[Any]:
    """safetensors' reader of ``path``; a header it refuses (bad JSON or UTF-8, offsets or shapes out of
    range) or a tensor it cannot read is a CheckpointError that says what safetensors found."""
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as e:
        text = plain(str(e)).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({first})") from None


def safetensors_metadata(path: Path) -> dict[str, str]:
    with open_safetensors(path) as f:
        return dict(f.metadata() or {})


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


def has_lora_keys(state: Mapping[str, Any]) -> bool:
    """Whether a state dict keeps peft's LoRA adapters (not merged into the weights)."""
    return any(".lora_A." in k for k in state)


def build_and_load(cfg: ModelConfig, state: Mapping[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """Build ``cfg`` on the meta device (no wasted initialisation) and load ``state`` into it."""
    with torch.device("meta"):
        model = create_model(cfg, with_lora=has_lora_keys(state))
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
    write_safetensors(Path(path), tensors, metadata)


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file whole (files.replacing), with the permissions the umask gives any new file
    (safetensors itself makes files 0600)."""
    with replacing(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
        os.chmod(tmp, new_file_mode())


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
    except Exception as e:  # noqa: BLE001 - whatever untrusted JSON makes the config classes raise
        raise CheckpointError(f"{path}: bad config in metadata ({one_line(str(e)) or type(e).__name__})") from e
    return cfg, read_state_dict(path), provenance


# --------------------------------------------------------------------------------------------
# Any weights file: forensix's own, or an authors' checkpoint a family recognises


def with_article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def check_kind(found: str, wanted: str | None, source: str) -> None:
    """CheckpointError when a file holds another kind of model than the one asked for."""
    if wanted is not None and found != wanted:
        hint = ": use --attributor" if found == "attributor" else ""
        raise CheckpointError(f"{source}: {with_article(found)}, not {with_article(wanted)}{hint}")


@dataclass
class ModelFile:
    """A weights file translated into forensix's terms, ready for :func:`build_and_load`.

    ``native``: a forensix ``.safetensors`` (its calibration is inside it), not an authors' file
    (whose calibration lives in a sidecar, see ``forensix calibrate``). ``recipe``: what the
    authors' file says of how it was made (for ``weights import``'s provenance).
    """

    config: ModelConfig
    state: dict[str, torch.Tensor]
    provenance: dict[str, Any]
    sha256: str
    source: str
    native: bool
    format: str = FORMAT_NAME
    recipe: dict[str, Any] = field(default_factory=dict)


def read_model_file(
    path: str | Path,
    *,
    kind: str | None = None,
    options: ConvertOptions | None = None,
    companions: Mapping[str, Path] | None = None,
    sha256: str | None = None,
) -> ModelFile:
    """Read a forensix ``.safetensors`` or any authors' checkpoint a registered family recognises.

    ``kind`` (detector | localizer | attributor), if given, must be what the file holds.
    ``companions``: the other files the checkpoint needs, by role (``{}``: none may be needed); by
    default (None) those the weights manifest names for its format. ``sha256``: the file's, if the
    caller has just computed it. Every key and shape is checked later, by the strict load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    options = options or ConvertOptions()
    digest = sha256 or W.cached_sha256(path)
    if is_safetensors(path):
        cfg, state, provenance = read_checkpoint(path)
        check_kind(cfg.kind, kind, str(path))
        return ModelFile(cfg, state, provenance, digest, str(path), native=True)
    obj = read_state_dict(path)
    found = find_format(obj)
    if found is None:
        raise CheckpointError(f"{path}: not a weights file of any known model family (its keys match no layout)")
    family, fmt = found
    check_kind(family.kind, kind, str(path))
    files = companion_files(fmt, fmt.companions(obj), path, companions)
    loaded = {role: read_state_dict(p) for role, p in files.items()}
    cfg, state = fmt.convert(obj, replace(options, companions=loaded), str(path))
    provenance = {
        "source_file": path.name,
        "source_sha256": digest,
        **{f"{role}_file": p.name for role, p in files.items()},
        "source_format": fmt.name,
    }
    return ModelFile(cfg, state, provenance, digest, str(path), native=False, format=fmt.name, recipe=fmt.recipe(obj))


def check_loadable(found: ModelFile) -> None:
    """CheckpointError unless ``found`` loads strictly into its model (built on the meta device: no memory)."""
    with torch.device("meta"):
        check_state_dict(create_model(found.config, with_lora=has_lora_keys(found.state)), found.state, found.source)


def companion_files(
    fmt: CheckpointFormat, roles: tuple[str, ...], path: Path, given: Mapping[str, Path] | None
) -> dict[str, Path]:
    """The files of ``roles`` for a checkpoint at ``path``: ``given``, else the manifest's for its format."""
    if not roles:
        return {}
    if given is not None:
        files = {role: Path(given[role]) for role in roles if role in given}
        entry = None
    else:
        entry = next(
            (e for e in W.load_manifest().values() if e.format == fmt.name and set(roles) <= {f.role for f in e.files}),
            None,
        )
        if entry is None:
            raise CheckpointError(f"{path}: a {fmt.name} checkpoint needs its {', '.join(roles)} files; none are known")
        files = {role: W.local_path(entry.file(role)) for role in roles}
        W.check_files(entry, files)
    missing = [str(files.get(role, role)) for role in roles if role not in files or not files[role].is_file()]
    if missing:
        fetch = ""
        if entry is not None:  # the entries that fetch just these files (the backbones), else this one
            names = {Path(m).name for m in missing}
            holders = [e.name for e in W.load_manifest().values() if e.kind == "backbone" and e.files[0].file in names]
            fetch = ": get them with: " + " and ".join(f"forensix weights fetch {h}" for h in holders or [entry.name])
        raise W.WeightsMissing(
            f"{path} is a {fmt.name} checkpoint that needs other files ({', '.join(missing)}){fetch}"
        )
    return files


def read_manifest_entry(name: str, kind: str) -> ModelFile:
    """The model of a weights-manifest entry of ``kind``; WeightsMissing if its files are not on disk."""
    entry = W.get_entry_of_kind(name, kind)
    paths = W.resolve(name)
    _, fmt = get_format(entry.format)
    main = paths.pop(fmt.main_role)
    return read_model_file(main, kind=kind, companions=paths)
