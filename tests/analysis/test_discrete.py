"""Residual-update statistics of discrete (and hybrid) models."""

from __future__ import annotations

import pytest
import torch

from steerflow.analysis.discrete import (consecutive_cosine, discrete_layer_stats,
                                         residual_updates, update_ratio)
from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT

from flow_helpers import random_model


@pytest.mark.parametrize("hybrid", [False, True])
def test_updates_reconstruct_the_forward_pass(hybrid):
    # x_{l+1} = x_l + f_l(x_l) must chain exactly into the model's own hidden states
    model = random_model("mlp") if hybrid else SteerFlowGPT(
        ModelConfig.from_name("tiny", ode_span=None)).double().eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 7))
    updates = residual_updates(model, idx, u=0.5)
    labels = [upd.label for upd in updates]
    assert labels == (["block 0", "ode", "block 3"] if hybrid else [f"block {i}" for i in range(4)])
    for a, b in zip(updates, updates[1:]):
        torch.testing.assert_close(a.x + a.update, b.x)
    with torch.no_grad():
        final = model.hidden_states(model.embed(idx), 0.5)
    torch.testing.assert_close(updates[-1].x + updates[-1].update, final)


def test_ratio_and_cosine_per_token():
    from steerflow.analysis.discrete import Update

    x = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    a = Update("a", x, torch.tensor([[[0.3, 0.4], [0.0, 2.0]]]))
    b = Update("b", x, torch.tensor([[[0.6, 0.8], [0.0, -1.0]]]))
    torch.testing.assert_close(update_ratio(a), torch.tensor([0.1, 2.0]))
    torch.testing.assert_close(consecutive_cosine(a, b), torch.tensor([1.0, -1.0]))


def test_layer_stats_rows_and_log_norms():
    model = SteerFlowGPT(ModelConfig.from_name("tiny", ode_span=None)).double().eval()
    idx = torch.randint(0, 512, (1, 3))
    rows = discrete_layer_stats(model, idx, lognorm_iters=96)  # n = 3·32: exact μ per sequence
    assert [r.layer for r in rows] == [f"block {i}" for i in range(4)]
    assert rows[-1].cos_next_mean is None and all(r.cos_next_mean is not None for r in rows[:-1])
    assert all(r.ratio_mean > 0 and r.mu_max >= r.mu_mean for r in rows)
