"""The paper's probe and sweep: exact probabilities, and monotonicity where it must hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.sentiment_probe import (control_vectors, monotone_violation, probe, probe_sweep,
                                   sweep_values, word_log_probs)

from .conftest import tiny_config


def monotone_model(tokenizer, scale: float = 0.5) -> SteerFlowGPT:
    """A hybrid whose restricted share P(good)/(P(good)+P(bad)) must increase with u.

    The ODE block is last (no discrete block after it) and its field ignores H and τ:
    F = softplus(u)·v, so H(1) = H(0) + α·softplus(u)·v with α > 0. The head gives
    logit(good) − logit(bad) = κ v·LN(H(1)) with κ > 0. For zero-mean v and s = α·softplus(u),
    v·LN(H0 + s v) = (p + s q) / sqrt((r + 2 s p + s² q)/d + ε) with p = v·H0c, q = |v|², r = |H0c|²;
    its derivative in s has the sign of q(r + dε) − p² ≥ 0 (Cauchy–Schwarz). So the share is
    non-decreasing in s, and s increases with u.
    """
    torch.manual_seed(1)
    model = SteerFlowGPT(tiny_config(ode_span=(1, 4)))
    field = model.ode.field
    d = model.config.n_embd
    v = torch.randn(d)
    v = scale * (v - v.mean()) / (v - v.mean()).norm()
    with torch.no_grad():
        field.fc_in.linear.weight.zero_()
        field.fc_in.linear.bias.zero_()
        field.fc_in.linear.weight[0, -1] = 1.0  # hidden unit 0 = softplus(u)
        field.fc_out.weight.zero_()
        field.fc_out.bias.zero_()
        field.fc_out.weight[:, 0] = v
        good, bad = tokenizer.encode(" good")[0], tokenizer.encode(" bad")[0]
        # |logit(good) − logit(bad)| ≤ 4: the share stays off its saturated ends
        model.lm_head.weight[good] = 2 * v / (v.norm() * d ** 0.5)
        model.lm_head.weight[bad] = -2 * v / (v.norm() * d ** 0.5)
    return model.eval()


def test_probe_words_are_single_tokens(tokenizer):
    assert len(tokenizer.encode(" good")) == len(tokenizer.encode(" bad")) == 1


def test_sweep_is_monotone_where_it_must_be(tokenizer):
    sweep = probe_sweep(monotone_model(tokenizer), tokenizer)
    assert len(sweep.points) == 21 and sweep.us[0] == -2.0 and sweep.us[-1] == 2.0
    assert sweep.monotone
    shares = [p.share for p in sweep.points]
    assert shares[-1] - shares[0] > 0.2  # it moves, not just a flat line


def test_reversed_direction_is_reported_as_not_monotone(tokenizer):
    model = monotone_model(tokenizer)
    with torch.no_grad():
        model.ode.field.fc_in.linear.weight[0, -1] = -1.0  # softplus(−u): share falls with u
    sweep = probe_sweep(model, tokenizer)
    assert not sweep.monotone
    assert sweep.violations()["share"] > 1e-3


@torch.no_grad()
def test_probe_equals_softmax_of_a_direct_forward_pass(tokenizer):
    torch.manual_seed(2)
    model = SteerFlowGPT(tiny_config()).eval()
    points = probe(model, tokenizer, us=(1.0, 0.0, -1.0))
    ids = torch.tensor([tokenizer.encode("The movie was")])
    good, bad = tokenizer.encode(" good")[0], tokenizer.encode(" bad")[0]
    for point in points:
        logits, _ = model(ids, point.u)
        p = logits[0, -1].double().softmax(-1)
        # float32 logits: the probe's log_softmax and this softmax agree to ~1e-6 relative
        assert point.p_good == pytest.approx(float(p[good]), rel=1e-5)
        assert point.p_bad == pytest.approx(float(p[bad]), rel=1e-5)
        assert point.share == pytest.approx(point.p_good / (point.p_good + point.p_bad))


@torch.no_grad()
def test_multi_token_word_uses_the_chain_rule(tokenizer):
    torch.manual_seed(3)
    model = SteerFlowGPT(tiny_config()).eval()
    word = " magnificently"
    word_ids = tokenizer.encode(word)
    assert len(word_ids) > 1
    prompt_ids = tokenizer.encode("The movie was")
    logp = word_log_probs(model, tokenizer, "The movie was", [word], [0.5])[0, 0]
    expected, ids = 0.0, list(prompt_ids)
    for t in word_ids:
        logits, _ = model(torch.tensor([ids]), 0.5)
        expected += float(logits[0, -1].double().log_softmax(-1)[t])
        ids.append(t)
    assert logp == pytest.approx(expected, abs=1e-4)  # float32 sums of a few log-probs


def test_control_vectors_place_u_on_one_axis():
    u = control_vectors([-1.0, 2.0], control_dim=3, axis=2)
    assert torch.equal(u, torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 2.0]]))
    with pytest.raises(InputError, match="axis"):
        control_vectors([1.0], control_dim=1, axis=1)


def test_monotone_violation_and_sweep_values():
    assert monotone_violation([0.1, 0.2, 0.2, 0.9]) == 0.0
    assert monotone_violation([0.1, 0.3, 0.25, 0.9]) == pytest.approx(0.05)
    assert monotone_violation([0.9, 0.5, 0.6], increasing=False) == pytest.approx(0.1)
    values = sweep_values(-2, 2, 21)
    assert len(values) == 21 and values[10] == 0.0 and np.allclose(np.diff(values), 0.2)
    with pytest.raises(InputError):
        sweep_values(1, -1, 5)


def test_probability_ceiling_matches_the_closed_form(tokenizer):
    """Head with one non-zero row w (zero-mean): LN(h) has norm √d, so max logit = |w|·√d and
    the ceiling is e^{|w|√d} / (e^{|w|√d} + V − 1)."""
    from steerflow.steer.sentiment_probe import probability_ceiling

    model = SteerFlowGPT(tiny_config()).eval()
    d, V = model.config.n_embd, model.config.vocab_size
    good = tokenizer.encode(" good")[0]
    w = torch.randn(d)
    w = (w - w.mean()) / (w - w.mean()).norm()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[good] = w
    # LayerNorm's eps (1e-5) shrinks the norm by a relative 1e-5: negligible at this tolerance
    expected = math.exp(math.sqrt(d)) / (math.exp(math.sqrt(d)) + V - 1)
    assert probability_ceiling(model, tokenizer, " good") == pytest.approx(expected, abs=2e-3)
