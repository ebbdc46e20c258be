"""Official checkpoints → forensix: equivalence with the authors' architecture, strict key checks."""

import json
import re

import pytest
import torch
from conftest import UNIVFD_HEAD
from reference_deeclip import LAYERS_FULL, RefDeeCLIP
from safetensors.torch import save_file
from typer.testing import CliRunner

from forensix.cli import app
from forensix.download import sha256_file
from forensix.imaging import preprocess
from forensix.loading import calibration_sidecar, load_weights
from forensix.models.checkpoints import (
    CheckpointError,
    build_and_load,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from forensix.models.config import PreprocessConfig, get_config
from forensix.models.deeclip import convert_deeclip
from forensix.models.factory import create_model
from forensix.models.lora import has_lora, merge_lora
from forensix.models.registry import ConvertOptions
from forensix.models.univfd import convert_univfd

TOL = 1e-4  # |Δ logit| in fp32, from the issue


def _batch(images):
    return torch.stack([preprocess(im, PreprocessConfig()) for im in images])


def test_tiny_official_checkpoint_scores_like_the_reference(tiny_reference, tiny_official_file, images):
    state = read_state_dict(tiny_official_file)
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)
    model = build_and_load(cfg, converted)
    assert not has_lora(model)  # merged at import
    x = _batch(images)
    with torch.no_grad():
        ref, ours = tiny_reference(x), model(x)
    assert (ref - ours).abs().max().item() <= TOL
    # The comparison means something: the logits differ between images by far more than TOL.
    assert (ref.max() - ref.min()).item() > 100 * TOL


def test_unmerged_lora_gives_the_same_scores_and_merges_to_them(tiny_reference, tiny_official_file, images):
    state = read_state_dict(tiny_official_file)
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0, merge_lora=False)
    assert any(k.endswith("q_proj.lora_A.default.weight") for k in converted)
    model = build_and_load(cfg, converted)
    assert has_lora(model)
    x = _batch(images[:3])
    with torch.no_grad():
        ref, unmerged = tiny_reference(x), model(x)
        assert merge_lora(model) == 3 * 3  # q, k, v in each of the 3 blocks that run
        merged = model(x)
    assert (ref - unmerged).abs().max().item() <= TOL
    assert (ref - merged).abs().max().item() <= TOL


def test_keys_without_base_layer_are_accepted(tiny_reference, images):
    """Older peft saved the frozen weight as q_proj.weight rather than q_proj.base_layer.weight."""
    state = tiny_reference.official_state_dict(base_layer=False)
    state["clip_model.base_model.model.vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)
    model = build_and_load(cfg, converted)
    x = _batch(images[:2])
    with torch.no_grad():
        assert (tiny_reference(x) - model(x)).abs().max().item() <= TOL


def test_architecture_is_inferred_from_shapes(tiny_official_file):
    cfg, _ = convert_deeclip(read_state_dict(tiny_official_file), feature_layers=(1, 2, 3), lora_alpha=8.0)
    v = cfg.vision
    assert (v.width, v.layers, v.heads, v.patch_size, v.image_size, v.output_dim) == (64, 4, 1, 14, 224, 48)
    assert cfg.fuser_hidden == 4 and cfg.lora.r == 4 and cfg.blocks_needed == 3


def test_unused_last_block_is_neither_built_nor_loaded(tiny_official_file):
    cfg, converted = convert_deeclip(read_state_dict(tiny_official_file), feature_layers=(1, 2, 3), lora_alpha=8.0)
    assert not any("resblocks.3." in k for k in converted)
    model = build_and_load(cfg, converted)
    assert model.backbone.num_blocks == 3


def test_other_depth_needs_feature_layers(tiny_official_file):
    with pytest.raises(CheckpointError, match="feature_layers"):
        convert_deeclip(read_state_dict(tiny_official_file))


def _official(tiny_reference):
    return tiny_reference.official_state_dict()


def test_unexpected_key_is_named(tiny_reference):
    state = _official(tiny_reference)
    state["mmfuser.extra.weight"] = torch.zeros(3)
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)
    with pytest.raises(CheckpointError, match=r"unexpected key fuser\.extra\.weight"):
        build_and_load(cfg, converted)
    state = _official(tiny_reference)
    state["something.else"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"something\.else"):
        convert_deeclip(state, feature_layers=(1, 2, 3))


