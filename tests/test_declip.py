"""DeCLIP: the model, its configs, and the official checkpoint's import, against the authors' layout."""

from dataclasses import replace

import pytest
import torch
from conftest import random_image
from reference_declip import RefDeCLIP, RefDeCLIPViTRN50

from forensix.imaging import preprocess
from forensix.models.checkpoints import (
    CheckpointError,
    build_and_load,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from forensix.models.config import (
    DecoderConfig,
    ModelConfig,
    PreprocessConfig,
    ResNetConfig,
    get_config,
    list_configs,
)
from forensix.models.declip import AttentionDecoder, ConvDecoder, DeCLIP, LinearDecoder, convert_declip
from forensix.models.factory import create_model
from forensix.models.registry import find_format

TOL = 1e-4  # |Δ logit| in fp32
SQUASH = PreprocessConfig(mode="squash", resize=224, crop=224, interpolation="bilinear")
# A 4-block tower read at layer2 (= hidden_states[3]): block 3 must be neither built nor loaded.
TINY = dict(width=64, layers=4, heads=1, patch=14, image=224, output_dim=48, feature_layer="layer2")
TINY_FILTERS = [64, 32, 16, 8, 8]


def _batch(images):
    return torch.stack([preprocess(im, SQUASH) for im in images])


def _reference(decoder_type: str, images, seed: int = 0, **kw) -> RefDeCLIP:
    torch.manual_seed(seed)
    args = {**TINY, **kw}
    filters = [args["width"], *TINY_FILTERS[1:]] if decoder_type.startswith("conv") else None
    ref = RefDeCLIP(**args, decoder_type=decoder_type, filter_sizes=filters)
    return ref.randomize(_batch(images[:2]), seed=seed)


@pytest.fixture(scope="module")
def ref_images():
    sizes = [(225, 301), (640, 480), (301, 225), (1000, 224), (224, 224), (513, 997)]
    return [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="module")
def conv20(ref_images) -> RefDeCLIP:
    return _reference("conv-20", ref_images)


@pytest.fixture(scope="module")
def vitrn50(ref_images) -> RefDeCLIPViTRN50:
    """A tiny "ViT-L/14,RN50" localizer: the ViT's 64 channels + RN50 layer3's 128 (width 8)."""
    torch.manual_seed(3)
    ref = RefDeCLIPViTRN50(
        **TINY, decoder_type="conv-4", filter_sizes=[64 + 128, 16, 8, 8, 8], rn_layers=[1, 2, 1, 1], rn_width=8
    )
    return ref.randomize(_batch(ref_images[:2]), seed=3)


@pytest.fixture(scope="module")
def conv20_file(tmp_path_factory, conv20):
    path = tmp_path_factory.mktemp("declip") / "declip_tiny_conv20.pth"
    torch.save(conv20.official_checkpoint(), path)
    return path


def _compare(ref: RefDeCLIP, model: DeCLIP, x: torch.Tensor) -> float:
    with torch.no_grad():
        expected = ref(x).view(-1, 256, 256)
        got = model(x)
    assert got.shape == expected.shape == (x.shape[0], 256, 256)
    # The comparison means something: logits vary across pixels and images by far more than TOL.
    assert (expected.amax(dim=(1, 2)) - expected.amin(dim=(1, 2))).min().item() > 100 * TOL
    assert (expected[0] - expected[1]).abs().max().item() > 100 * TOL
    return (expected - got).abs().max().item()


# ------------------------------------------------------------------------------------------------
# Equivalence with the authors' layout


def test_official_conv20_file_gives_the_reference_masks(conv20, conv20_file, ref_images):
    obj = read_state_dict(conv20_file)  # torch.load(weights_only=True): strings, ints, optimizer state
    assert find_format(obj)[1].name == "declip-official"
    cfg, state = convert_declip(obj, source=str(conv20_file))
    assert not any(k.startswith("optimizer") for k in state)
    assert cfg.arch == "declip" and cfg.name == "declip-custom"
    assert cfg.feature_layers == (3,) and cfg.blocks_needed == 3
    assert cfg.decoder == DecoderConfig(kind="conv-20", channels=(32, 16, 8, 8), mask_size=256)
    assert cfg.preprocess == SQUASH
    model = build_and_load(cfg, state, source=str(conv20_file))
    assert _compare(conv20, model, _batch(ref_images)) <= TOL


@pytest.mark.parametrize("kind", ["linear", "conv-4"])
def test_linear_and_conv4_decoders_give_the_reference_masks(kind, ref_images):
    ref = _reference(kind, ref_images, seed=3)
    cfg, state = convert_declip(ref.official_checkpoint())
    assert cfg.decoder.kind == kind
    model = build_and_load(cfg, state)
    assert isinstance(model.decoder, LinearDecoder if kind == "linear" else ConvDecoder)
    assert _compare(ref, model, _batch(ref_images[:4])) <= TOL


def test_attention_decoder_gives_the_reference_masks(ref_images):
    """width 128: two heads in the backbone and in att1/att2 (width // 64), causal mask over 257 tokens."""
    ref = _reference("attention", ref_images, seed=4, width=128, heads=2)
    cfg, state = convert_declip(ref.official_checkpoint(), heads=2)
    assert {k.split(".")[1] for k in state if k.startswith("decoder.")} == {"att1", "att2", "fc"}
    model = build_and_load(cfg, state)
    assert isinstance(model.decoder, AttentionDecoder)
    assert model.decoder.att1.attn.num_heads == 2
    assert _compare(ref, model, _batch(ref_images[:4])) <= TOL


def test_conv4_reference_matches_the_bundled_tiny_config(ref_images):
    """declip-tiny.json describes the tiny layout the tests import (conv-4, widths 32-16-8-8)."""
    ref = _reference("conv-4", ref_images, seed=3)
    cfg, _ = convert_declip(ref.official_checkpoint())
    assert replace(cfg, name="declip-tiny") == get_config("declip-tiny")


def test_features_and_decoder_can_be_run_separately(conv20_file, ref_images):
    cfg, state = convert_declip(read_state_dict(conv20_file))
    model = build_and_load(cfg, state)
    x = _batch(ref_images[:2])
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        assert tokens.shape == (2, 257, 64)
        fmap = model.forward_features(x)
        assert fmap.shape == (2, 64, 16, 16)
        # Row-major: patch (row r, column c) is token 1 + 16 r + c.
        assert torch.equal(fmap[:, :, 2, 5], tokens[:, 1 + 16 * 2 + 5])
        full = model(x)
        assert torch.equal(model.forward_from_features(tokens), full)
        # A caller that shares a backbone pass may hold the patch tokens only.
        assert torch.equal(model.forward_from_features(tokens[:, 1:]), full)


def test_attention_decoder_needs_the_class_token():
    decoder = AttentionDecoder(64, grid=16, mask_size=256)
    with pytest.raises(ValueError, match="class token"):
        decoder(torch.zeros(1, 256, 64))


# ------------------------------------------------------------------------------------------------
# What is built and loaded


def test_blocks_after_the_feature_block_are_neither_built_nor_loaded(conv20_file):
    obj = read_state_dict(conv20_file)
    assert "model.visual.transformer.resblocks.3.attn.in_proj_weight" in obj["model"]
    cfg, state = convert_declip(obj)
    assert not any(".resblocks.3." in k for k in state)
    assert not any(k.startswith(("backbone.visual.ln_post.", "backbone.visual.proj")) for k in state)
    model = build_and_load(cfg, state)
    assert model.backbone.num_blocks == 3
    assert model.backbone.visual.proj is None and isinstance(model.backbone.visual.ln_post, torch.nn.Identity)


def test_attention_is_split_into_q_k_v_and_the_text_tower_dropped(conv20_file):
    obj = read_state_dict(conv20_file)
    _, state = convert_declip(obj)
    q = state["backbone.visual.transformer.resblocks.1.attn.q_proj.weight"]
    fused = obj["model"]["model.visual.transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(q, fused[:64])
    assert not any("token_embedding" in k or "ln_final" in k or "logit_scale" in k for k in state)


def test_full_size_layout_has_the_released_indices():
    """conv-20 at ViT-L/14 size: stage convs at 0,3,...,60 (BN at +1), final conv fc.64; layer20 = 21 blocks."""
    cfg = get_config("declip-vit-l-14-layer20-conv20")
    with torch.device("meta"):
        model = create_model(cfg)
    assert model.backbone.num_blocks == 21
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("decoder.")}
    convs = [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32, 35, 38, 41, 44, 48, 51, 54, 57, 60]
    widths = [1024] + [512] * 5 + [256] * 5 + [128] * 5 + [64] * 5
    for n, i in enumerate(convs):
        assert shapes[f"decoder.fc.{i}.weight"] == (widths[n + 1], widths[n], 5, 5)
        assert shapes[f"decoder.fc.{i + 1}.running_var"] == (widths[n + 1],)
    assert shapes["decoder.fc.64.weight"] == (1, 64, 5, 5)
    conv_keys = {int(k.split(".")[2]) for k, s in shapes.items() if k.endswith(".weight") and len(s) == 4}
    assert conv_keys == {*convs, 64}
    # 4 stages x 5 x (conv weight, bias; BN weight, bias, running mean, var, count) + the final conv
    assert len(shapes) == 20 * 7 + 2


@pytest.mark.parametrize(("kind", "final"), [("conv-4", 16), ("conv-12", 40), ("conv-20", 64)])
def test_conv_decoders_put_the_final_conv_where_the_authors_do(kind, final):
    decoder = ConvDecoder(1024, (512, 256, 128, 64), DecoderConfig(kind=kind).convs)
    assert isinstance(decoder.fc[final], torch.nn.Conv2d) and decoder.fc[final].out_channels == 1
    assert len(decoder.fc) == final + 1


def test_resized_conv_decoder_moves_the_final_conv_one_index_later():
    """The authors' RN50-based variants add Upsample(size=256) before the final conv: fc.65 for conv-20."""
    decoder = ConvDecoder(2048, (512, 256, 128, 64), 20, resize_to=256)
    assert isinstance(decoder.fc[64], torch.nn.Upsample) and decoder.fc[65].out_channels == 1
    assert decoder.fc[0].in_channels == 2048


# ------------------------------------------------------------------------------------------------
# Strict import


def _official(conv20):
    return conv20.official_checkpoint()


def test_missing_decoder_key_is_named(conv20):
    obj = _official(conv20)
    del obj["model"]["fc.4.running_var"]
    with pytest.raises(
        CheckpointError, match=r"does not match the checkpoint's decoder keys: missing fc\.4\.running_var"
    ):
        convert_declip(obj)


def test_missing_backbone_key_is_named(conv20):
    obj = _official(conv20)
    del obj["model"]["model.visual.ln_pre.weight"]
    cfg, state = convert_declip(obj)
    with pytest.raises(
        CheckpointError, match=r"missing key backbone\.visual\.ln_pre\.weight \(expected shape \(64,\)\)"
    ):
        build_and_load(cfg, state)


def test_wrong_shape_is_named_with_both_shapes(conv20):
    obj = _official(conv20)
    obj["model"]["fc.3.weight"] = torch.zeros(32, 31, 5, 5)
    cfg, state = convert_declip(obj, source="x.pth")
    with pytest.raises(
        CheckpointError,
        match=r"x\.pth: key decoder\.fc\.3\.weight has shape \(32, 31, 5, 5\), expected \(32, 32, 5, 5\)",
    ):
        build_and_load(cfg, state, source="x.pth")


def test_missing_batchnorm_counter_is_tolerated(conv20):
    """num_batches_tracked is unused at inference; some saves leave it out."""
    obj = _official(conv20)
    del obj["model"]["fc.1.num_batches_tracked"]
    cfg, state = convert_declip(obj)
    build_and_load(cfg, state)


@pytest.mark.parametrize(
    ("decoder_type", "message"),
    [
        ("conv-8", r"unknown decoder_type 'conv-8'; known: conv-4, conv-12, conv-20, linear, attention"),
        ("conv-4", r"decoder_type 'conv-4' has 4 convolutions plus a final one; the checkpoint's decoder has 21"),
        ("linear", r"'linear' has a Linear head at fc\.0; the checkpoint's fc\.0\.weight has shape \(32, 64, 5, 5\)"),
        ("attention", r"'attention' has a Linear head at fc\.0; .* \(a conv decoder\?\)"),
        (None, r"unknown decoder_type None"),
    ],
)
def test_decoder_type_that_does_not_fit_the_keys_is_an_error(conv20, decoder_type, message):
    obj = _official(conv20)
    obj["decoder_type"] = decoder_type
    with pytest.raises(CheckpointError, match=message):
        convert_declip(obj)


def test_linear_keys_under_another_decoder_type_are_an_error(ref_images):
    obj = _reference("linear", ref_images, seed=5).official_checkpoint()
    obj["decoder_type"] = "conv-20"
    with pytest.raises(CheckpointError, match=r"'conv-20' has 20 convolutions plus a final one; .* has 0 \(at none\)"):
        convert_declip(obj)
    obj["decoder_type"] = "attention"
    with pytest.raises(
        CheckpointError, match=r"'attention' does not match the checkpoint's decoder keys: missing att1\."
    ):
        convert_declip(obj)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("layer4", r"feature_layer 'layer4' is the output of block 4; the checkpoint's tower has 4 blocks"),
        ("block2", r"feature_layer 'block2' is not of the form 'layerN'"),
        (None, r"feature_layer None is not of the form 'layerN'"),
    ],
)
def test_bad_feature_layer_is_an_error(conv20, layer, message):
    obj = _official(conv20)
    obj["feature_layer"] = layer
    with pytest.raises(CheckpointError, match=message):
        convert_declip(obj)


