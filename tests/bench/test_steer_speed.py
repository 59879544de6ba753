"""The steered-generation benchmark times the model the steering recipe trains."""

from __future__ import annotations

import torch

from steerflow.bench.steer_speed import recipe_model
from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT


def test_recipe_model_has_the_control_paths_and_is_the_base_at_u_zero():
    torch.manual_seed(0)
    base = SteerFlowGPT(ModelConfig.from_name("tiny")).eval()
    steered = recipe_model(base)
    field = steered.ode.field
    assert field.u_out is not None and base.ode.field.u_out is None  # the base is left as it was
    x = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(1))
    zero, one = torch.zeros(2, 1), torch.ones(2, 1)
    with torch.no_grad():
        assert torch.equal(steered(x, zero)[0], base(x, zero)[0])
        assert not torch.allclose(steered(x, one)[0], base(x, one)[0])
    block = SteerFlowGPT(ModelConfig.from_name("tiny", field="block")).eval()
    assert not hasattr(recipe_model(block).ode.field, "u_out")
