"""GeDi's discriminative steering term: the Bayes-rule posterior of u from the model's likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.train.objectives import discriminative_loss, sequence_log_likelihood, token_nll


def test_sequence_log_likelihood_is_the_mean_over_unmasked_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, 3, -1], [6, -1, -1, -1]])
    logp = torch.log_softmax(logits, -1)
    expected = torch.stack([(logp[0, 0, 1] + logp[0, 1, 2] + logp[0, 2, 3]) / 3, logp[1, 0, 6]])
    torch.testing.assert_close(sequence_log_likelihood(logits, targets), expected)
    nll = token_nll(logits, targets)  # the trainer's LM loss, reused for GeDi's term
    assert nll[0, 3] == nll[1, 1] == 0
    torch.testing.assert_close(nll[1, 0], -logp[1, 0, 6])
    torch.testing.assert_close(sequence_log_likelihood(logits, targets, nll), expected)


def test_discriminative_loss_is_minus_log_posterior_with_a_uniform_prior():
    a = torch.tensor([-2.0, -3.5, -1.0])  # log p(x | u), length-normalised
    b = torch.tensor([-2.5, -3.0, -1.0])  # log p(x | −u)
    posterior = a.exp() / (a.exp() + b.exp())
    torch.testing.assert_close(discriminative_loss(a, b), -posterior.log())
    # the posteriors of u and −u sum to one; equal likelihoods carry no information: log 2
    torch.testing.assert_close((-discriminative_loss(a, b)).exp() + (-discriminative_loss(b, a)).exp(),
                               torch.ones(3))
    assert discriminative_loss(a[2:], b[2:]).item() == pytest.approx(math.log(2), rel=1e-6)