def test_other_feature_layer_reads_another_block(conv20, ref_images):
    """layer0 = the output of the first block: the same file read one block deep."""
    obj = _official(conv20)
    obj["feature_layer"] = "layer0"
    cfg, state = convert_declip(obj)
    assert cfg.feature_layers == (1,)
    model = build_and_load(cfg, state)
    assert model.backbone.num_blocks == 1
    x = _batch(ref_images[:2])
    with torch.no_grad():
        expected = conv20.decode(conv20.model.encode_image(x)["layer0"]).view(-1, 256, 256)
        assert (expected - model(x)).abs().max().item() <= TOL


@pytest.mark.parametrize("key", ["model.extra.weight", "model.visual.ln_mid.weight", "head.weight"])
def test_unexpected_key_is_named(conv20, key):
    obj = _official(conv20)
    obj["model"][key] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=rf"unexpected keys \['{key}'\]"):
        convert_declip(obj)


def test_decoder_only_checkpoint_without_backbones_says_what_it_needs(conv20):
    """The ViT+RN50 release holds only fc.*: its backbones come from OpenAI's CLIP files."""
    obj = _official(conv20)
    obj["model"] = {k: v for k, v in obj["model"].items() if k.startswith("fc.")}
    with pytest.raises(CheckpointError, match="ViT\\+RN50 DeCLIP checkpoint .*ViT-L/14 and RN50 backbones"):
        convert_declip(obj)