def test_missing_key_is_named(tiny_reference):
    state = _official(tiny_reference)
    del state["mmfuser.norm3.weight"]
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)
    with pytest.raises(CheckpointError, match=r"missing key fuser\.norm3\.weight \(expected shape \(64,\)\)"):
        build_and_load(cfg, converted)


def test_wrong_shape_is_named(tiny_reference):
    state = _official(tiny_reference)
    state["mmfuser.gamma1"] = torch.ones(63)
    cfg, converted = convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)
    with pytest.raises(CheckpointError, match=r"fuser\.gamma1 has shape \(63,\), expected \(64,\)"):
        build_and_load(cfg, converted)


def test_half_a_lora_adapter_is_an_error(tiny_reference):
    state = _official(tiny_reference)
    del state["clip_model.base_model.model.vision_model.encoder.layers.1.self_attn.v_proj.lora_B.default.weight"]
    with pytest.raises(CheckpointError, match=r"resblocks\.1\.attn\.v_proj has a LoRA adapter without lora_B"):
        convert_deeclip(state, feature_layers=(1, 2, 3), lora_alpha=8.0)


def test_not_a_deeclip_file():
    with pytest.raises(CheckpointError, match="not a DeeCLIP checkpoint"):
        convert_deeclip({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)})


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        read_state_dict(bad)


class NotAllowed:
    """A class outside torch's allowed globals."""


