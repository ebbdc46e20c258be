"""The CLIP ViT tower against an independent oracle: transformers' CLIPVisionModel.

The tower's features come from open_clip's ``forward_intermediates``; these tests pin what the
models rely on: transformers' ``hidden_states`` numbering (index i = output of block i-1), the
class token's place, the blocks that are (not) run, and the pooled embedding.
"""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from forensix.models.backbone import ClipVisionTower
from forensix.models.config import VisionConfig

# Four heads of width 16 and a 4x4 grid: every head split and token order is exercised, in milliseconds.
VISION = VisionConfig(width=64, layers=3, heads=4, patch_size=16, image_size=64, mlp_ratio=4.0, output_dim=32)
TOL = 1e-5

# transformers' names -> open_clip's, written here from the two libraries' layouts (not forensix's
# converters) so the oracle stays independent.
_STEM = {
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "ln_pre.bias",
    "vision_model.post_layernorm.weight": "ln_post.weight",
    "vision_model.post_layernorm.bias": "ln_post.bias",
}
_BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.q_proj": "attn.q_proj",
    "self_attn.k_proj": "attn.k_proj",
    "self_attn.v_proj": "attn.v_proj",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


@pytest.fixture(scope="module")
def oracle() -> CLIPVisionModelWithProjection:
    cfg = CLIPVisionConfig(
        hidden_size=VISION.width,
        intermediate_size=4 * VISION.width,
        num_hidden_layers=VISION.layers,
        num_attention_heads=VISION.heads,
        patch_size=VISION.patch_size,
        image_size=VISION.image_size,
        projection_dim=VISION.output_dim,
        hidden_act="quick_gelu",
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(cfg).eval()
    # LayerNorms start at 1/0 and biases at 0: give every tensor a value so a misplaced one shows.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _ours(oracle, blocks: int | None = None, pooled: bool = False) -> ClipVisionTower:
    tower = ClipVisionTower(VISION, blocks=blocks, pooled=pooled).eval()
    state = {}
    for key, value in oracle.state_dict().items():
        if key in _STEM:
            state["visual." + _STEM[key]] = value
        elif key == "visual_projection.weight":
            state["visual.proj"] = value.T  # open_clip: x @ proj; transformers: Linear (x @ W.T)
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key[len("vision_model.encoder.layers.") :].split(".", 1)
            module, kind = rest.rsplit(".", 1)
            state[f"visual.transformer.resblocks.{index}.{_BLOCK[module]}.{kind}"] = value
    wanted = tower.state_dict().keys()
    tower.load_state_dict({k: v for k, v in state.items() if k in wanted})  # strict: every tensor is set
    return tower


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, VISION.image_size, VISION.image_size, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def expected(oracle, pixels):
    with torch.no_grad():
        out = oracle(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states, out.image_embeds


def test_hidden_states_number_blocks_as_transformers_does(oracle, pixels, expected):
    hidden, _ = expected
    tower = _ours(oracle)
    indices = tuple(range(1, VISION.layers + 1))
    with torch.no_grad():
        patches = tower.hidden_states(pixels, indices)
        tokens = tower.hidden_states(pixels, indices, class_token=True)
    for i, p, t in zip(indices, patches, tokens):
        assert p.shape == (2, VISION.grid**2, VISION.width)
        assert (p - hidden[i][:, 1:]).abs().max().item() <= TOL
        assert (t - hidden[i]).abs().max().item() <= TOL
    # The comparison can fail: consecutive hidden states differ by far more than TOL.
    assert (hidden[2] - hidden[1]).abs().max().item() > 1000 * TOL


def test_a_pruned_tower_gives_the_same_states_and_runs_only_the_blocks_it_needs(oracle, pixels, expected):
    hidden, _ = expected
    full, pruned = _ours(oracle), _ours(oracle, blocks=2)
    assert pruned.num_blocks == 2
    assert pruned.visual.proj is None and isinstance(pruned.visual.ln_post, torch.nn.Identity)
    ran = []
    for i, block in enumerate(full.visual.transformer.resblocks):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    with torch.no_grad():
        (first,) = full.hidden_states(pixels, (1,))
        (second,) = pruned.hidden_states(pixels, (2,), class_token=True)
    assert ran == [0]  # stopped after the last requested block
    assert (first - hidden[1][:, 1:]).abs().max().item() <= TOL
    assert (second - hidden[2]).abs().max().item() <= TOL


@pytest.mark.parametrize("indices", [(), (0, 1), (2, 1), (1, 1), (1, 3)])
def test_hidden_states_outside_the_tower_or_out_of_order_are_refused(oracle, pixels, indices):
    tower = _ours(oracle, blocks=2)
    with pytest.raises(ValueError, match="strictly increasing in 1..2"):
        tower.hidden_states(pixels, indices)


def test_pooled_embedding_matches_transformers_image_embeds(oracle, pixels, expected):
    _, embeds = expected
    with torch.no_grad():
        got = _ours(oracle, pooled=True).embed(pixels)
    assert got.shape == (2, VISION.output_dim)
    assert (got - embeds).abs().max().item() <= TOL
