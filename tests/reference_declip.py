"""An independent DeCLIP built the authors' way, as the oracle for forensix's import.

OpenAI's CLIP layout written out here from OpenAI's ``clip/model.py`` (sequence-first
``nn.MultiheadAttention``, QuickGELU, LayerNorm computed in fp32), with the authors' change to
``encode_image``: every block's output is returned as ``layerN`` (0-based). On top, the decoders of
the authors' ``CLIPModelLocalisation``: one ``nn.Sequential`` called ``fc`` built by their loop,
and for the attention decoder two CLIP blocks ``att1``/``att2`` with the causal text mask. Nothing
here imports forensix or open_clip. ``official_checkpoint()`` is the released file's layout:
``{'model': {'model.visual.*', 'model.<text tower>', 'fc.*', ...}, 'feature_layer', 'decoder_type',
'optimizer', 'total_steps'}``.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        return super().forward(x.type(torch.float32)).type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """OpenAI's block: sequence-first (L, N, D), optional additive attention mask."""

    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask  # a plain attribute, as in OpenAI's code: not in the state dict

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # The authors' change: every block's output, by 0-based index.
        out = {}
        for idx, layer in enumerate(self.resblocks.children()):
            x = layer(x)
            out["layer" + str(idx)] = x
        return out


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every block's output, sequence-first (1 + grid², N, width)."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        return self.transformer(x.permute(1, 0, 2))  # NLD -> LND


class RefCLIP(nn.Module):
    """The OpenAI CLIP module's vision tower plus a small text tower (only there for its keys)."""

    def __init__(self, width: int, layers: int, heads: int, patch: int, image: int, output_dim: int) -> None:
        super().__init__()
        self.visual = VisionTransformer(image, patch, width, layers, heads, output_dim)
        text = 32
        self.transformer = Transformer(text, 1, 1)
        self.token_embedding = nn.Embedding(10, text)
        self.positional_embedding = nn.Parameter(torch.randn(8, text))
        self.ln_final = LayerNorm(text)
        self.text_projection = nn.Parameter(torch.randn(text, output_dim))
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.visual(x)


