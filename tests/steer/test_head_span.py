"""The head-span share: what a hidden state can do to the logits, exactly."""

from __future__ import annotations

import copy

import torch

from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.head_span import contrast_head_span, head_span_basis, share_in_span


def _head(V: int = 50, d: int = 6) -> torch.Tensor:
    return torch.randn(V, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_a_contrast_made_by_the_head_lies_in_its_span_and_one_orthogonal_to_it_does_not():
    W = _head()
    basis = head_span_basis(W)
    assert basis.shape == (50, 7)  # d columns and the constant
    inside = W @ torch.randn(6, dtype=torch.float64) + 3.0  # + a constant: softmax-blind
    assert abs(share_in_span(inside, basis) - 1.0) < 1e-12
    outside = torch.randn(50, dtype=torch.float64)
    outside -= basis @ (basis.T @ outside)  # remove every in-span component
    assert abs(share_in_span(outside, basis)) < 1e-12
    a, b = 2.0, 3.0  # orthogonal parts add in squares
    mixed = a * (inside - inside.mean()) / (inside - inside.mean()).norm() + b * outside / outside.norm()
    assert abs(share_in_span(mixed, basis) - a ** 2 / (a ** 2 + b ** 2)) < 1e-12


def test_dependent_head_columns_are_dropped():
    W = _head()
    W = torch.cat([W, W[:, :1] * 2], dim=1)  # a repeated direction
    assert head_span_basis(W).shape[1] == 7


def test_experts_that_differ_below_the_head_have_a_contrast_in_its_span():
    cfg = ModelConfig.from_name("tiny")
    base = SteerFlowGPT(cfg).eval()
    torch.manual_seed(1)
    expert = copy.deepcopy(base)
    with torch.no_grad():
        expert.ln_f.bias.add_(torch.randn_like(expert.ln_f.bias))  # moves only h
    ids = [[1, 2, 3, 4, 5], [7, 8, 9]]
    span = contrast_head_span(base, expert, base, ids)
    assert span["positions"] == 8 and span["vocab_size"] == cfg.vocab_size
    assert span["share_per_position"] > 1 - 1e-6 and span["share_of_mean"] > 1 - 1e-6
    with torch.no_grad():  # a head of its own moves the logits off the base's span
        expert.lm_head.weight = torch.nn.Parameter(torch.randn_like(expert.lm_head.weight))
    assert contrast_head_span(base, expert, base, ids)["share_per_position"] < 0.5
