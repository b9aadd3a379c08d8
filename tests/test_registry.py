from __future__ import annotations

import pytest
import torch
from torch import nn

from tiragent.errors import ParameterError, ToolNotFoundError
from tiragent.server.registry import ModelDescriptor, get_tool, list_tools, register_torch_tool, unregister
from tiragent.tasks import Task


def test_every_task_has_at_least_two_tools():
    for task in Task:
        names = [s.name for s in list_tools(task)]
        assert len(names) >= 2, f"{task} has {names}"


def test_every_tool_is_fully_described():
    for spec in list_tools():
        assert len(spec.description) > 40, spec.key
        assert spec.cost.value in {"low", "medium", "high"}
        assert spec.device in {"cpu", "accelerator"}
        schema = spec.schema()
        assert schema["type"] == "object"
        for field in schema.get("properties", {}).values():
            assert field.get("description"), f"{spec.key}: a parameter lacks a description"


def test_lookup_by_key_and_by_pair():
    assert get_tool("denoise.nlm") is get_tool("denoise", "nlm")


def test_unknown_tool_and_task_errors_name_the_problem():
    with pytest.raises(ToolNotFoundError, match=r"unknown tool 'denoise.nope': task 'denoise' has bm3d, nlm, unet, wavelet"):
        get_tool("denoise.nope")
    with pytest.raises(ToolNotFoundError, match=r"unknown task 'denoize'.*did you mean 'denoise'"):
        get_tool("denoize.nlm")


def test_parameters_are_validated():
    spec = get_tool("denoise.nlm")
    assert spec.validate({"sigma": 25}).sigma == 25
    with pytest.raises(ParameterError, match=r"denoise.nlm: invalid parameters: sigma: .*less than or equal to 100.*got 500"):
        spec.validate({"sigma": 500})
    with pytest.raises(ParameterError, match=r"strength: Extra inputs are not permitted"):
        spec.validate({"strength": 3})
    with pytest.raises(ParameterError, match=r"scale: Input should be 2 or 4"):
        get_tool("sr.lanczos").validate({"scale": 3})
    with pytest.raises(ParameterError, match="sigma"):
        spec.validate({"sigma": "loud"})


def test_a_torch_module_registers_as_a_tool():
    @register_torch_tool(Task.DENOISE, "test_tiny_cnn", cost="low", descriptor=ModelDescriptor(multiple_of=4))
    def build() -> nn.Module:
        """A three-layer random-weight CNN used to test that learned tools register like classical ones."""
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))

    try:
        spec = get_tool("denoise.test_tiny_cnn")
        assert spec.is_torch and spec.device == "accelerator" and spec.descriptor.multiple_of == 4
        assert "random-weight CNN" in spec.description
        assert spec in list_tools("denoise")
        with pytest.raises(ValueError, match="already registered"):
            register_torch_tool(Task.DENOISE, "test_tiny_cnn", cost="low")(build)
    finally:
        unregister("denoise.test_tiny_cnn")