def test_backbone_files_are_refused_for_a_self_contained_checkpoint(conv20, vitrn50):
    vit, rn50 = vitrn50.backbone_files()
    with pytest.raises(CheckpointError, match="holds its own CLIP ViT"):
        convert_declip(_official(conv20), backbone=vit, cnn_backbone=rn50)


# ------------------------------------------------------------------------------------------------
# ViT+RN50


def test_vit_rn50_release_with_openai_backbones_gives_the_reference_masks(vitrn50, ref_images):
    obj = vitrn50.official_checkpoint()
    assert all(k.startswith("fc.") for k in obj["model"])  # as released: the decoder alone
    vit, rn50 = vitrn50.backbone_files()
    cfg, state = convert_declip(obj, backbone=vit, cnn_backbone=rn50, source="vitrn50.pth")
    assert cfg.cnn == ResNetConfig(layers=(1, 2, 1, 1), width=8) and cfg.feature_layers == (3,)
    assert cfg.decoder == DecoderConfig(kind="conv-4", channels=(16, 8, 8, 8), mask_size=256)
    assert not any(k.startswith(("cnn.visual.layer4.", "cnn.visual.attnpool.")) for k in state)
    assert any(k.startswith("cnn.visual.layer3.") for k in state)
    model = build_and_load(cfg, state, source="vitrn50.pth")
    assert type(model.decoder.fc[-2]) is torch.nn.Upsample and model.decoder.fc[0].in_channels == 64 + 128
    x = _batch(ref_images)
    assert _compare(vitrn50, model, x) <= TOL
    with torch.no_grad():  # the RN50 map really matters
        cnn = model.forward_cnn(x)
        assert (
            model(x) - model.forward_from_features(model.forward_tokens(x), torch.zeros_like(cnn))
        ).abs().max() > 1e-2