def test_a_refused_pickle_says_why_in_plain_text(tmp_path):
    """torch's message opens with advice to load it unsafely, in terminal bold; the error says what is wrong."""
    torch.save({"model": NotAllowed()}, path := tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError) as refused:
        read_state_dict(path)
    message = str(refused.value)
    assert "\x1b" not in message and "trust the source" not in message
    assert message == (
        f"{path}: not a readable weights file (its pickle is refused: Unsupported global: "
        "GLOBAL test_checkpoints.NotAllowed was not an allowed global by default)"
    )


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code on load is rejected, not executed."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_forensix_format_round_trip(tmp_path, tiny_official_file, images):
    cfg, converted = convert_deeclip(read_state_dict(tiny_official_file), feature_layers=(1, 2, 3), lora_alpha=8.0)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, cfg, converted, {"source_file": "x.pth", "trained_on": "toy"})
    cfg2, state2, provenance = read_checkpoint(path)
    assert cfg2 == cfg and provenance["trained_on"] == "toy"
    # The tensors round-trip bit for bit; the logits only to float32 rounding, because the converted
    # tensors are views (strided) and matmul kernels sum in another order on them.
    assert state2.keys() == converted.keys()
    assert all(torch.equal(state2[k], converted[k]) for k in converted)
    a, b = build_and_load(cfg, converted), build_and_load(cfg2, state2)
    x = _batch(images[:2])
    with torch.no_grad():
        assert (a(x) - b(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_safetensors_files_get_the_umask_s_permissions_and_land_whole(tmp_path, umask):
    import os

    from forensix.models.checkpoints import write_safetensors

    before = os.umask(umask)
    try:
        write_safetensors(tmp_path / "m.safetensors", {"a": torch.arange(3.0)}, {"k": "v"})
    finally:
        os.umask(before)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left beside it


def test_safetensors_without_forensix_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without forensix metadata"):
        read_checkpoint(path)


def _tiny_openai_clip(seed: int = 0):
    """A tiny CLIP vision tower in OpenAI/open_clip layout (fused in_proj), plus a text key."""
    import open_clip

    torch.manual_seed(seed)
    cfg = get_config("univfd-tiny").vision
    model = open_clip.model._build_vision_tower(
        cfg.output_dim,
        open_clip.model.CLIPVisionCfg(
            layers=cfg.layers,
            width=cfg.width,
            head_width=cfg.width // cfg.heads,
            patch_size=cfg.patch_size,
            image_size=cfg.image_size,
        ),
        quick_gelu=True,
    ).eval()
    state = {"visual." + k: v for k, v in model.state_dict().items()}
    state["token_embedding.weight"] = torch.zeros(10, 8)  # text tower keys are ignored
    return model, state


def test_univfd_matches_open_clip_encode_image(images):
    """The released 768-d head on a tiny OpenAI-layout tower: our split-q/k/v model vs open_clip's own."""
    visual, clip_state = _tiny_openai_clip()
    head = read_state_dict(UNIVFD_HEAD)
    assert head["weight"].shape == (1, 768)
    cfg, state = convert_univfd(head, clip_state)
    model = build_and_load(cfg, state)
    x = torch.stack([preprocess(im, cfg.preprocess) for im in images])
    with torch.no_grad():
        ref = (visual(x) @ head["weight"].T + head["bias"]).squeeze(-1)
        assert (model(x) - ref).abs().max().item() <= TOL
        assert (model.embed(x) - visual(x)).abs().max().item() <= TOL  # eval --embeddings maps open_clip's embedding


def test_univfd_head_must_be_a_linear():
    _, clip_state = _tiny_openai_clip()
    with pytest.raises(CheckpointError, match="exactly 'weight' and 'bias'"):
        convert_univfd({"weight": torch.zeros(1, 768)}, clip_state)


def test_factory_builds_tiny_and_full_configs_from_the_same_code():
    with torch.device("meta"):
        full = create_model(get_config("deeclip-vit-l-14"), with_lora=True)
    tiny = create_model(get_config("deeclip-tiny"), with_lora=True)

    # The same modules in the same order (block indices aside), at two sizes.
    def layout(model):
        return [(re.sub(r"\.\d+(?=\.|$)", ".N", n), type(m).__name__) for n, m in model.named_modules()]

    assert list(dict.fromkeys(layout(full))) == list(dict.fromkeys(layout(tiny)))
    assert full.proj.weight.shape == (768, 1024) and tiny.proj.weight.shape == (48, 64)
    assert full.backbone.num_blocks == 23  # hidden_states[23] is the deepest feature: block 24 is skipped
    trainable = sum(p.numel() for p in full.parameters() if p.requires_grad)
    # The paper's 3,164,677 trainable parameters include LoRA on the never-used 24th block (3 x 2 x 16 x 1024).
    assert trainable == 3_164_677 - 3 * 2 * 16 * 1024
    without_lora = sum(p.numel() for n, p in full.named_parameters() if "lora_" not in n)
    # The release's 306,344,453 parameters minus its LoRA (24 x 3 x 2 x 16 x 1024), the 24th block and
    # post_layernorm, neither of which DeeCLIP reads.
    block = 4 * (1024 * 1024 + 1024) + 2 * 2 * 1024 + (4096 * 1024 + 4096) + (1024 * 4096 + 1024)
    assert without_lora == 306_344_453 - 24 * 3 * 2 * 16 * 1024 - block - 2 * 1024


@pytest.mark.slow
def test_full_size_vit_l14_official_layout_scores_like_the_reference(tmp_path, images):
    """ViT-L/14 at full size, random weights, through a real file: the shipped config's layout."""
    torch.manual_seed(0)
    ref = RefDeeCLIP(width=1024, layers=24, heads=16, patch=14, image=224, proj=768, feature_layers=LAYERS_FULL).eval()
    path = tmp_path / "deeclip_weight_complete_with_lora_5.pth"
    state = ref.official_state_dict()
    assert len(state) == 551
    torch.save(state, path)
    x = _batch(images[:2])
    with torch.no_grad():
        expected = ref(x)
    del ref, state
    cfg, converted = convert_deeclip(read_state_dict(path))
    assert cfg == get_config("deeclip-vit-l-14") or cfg.name == "deeclip-vit-l-14"
    model = build_and_load(cfg, converted)
    with torch.no_grad():
        got = model(x)
    assert (expected - got).abs().max().item() <= TOL


def test_multi_head_attention_splits_heads_like_the_reference(images):
    """Four heads of width 16: head splitting in SplitQKVAttention vs transformers' CLIPAttention."""
    torch.manual_seed(2)
    ref = RefDeeCLIP(
        width=64, layers=3, heads=4, patch=14, image=224, proj=48, feature_layers=[1, 2], rank=4, alpha=8.0
    ).eval()
    cfg, converted = convert_deeclip(ref.official_state_dict(), feature_layers=(1, 2), heads=4, lora_alpha=8.0)
    assert cfg.vision.heads == 4
    model = build_and_load(cfg, converted)
    x = _batch(images[:3])
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max().item() <= TOL


# ------------------------------------------------------------------------------------------------
# Broken files: one clear line, never a traceback (issue 14, defect 5)


def _raw_safetensors(path, header: bytes, data: bytes = b"\0" * 8):
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize(
    "header, found",
    [
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "x": [1, 2', "invalid JSON"),
        (json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}).encode(), "offset"),
        (json.dumps({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}).encode(), "overflow"),
        (b'{"\xff\xfe": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', "UTF-8"),
    ],
    ids=["json", "offsets", "shape", "utf8"],
)
def test_a_corrupt_safetensors_file_is_one_line_and_exit_2(tmp_path, images, header, found):
    bad = _raw_safetensors(tmp_path / "bad.safetensors", header)
    with pytest.raises(CheckpointError, match=f"bad.safetensors: not a readable safetensors file .*{found}"):
        read_state_dict(bad)
    images[0].save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "a.png"), "--weights", str(bad), "--workers", "0"])
    assert result.exit_code == 2 and "not a readable safetensors file" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("threshold", ["NaN", 7.5, -0.1, "0.5", True], ids=["nan", "7.5", "negative", "string", "bool"])
