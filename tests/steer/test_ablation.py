"""The additive-injection ablation built from a concat model equals it exactly at u = 0, and
``steerflow experiment additive-ablation`` writes it."""

from __future__ import annotations

import json

import pytest
import torch

from steerflow.cli.main import main as steerflow_main
from steerflow.errors import ConfigError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.ablation import additive_from_concat

from .conftest import tiny_config


def main(argv: list[str]) -> int:
    """``steerflow experiment additive-ablation ARGV``."""
    return steerflow_main(["experiment", "additive-ablation", *argv])


@torch.no_grad()
def test_equal_at_zero_control_and_different_otherwise(tokenizer):
    torch.manual_seed(7)
    concat = SteerFlowGPT(tiny_config(control_dim=2)).eval()
    with torch.no_grad():  # a field whose u-columns matter, as after steering
        concat.ode.field.fc_out.weight.normal_(std=0.2)
    additive = additive_from_concat(concat, seed=1)
    assert additive.config.injection == "add" and additive.config.control_dim == 2
    idx = torch.tensor([tokenizer.encode("The team moved to the north of the city")])
    a, _ = concat(idx, None)
    b, _ = additive(idx, None)
    assert torch.equal(a, b)  # u = 0: u·W_u and u_proj(u) are exact zeros
    a1, _ = concat(idx, [1.0, -1.0])
    b1, _ = additive(idx, [1.0, -1.0])
    assert not torch.allclose(a1, b1)


def test_refuses_a_model_whose_control_was_trained(pretrained_dir, tmp_path):
    (tmp_path / "run").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_meta.json"):
        (tmp_path / "run" / name).write_bytes((pretrained_dir / name).read_bytes())
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"task": "lm", "lm_u": "random"}))
    assert main([str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert main([str(pretrained_dir), str(tmp_path / "ok")]) == 0
    assert SteerFlowGPT.from_pretrained(tmp_path / "ok").config.injection == "add"
    with pytest.raises(ConfigError, match="concat"):
        additive_from_concat(SteerFlowGPT.from_pretrained(tmp_path / "ok"))