def test_vit_rn50_swapped_backbones_are_an_error(vitrn50):
    vit, rn50 = vitrn50.backbone_files()
    with pytest.raises(CheckpointError, match="swapped"):
        convert_declip(vitrn50.official_checkpoint(), backbone=rn50, cnn_backbone=vit)


def test_vit_rn50_unknown_backbone_key_is_named(vitrn50):
    vit, rn50 = vitrn50.backbone_files()
    rn50["visual.layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="visual.layer5.0.conv1.weight"):
        convert_declip(vitrn50.official_checkpoint(), backbone=vit, cnn_backbone=rn50)


def test_vit_rn50_decoder_without_the_resize_is_not_taken_for_one(vitrn50):
    obj = vitrn50.official_checkpoint()
    final = max(int(k.split(".")[1]) for k in obj["model"])
    obj["model"] = {
        (f"fc.{final - 1}." + k.split(".", 2)[2] if k.startswith(f"fc.{final}.") else k): v
        for k, v in obj["model"].items()
    }
    vit, rn50 = vitrn50.backbone_files()
    with pytest.raises(CheckpointError, match="not laid out as the authors' ViT\\+RN50 conv decoder"):
        convert_declip(obj, backbone=vit, cnn_backbone=rn50)


def test_full_size_vit_rn50_config_has_the_released_layout():
    cfg = get_config("declip-vit-rn50-layer20-conv20")
    with torch.device("meta"):
        model = create_model(cfg)
    state = model.decoder.state_dict()
    assert state["fc.0.weight"].shape == (512, 2048, 5, 5) and state["fc.65.weight"].shape == (1, 64, 5, 5)
    assert "fc.64.weight" not in state and model.cnn.visual.layer3[-1].conv3.out_channels == 1024
    assert not hasattr(model.cnn.visual, "layer4") and not hasattr(model.cnn.visual, "attnpool")
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_not_a_declip_file():
    with pytest.raises(CheckpointError, match="not a DeCLIP checkpoint"):
        convert_declip({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)})


