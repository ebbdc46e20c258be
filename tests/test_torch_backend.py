"""The torch backend: device, precision, memory format and compilation as asked."""

import pytest
import torch

from forensix.detector import load_detector
from forensix.localizer import Localizer


def test_detectors_run_channels_last_and_say_whether_they_are_compiled(tiny_weights):
    plain = load_detector(weights=tiny_weights, device="cpu")
    compiled = load_detector(weights=tiny_weights, device="cpu", compile=True)  # compiles on first call only
    assert (plain.backend.name, plain.backend.compiled, compiled.backend.compiled) == ("torch", False, True)
    assert plain.backend.memory_format is torch.channels_last and Localizer.channels_last is False
    conv = plain.backend.module.backbone.visual.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_precision_and_device_are_checked(tiny_weights):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        load_detector(weights=tiny_weights, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        load_detector(weights=tiny_weights, device="cpu", precision="int8")
