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


def test_gradient_with_respect_to_the_scale_matches_finite_differences():
    """d/ds of the mean −log P(u | x) at s = e^ρ, by autograd and by central differences in
    float64: the central difference's error is O(h²)·f''' ≈ 1e-10 for h = 1e-5, far below 1e-7."""
    torch.manual_seed(0)
    a = torch.randn(6, dtype=torch.float64) - 3  # length-normalised log-likelihoods at u
    b = torch.randn(6, dtype=torch.float64) - 3  # ... at −u
    for rho in (-1.0, 0.0, 0.7, 2.5):
        log_scale = torch.tensor(rho, dtype=torch.float64, requires_grad=True)
        loss = discriminative_loss(a, b, log_scale.exp()).mean()
        (grad,) = torch.autograd.grad(loss, log_scale)
        h = 1e-5

        def f(r: float) -> float:
            return float(discriminative_loss(a, b, torch.tensor(r, dtype=torch.float64).exp()).mean())

        numeric = (f(rho + h) - f(rho - h)) / (2 * h)
        assert float(grad) == pytest.approx(numeric, abs=1e-7)
    # and the closed form: d/dρ softplus(s·(b − a)) = s·(b − a)·σ(s·(b − a))
    s = math.exp(0.7)
    closed = (s * (b - a) * torch.sigmoid(s * (b - a))).mean()
    log_scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(discriminative_loss(a, b, log_scale.exp()).mean(), log_scale)
    torch.testing.assert_close(grad, closed)


def test_a_learned_scale_lets_the_posterior_saturate():
    """At the fixed scale 1 a per-token margin of 0.1 nats is P(u | x) = 0.52 and the term keeps
    pulling the margin up; a larger s makes the same margin a confident posterior whose loss and
    gradient (with respect to the likelihoods) vanish."""
    a = torch.tensor([-3.0], requires_grad=True)
    b = torch.tensor([-3.1])
    losses, grads = [], []
    for s in (1.0, 10.0, 100.0, 300.0):
        loss = discriminative_loss(a, b, s).sum()
        (g,) = torch.autograd.grad(loss, a)
        losses.append(float(loss.detach()))
        grads.append(abs(float(g)))
    assert math.exp(-losses[0]) == pytest.approx(torch.sigmoid(torch.tensor(0.1)).item())
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-12
    assert grads[0] == pytest.approx(0.475, abs=1e-3) and grads[-1] < 1e-9


def test_the_discriminative_scale_is_trained_by_the_optimizer(make_cfg):
    """Over a few tiny steering steps the scale moves: Adam's first step is lr·g/(|g| + ε), ε =
    1e-8, so after step 1 |log s| is at most lr and above lr/2 while |g| > ε (the margins of a
    barely steered tiny model are small, |g| ~ 1e-6: ε still costs ~0.5 %); the checkpoint holds
    the scale."""
    from steerflow.train import train
    from steerflow.train import checkpoint as ckpt
    from steerflow.train.metrics import read_metrics

    lm = make_cfg("lm", steps=2)
    train(lm)
    lr = 1e-2
    run = make_cfg("gedi", task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None,
                   steps=4, lr=lr, warmup_steps=0, steer_discriminative=0.5, batch_size=8,
                   save_every=4)
    train(run)
    records = read_metrics(run.out_dir / "metrics.jsonl", "train")
    scales = [r["gedi_scale"] for r in records]
    assert scales[0] == 1.0  # GeDi's initial scale
    assert lr / 2 < abs(math.log(scales[1])) <= lr * (1 + 1e-6)  # float32 rounding of log s
    assert len(set(scales)) == len(scales)  # it moves at every step
    assert all(0 < r["gedi_loss"] for r in records)
    last = ckpt.read_trainer_state(ckpt.list_checkpoints(run.out_dir)[-1].path)
    # the saved value is the one after the last update: not the one the last step used
    log_scale = last["objectives"]["discriminative"]["log_scale"]
    assert log_scale != math.log(scales[-1]) and abs(log_scale) > 0