def test_a_stored_threshold_outside_0_1_is_refused_at_load(tmp_path, threshold):
    cfg = get_config("deeclip-tiny")
    meta = json.loads(cfg.to_json()) | {"threshold": float("nan") if threshold == "NaN" else threshold}
    path = tmp_path / "edited.safetensors"
    save_file(
        {k: v.contiguous() for k, v in create_model(cfg).state_dict().items()},
        str(path),
        metadata={"format": "forensix", "format_version": "1", "config": json.dumps(meta), "provenance": "{}"},
    )
    with pytest.raises(CheckpointError, match=r"bad config in metadata \(threshold must be a number in \[0, 1\]"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"vision": {"heads": 0}}, "VisionConfig.heads must be a whole number from 1"),  # was ZeroDivisionError
        ({"vision": {"layers": 10**9}}, "VisionConfig.layers must be a whole number from 1"),  # would build forever
        ({"vision": {"width": "wide"}}, "VisionConfig.width must be a whole number"),
        ({"vision": {"mlp_ratio": -4}}, "mlp_ratio must be a number in (0, 64]"),
        ({"preprocess": {"crop": 0}}, "PreprocessConfig.crop must be a whole number"),
        ({"lora": {"r": 0}}, "LoraConfig.r must be a whole number"),
        ({"vision": []}, "bad config in metadata"),
    ],
)
def test_a_stored_config_with_impossible_sizes_is_one_line_naming_the_field(tmp_path, edit, named):
    """Found by the checkpoint fuzzer: a config is untrusted JSON, whatever the file's other bytes."""
    cfg = get_config("deeclip-tiny")
    meta = json.loads(cfg.to_json())
    for key, value in edit.items():
        meta[key] = {**meta[key], **value} if isinstance(value, dict) and isinstance(meta.get(key), dict) else value
    path = tmp_path / "edited.safetensors"
    save_file(
        {"fc.bias": torch.zeros(1)},
        str(path),
        metadata={"format": "forensix", "format_version": "1", "config": json.dumps(meta), "provenance": "{}"},
    )
    with pytest.raises(CheckpointError, match=re.escape(named)) as raised:
        read_checkpoint(path)
    assert "\n" not in str(raised.value)


def test_a_calibration_sidecar_with_a_nan_threshold_names_itself(tiny_official_file, tmp_path):
    official = tmp_path / tiny_official_file.name
    official.write_bytes(tiny_official_file.read_bytes())
    sidecar = calibration_sidecar(official)
    digest = sha256_file(official)
    sidecar.write_text(json.dumps({"threshold": "NaN", "weights_sha256": digest}))
    with pytest.raises(CheckpointError, match=r"calibration.json: threshold must be a number in \[0, 1\], got nan"):
        load_weights(official, "detector", ConvertOptions(feature_layers=(1, 2, 3)))