def test_half_precision_file_is_imported_in_fp32(conv20):
    obj = _official(conv20)
    obj["model"] = {k: v.half() if v.is_floating_point() else v for k, v in obj["model"].items()}
    _, state = convert_declip(obj)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert state["decoder.fc.1.num_batches_tracked"].dtype == torch.long


def test_the_registry_recognises_each_authors_layout():
    def fmt(obj):
        found = find_format(obj)
        return found and (found[0].arch, found[1].name)

    base = {"model": {"fc.0.weight": torch.zeros(1)}, "feature_layer": "layer20", "decoder_type": "conv-20"}
    assert fmt(base) == ("declip", "declip-official")
    assert fmt({**base, "optimizer": {}, "total_steps": 5}) == ("declip", "declip-official")
    assert fmt({"model": torch.zeros(1), "feature_layer": "layer20", "decoder_type": "x"}) is None
    assert fmt({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}) == ("univfd", "univfd")
    assert fmt({"mmfuser.norm1.weight": torch.zeros(1)}) == ("deeclip", "deeclip-official")


# ------------------------------------------------------------------------------------------------
# Configs


def test_bundled_declip_configs_round_trip():
    assert {"declip-tiny", "declip-vit-l-14-layer20-conv20"} <= set(list_configs())
    for name in ("declip-tiny", "declip-vit-l-14-layer20-conv20"):
        cfg = get_config(name)
        assert ModelConfig.from_json(cfg.to_json()) == cfg
        assert cfg.preprocess == SQUASH
    full = get_config("declip-vit-l-14-layer20-conv20")
    assert full.feature_layers == (21,) and full.blocks_needed == 21
    assert full.decoder == DecoderConfig(kind="conv-20", channels=(512, 256, 128, 64), mask_size=256)
    for other in ("deeclip-vit-l-14", "univfd-vit-l-14"):  # the other archs have no decoder
        assert get_config(other).decoder is None
        assert ModelConfig.from_json(get_config(other).to_json()) == get_config(other)