class RefDeCLIP(nn.Module):
    """The authors' CLIPModelLocalisation for a ViT, at any size.

    ``filter_sizes`` are their conv decoder widths, [1024, 512, 256, 128, 64] for ViT-L/14.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        patch: int,
        image: int,
        output_dim: int,
        feature_layer: str,
        decoder_type: str,
        filter_sizes: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.intermidiate_layer_output = feature_layer
        self.decoder_type = decoder_type
        self.width, self.tokens = width, (image // patch) ** 2 + 1
        self.model = RefCLIP(width, layers, heads, patch, image, output_dim)
        filter_sizes = filter_sizes or [width, 512, 256, 128, 64]
        upscaling_layers: list[nn.Module] = []
        if "conv" in decoder_type:
            num_convs = int(re.search(r"\d{0,3}$", decoder_type).group())
            for i in range(1, len(filter_sizes)):
                upscaling_layers.append(nn.Conv2d(filter_sizes[i - 1], filter_sizes[i], kernel_size=5, padding=2))
                upscaling_layers.append(nn.BatchNorm2d(filter_sizes[i]))
                upscaling_layers.append(nn.ReLU())
                for _ in range(num_convs // 4 - 1):
                    upscaling_layers.append(nn.Conv2d(filter_sizes[i], filter_sizes[i], kernel_size=5, padding=2))
                    upscaling_layers.append(nn.BatchNorm2d(filter_sizes[i]))
                    upscaling_layers.append(nn.ReLU())
                upscaling_layers.append(nn.Upsample(scale_factor=2, mode="bilinear"))
            upscaling_layers.append(nn.Conv2d(filter_sizes[-1], 1, kernel_size=5, padding=2))
        elif decoder_type == "linear":
            upscaling_layers.append(nn.Linear(width, 1))
        elif decoder_type == "attention":
            mask = torch.empty(self.tokens, self.tokens)
            mask.fill_(float("-inf"))
            mask.triu_(1)
            self.att1 = ResidualAttentionBlock(width, width // 64 or 1, mask)
            self.att2 = ResidualAttentionBlock(width, width // 64 or 1, mask)
            upscaling_layers.append(nn.Linear(width, 1))
        self.fc = nn.Sequential(*upscaling_layers)

    def _feature_map_transform(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(1, 2, 0)
        return x.view(x.size()[0], x.size()[1], int(x.size()[2] ** 0.5), int(x.size()[2] ** 0.5))

    def _unify_linear_layer_outputs(self, linear_outputs: list[torch.Tensor]) -> torch.Tensor:
        output = torch.cat(linear_outputs, dim=1)
        output = output.view(output.size()[0], int(output.size()[1] ** 0.5), int(output.size()[1] ** 0.5))
        return F.interpolate(output.unsqueeze(1), size=(256, 256), mode="bicubic")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' feature_extraction for a ViT: the chosen block's output, sequence-first."""
        return self.model.encode_image(x)[self.intermidiate_layer_output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flat logits (B, 65536), as the authors' forward returns them."""
        return self.decode(self.features(x))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """The authors' forward after feature extraction; ``features`` sequence-first (1 + grid², B, C)."""
        if self.decoder_type == "linear":
            output = self._unify_linear_layer_outputs([self.fc(part) for part in features[1:]])
        elif self.decoder_type == "attention":
            features = self.att2(self.att1(features))
            output = self._unify_linear_layer_outputs([self.fc(part) for part in features[1:]])
        else:
            output = self.fc(self._feature_map_transform(features[1:]))
        return torch.flatten(output, start_dim=1)

    @torch.no_grad()
    def randomize(self, images: torch.Tensor, seed: int = 0) -> RefDeCLIP:
        """Weights that make the comparison able to fail: BatchNorm statistics measured on
        ``images`` and then perturbed (so eval-mode BN is really exercised), random BN affine
        parameters, and a linear head large enough that logits differ between images."""
        g = torch.Generator().manual_seed(seed)
        bns = [m for m in self.fc if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.momentum = None  # cumulative average over the calibration pass
            bn.reset_running_stats()
        if bns:
            features = self.features(images)
            self.train()
            self.decode(features)
        for bn in bns:
            n = bn.num_features
            bn.running_mean += 0.1 * torch.randn(n, generator=g) * bn.running_var.sqrt()
            bn.running_var *= 0.5 + 1.5 * torch.rand(n, generator=g)
            bn.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
            bn.num_batches_tracked.fill_(1000)
        for module in self.fc:
            if isinstance(module, nn.Linear):
                module.weight.copy_(5 * torch.randn(module.weight.shape, generator=g) / module.in_features**0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g))
        return self.eval()

    def official_checkpoint(self, total_steps: int = 123) -> dict:
        """The released file: the whole module's state dict under 'model', plus training state."""
        state = OrderedDict((k, v.detach().clone()) for k, v in self.state_dict().items())
        # A real optimizer state (tensors, tuples, None, bools) over the last decoder layer; copies, so
        # the weights themselves stay put.
        params = [p.detach().clone().requires_grad_(True) for p in self.fc[-1].parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        return {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "total_steps": total_steps,
            "feature_layer": self.intermidiate_layer_output,
            "decoder_type": self.decoder_type,
        }


# ------------------------------------------------------------------------------------------------
# ViT+RN50: OpenAI's ModifiedResNet (clip/model.py) and the authors' "ViT-L/14,RN50" localizer


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * Bottleneck.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Only its parameters: the released RN50 carries them, the localizer never runs it."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads


class ModifiedResNet(nn.Module):
    """OpenAI's, with the authors' change: ``forward`` returns every stage's output by name."""

    def __init__(self, layers: list[int], output_dim: int, heads: int, input_resolution: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.type(self.conv1.weight.dtype)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            out[name] = x
        return out


class RefCLIPResNet(RefCLIP):
    """An OpenAI CLIP with the ResNet vision tower (and the small text tower, for its keys)."""

    def __init__(self, layers: list[int], width: int, image: int, output_dim: int) -> None:
        super().__init__(width=32, layers=1, heads=1, patch=32, image=image, output_dim=output_dim)
        self.visual = ModifiedResNet(
            layers, output_dim, heads=max(1, width * 32 // 64), input_resolution=image, width=width
        )


class RefDeCLIPViTRN50(RefDeCLIP):
    """The authors' CLIPModelLocalisation named "ViT-L/14,RN50", at any size.

    As theirs: the two CLIPs sit in a plain list (so the module's state dict, the released file, is
    the decoder alone), RN50's ``layer3`` is resized bilinearly to the ViT grid and concatenated
    after the ViT's channels, and the conv decoder gets an Upsample(size=256) before its final conv.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        patch: int,
        image: int,
        output_dim: int,
        feature_layer: str,
        decoder_type: str,
        filter_sizes: list[int],
        rn_layers: list[int],
        rn_width: int,
    ) -> None:
        super().__init__(width, layers, heads, patch, image, output_dim, feature_layer, decoder_type, filter_sizes)
        *stages, final = list(self.fc)
        self.fc = nn.Sequential(*stages, nn.Upsample(size=(256, 256), mode="bilinear"), final)
        vit = self.model
        del self.model
        self.grid = image // patch
        self.model = [vit.eval(), RefCLIPResNet(rn_layers, rn_width, image, output_dim).eval()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        vit, rn50 = self.model
        features_vit = self._feature_map_transform(vit.encode_image(x)[self.intermidiate_layer_output][1:])
        features_rn50 = rn50.encode_image(x)["layer3"]
        features_rn50 = F.interpolate(features_rn50, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return torch.cat([features_vit, features_rn50], 1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.fc(features), start_dim=1)

    @torch.no_grad()
    def randomize(self, images: torch.Tensor, seed: int = 0) -> RefDeCLIPViTRN50:
        """The decoder as the base class does; RN50's BatchNorm layers get non-trivial statistics too."""
        g = torch.Generator().manual_seed(seed + 1)
        for bn in (m for m in self.model[1].modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(n, generator=g))
            bn.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
        return super().randomize(images, seed)

    def backbone_files(self) -> tuple[dict, dict]:
        """The two OpenAI CLIP state dicts (what open_clip's safetensors hold)."""
        return tuple({k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.model)
