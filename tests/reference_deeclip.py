"""An independent DeeCLIP built the authors' way, as the oracle for forensix's import.

transformers' CLIPVisionModel (QuickGELU) + peft LoRA on q/k/v (unmerged) + the DeeFuser and head
written from the paper's description, run in fp32 with eager attention. Its state dict is
renamed to the released checkpoint's exact key layout (transformers 4.49 names, with
``vision_model.``), whatever transformers version builds it here.
"""

from __future__ import annotations

import peft
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

LAYERS_FULL = [1, 3, 5, 8, 10, 13, 15, 17, 19, 21, 22, 23]


class RefFuser(nn.Module):
    def __init__(self, dim: int, hidden: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.scale = dim**-0.5

    def attn(self, q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1) @ v

    def forward(self, x, f):
        nx, nf = self.norm1(x), self.norm2(f)
        ca = self.mlp.fc2(F.gelu(self.mlp.fc1(self.attn(nf, nx, nx))))
        n = self.norm3(ca)
        sa = self.attn(n, n, n)
        return nf + self.gamma2 * (ca + self.gamma1 * sa)


class RefDeeCLIP(nn.Module):
    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        patch: int,
        image: int,
        proj: int,
        feature_layers: list[int],
        rank: int = 16,
        alpha: float = 32.0,
    ) -> None:
        super().__init__()
        cfg = CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            patch_size=patch,
            image_size=image,
            hidden_act="quick_gelu",
            attn_implementation="eager",
        )
        vision = CLIPVisionModel(cfg)
        lora = peft.LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.05,
            bias="none",
            target_modules=r".*encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)",
        )
        self.clip_model = nn.Module()
        self.clip_model.base = peft.get_peft_model(vision, lora)
        self.clip_model.visual_projection = nn.Linear(width, proj)
        self.clip_model.fc = nn.Linear(proj, 1)
        self.mmfuser = RefFuser(width)
        self.feature_layers = feature_layers
        # peft starts B at zero; give every adapter weight a value so merging is really tested.
        g = torch.Generator().manual_seed(1)
        for name, p in self.named_parameters():
            if "lora_" in name:
                p.data = torch.randn(p.shape, generator=g) * 0.05
            elif "mmfuser.gamma" in name:
                p.data = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif name == "clip_model.fc.weight":
                # Large enough that logits differ between images: the comparison must be able to fail.
                p.data = 20 * torch.randn(p.shape, generator=g)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hs = self.clip_model.base(pixel_values=pixels, output_hidden_states=True).hidden_states
        feats = [hs[i][:, 1:] for i in self.feature_layers]
        out = self.mmfuser(torch.cat(feats[:-1], dim=1), feats[-1])
        e = self.clip_model.visual_projection(out)
        e = e / e.norm(dim=-1, keepdim=True)
        return self.clip_model.fc(e.mean(dim=1)).squeeze(-1)

    def official_state_dict(self, base_layer: bool = True) -> dict[str, torch.Tensor]:
        """The state dict under the released file's key names."""
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("clip_model.base."):
                rest = key[len("clip_model.base.base_model.model.") :]
                if rest.startswith("vision_model."):
                    rest = rest[len("vision_model.") :]
                if not base_layer:
                    rest = rest.replace(".base_layer.", ".")
                key = "clip_model.base_model.model.vision_model." + rest
            out[key] = value.detach().clone()
        return out