def test_checkpoint_metadata_carries_the_decoder(tmp_path, conv20_file, ref_images):
    cfg, state = convert_declip(read_state_dict(conv20_file))
    path = tmp_path / "declip.safetensors"
    save_checkpoint(path, cfg, state, {"source_file": conv20_file.name})
    cfg2, state2, _ = read_checkpoint(path)
    assert cfg2 == cfg
    x = _batch(ref_images[:1])
    with torch.no_grad():
        assert torch.equal(build_and_load(cfg, state)(x), build_and_load(cfg2, state2)(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(feature_layers=(2, 3)), "one feature layer"),
        (dict(feature_layers=(5,)), r"one feature layer in 1\.\.4"),
        (dict(decoder=None), "needs a decoder"),
        (dict(decoder=DecoderConfig(kind="conv-12", channels=(32, 16, 8))), "gives 128px masks"),
    ],
)
def test_invalid_declip_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(get_config("declip-tiny"), **change)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="conv-16"), "unknown decoder 'conv-16'"),
        (dict(kind="linear"), "no conv stages"),
        (dict(kind="conv-20", channels=(64, 32, 16)), "do not split into 3 stages"),
        (dict(kind="conv-4", channels=()), "positive stage widths"),
    ],
)
def test_invalid_decoder_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**kwargs)


def test_a_decoder_on_a_detector_config_is_refused():
    with pytest.raises(ValueError, match="deeclip has no mask decoder"):
        replace(get_config("deeclip-tiny"), decoder=DecoderConfig())


def test_factory_builds_tiny_and_full_from_the_same_code():
    tiny = create_model(get_config("declip-tiny")).eval()
    with torch.device("meta"):
        full = create_model(get_config("declip-vit-l-14-layer20-conv20"))
    assert type(tiny) is type(full) is DeCLIP
    assert type(tiny.decoder) is type(full.decoder) is ConvDecoder
    assert not any(p.requires_grad for p in full.backbone.parameters())
    assert all(p.requires_grad for p in full.decoder.parameters())
    with torch.no_grad():
        assert tiny(torch.zeros(2, 3, 224, 224)).shape == (2, 256, 256)


# ------------------------------------------------------------------------------------------------
# Full size

# The authors' ViT-L/14 at layer 20 with the conv-20 decoder: what both full-size releases share.
FULL_SIZE_VIT_CONV20 = dict(
    width=1024,
    layers=24,
    heads=16,
    patch=14,
    image=224,
    output_dim=768,
    feature_layer="layer20",
    decoder_type="conv-20",
)


@pytest.mark.slow
def test_full_size_vit_l14_conv20_file_gives_the_reference_mask(tmp_path, ref_images):
    """ViT-L/14 + conv-20 at full size, random weights, through a real file: the shipped config's layout."""
    torch.manual_seed(0)
    x = _batch(ref_images[:1])
    ref = RefDeCLIP(**FULL_SIZE_VIT_CONV20).randomize(x)
    path = tmp_path / "declip_vit_layer20_conv20.pth"
    torch.save(ref.official_checkpoint(), path)
    with torch.no_grad():
        expected = ref(x).view(-1, 256, 256)
    del ref
    obj = read_state_dict(path)
    assert sum(k.startswith("fc.") for k in obj["model"]) == 20 * 7 + 2
    cfg, state = convert_declip(obj, source=str(path))
    assert cfg == get_config("declip-vit-l-14-layer20-conv20")
    model = build_and_load(cfg, state)
    with torch.no_grad():
        got = model(x)
    assert (expected - got).abs().max().item() <= TOL


@pytest.mark.slow
def test_full_size_vit_rn50_release_gives_the_reference_mask(ref_images):
    """ViT-L/14 layer20 + RN50 layer3, conv-20, at full size with random weights: the shipped config's layout."""
    torch.manual_seed(1)
    x = _batch(ref_images[:1])
    ref = RefDeCLIPViTRN50(
        **FULL_SIZE_VIT_CONV20,
        filter_sizes=[2048, 512, 256, 128, 64],
        rn_layers=[3, 4, 6, 3],
        rn_width=64,
    ).randomize(x, seed=1)
    obj = ref.official_checkpoint()
    assert sum(k.startswith("fc.") for k in obj["model"]) == len(obj["model"]) == 20 * 7 + 2
    with torch.no_grad():
        expected = ref(x).view(-1, 256, 256)
    vit, rn50 = ref.backbone_files()
    del ref
    cfg, state = convert_declip(obj, backbone=vit, cnn_backbone=rn50)
    assert cfg == get_config("declip-vit-rn50-layer20-conv20")
    model = build_and_load(cfg, state)
    with torch.no_grad():
        got = model(x)
    assert (expected - got).abs().max().item() <= TOL
