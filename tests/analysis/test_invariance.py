"""Solver invariance metrics on vector fields whose solutions and Euler errors are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from steerflow.config import SolverSpec
from steerflow.errors import CheckpointError, InputError
from steerflow.analysis.divergence import (DivergenceMeter, displacement_divergence,
                                           output_divergence, relative_divergence)
from steerflow.analysis.inputs import control_batch
from steerflow.analysis.invariance import convergence_order, run_invariance, verdicts
from steerflow.analysis.settings import InvarianceSettings
from steerflow.model.vector_fields import VectorField

#: float64 dopri5 at this tolerance is ~1e-11 from the exact flow of the small problems below,
#: so a metric computed against it agrees with the closed form to far better than 1e-6.
TIGHT = SolverSpec(method="dopri5", steps=None, rtol=1e-12, atol=1e-14, max_nfe=100_000)


class LinearField(VectorField):
    """``F(H) = A H``: the flow is ``exp(τA) H(0)``, n Euler steps give ``(I + A/n)^n H(0)``."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, tau, h, u, cache=None):
        return h @ self.A.T  # (B, T, d)


class TimeField(VectorField):
    """``F(τ) = b τ`` (no H dependence): ΔH = b/2 exactly, n Euler steps give b (n − 1) / (2n)."""

    def __init__(self, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("b", b)

    def forward(self, tau, h, u, cache=None):
        return (tau * self.b).expand_as(h)


class ConstantField(TimeField):
    """``F = b``: every Runge-Kutta method, Euler included, is exact."""

    def forward(self, tau, h, u, cache=None):
        return self.b.expand_as(h)


def _swap_field(model, field: nn.Module):
    """Put an analytic field into ``model``'s ODE block with α = 1."""
    model.ode.field = field.to(model.wte.weight.dtype)
    with torch.no_grad():
        model.ode.alpha.fill_(1.0)
    return model


def _matrix(d: int, seed: int = 0, scale: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)


@torch.no_grad()
def test_linear_field_divergences_equal_the_closed_form_euler_error(make_tiny_model, single_thread):
    model = _swap_field(make_tiny_model(dtype=torch.float64), LinearField(_matrix(32)))
    x = torch.randint(0, 512, (2, 16))
    h0 = model.ode_input(x)  # (B, T, d)
    u = control_batch(model, 0.0, 2)
    A = model.ode.field.A
    exact = h0 @ torch.linalg.matrix_exp(A).T
    ref = model.ode.solve(h0, u, TIGHT).final
    torch.testing.assert_close(ref, exact, rtol=1e-9, atol=1e-9)  # the reference is the flow
    for n in (1, 2, 4, 8):
        euler_exact = h0 @ torch.linalg.matrix_power(torch.eye(32, dtype=A.dtype) + A / n, n).T
        h = model.ode.solve(h0, u, SolverSpec(method="euler", steps=n)).final
        known_rel = float((euler_exact - exact).norm() / exact.norm())
        known_disp = float((euler_exact - exact).norm() / (exact - h0).norm())
        assert known_disp > 1e-3  # the test has teeth: Euler is visibly wrong here
        assert relative_divergence(h, ref) == pytest.approx(known_rel, rel=1e-6)
        assert displacement_divergence(h, ref, h0) == pytest.approx(known_disp, rel=1e-6)


@torch.no_grad()
def test_displacement_metric_is_zero_when_euler_is_exact(make_tiny_model, single_thread):
    b = torch.linspace(-1, 1, 32, dtype=torch.float64)
    model = _swap_field(make_tiny_model(dtype=torch.float64), ConstantField(b))
    h0 = model.ode_input(torch.randint(0, 512, (2, 8)))
    u = control_batch(model, 1.0, 2)
    ref = model.ode.solve(h0, u, TIGHT).final
    for n in (1, 4):
        h = model.ode.solve(h0, u, SolverSpec(method="euler", steps=n)).final
        # both solvers are exact for a constant field: only float64 round-off (~1e-16) remains
        assert displacement_divergence(h, ref, h0) < 1e-12
        assert relative_divergence(h, ref) < 1e-12


@torch.no_grad()
def test_displacement_metric_divides_by_what_the_block_adds(make_tiny_model, single_thread):
    """F = bτ: the Euler displacement error is exactly 1/n, while the paper's ratio is diluted by
    ‖H(0)‖ and shrinks as H(0) grows."""
    b = torch.linspace(-1, 1, 32, dtype=torch.float64)
    model = _swap_field(make_tiny_model(dtype=torch.float64), TimeField(b))
    h0 = model.ode_input(torch.randint(0, 512, (2, 8)))
    u = control_batch(model, 0.0, 2)
    for scale in (1.0, 100.0):
        start = scale * h0
        ref = model.ode.solve(start, u, TIGHT).final
        for n in (1, 2, 4):
            h = model.ode.solve(start, u, SolverSpec(method="euler", steps=n)).final
            assert displacement_divergence(h, ref, start) == pytest.approx(1 / n, rel=1e-9)
            dilute = float((b / (2 * n)).norm() * math.sqrt(16) / (start + b / 2).norm())
            assert relative_divergence(h, ref) == pytest.approx(dilute, rel=1e-9)


def test_meter_pools_batches_like_one_big_batch():
    g = torch.Generator().manual_seed(0)
    h, ref, h0 = (torch.randn(4, 5, 6, generator=g) for _ in range(3))
    logits, logits_ref = torch.randn(4, 5, 11, generator=g), torch.randn(4, 5, 11, generator=g)
    y = torch.randint(0, 11, (4, 5), generator=g)
    whole, parts = DivergenceMeter(), DivergenceMeter()
    whole.update(h, ref, h0, logits, logits_ref, y)
    for s in (slice(0, 1), slice(1, 4)):
        parts.update(h[s], ref[s], h0[s], logits[s], logits_ref[s], y[s])
    a, b = whole.summary(), parts.summary()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key


def test_output_metrics_on_known_distributions():
    p = torch.tensor([[[0.5, 0.5]]]).log()  # (1, 1, 2)
    q = torch.tensor([[[0.9, 0.1]]]).log()
    out = output_divergence(p, q, targets=torch.tensor([[1]]))
    assert out["kl"] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    assert out["top1_agreement"] == 1.0  # argmax of [0.5, 0.5] is index 0, as for q
    assert out["loss"] == pytest.approx(math.log(2))
    assert out["loss_diff"] == pytest.approx(math.log(2) - math.log(10))
    same = output_divergence(q, q)
    assert same["kl"] == pytest.approx(0.0, abs=1e-15) and same["top1_agreement"] == 1.0


def test_convergence_order_recovers_a_power_law():
    steps = [1, 2, 4, 8, 16]
    assert convergence_order(steps, [3.0 * n ** -1.0 for n in steps]) == pytest.approx(1.0)
    assert convergence_order(steps, [0.5 * n ** -4.0 for n in steps]) == pytest.approx(4.0)
    assert convergence_order([4], [0.1]) is None


def test_verdicts_against_threshold():
    v = verdicts({"relative_divergence": 0.0005, "displacement_divergence": 0.05, "kl": 0.001,
                  "top1_agreement": 0.98, "relative_loss_diff": 0.002})
    assert v["relative_divergence"]["pass"] and not v["displacement_divergence"]["pass"]
    assert v["kl"]["pass"] and v["relative_loss_diff"]["pass"]
    assert not v["top1_disagreement"]["pass"]
    assert v["top1_disagreement"]["value"] == pytest.approx(0.02)


def test_readout_path_equals_the_model_forward(make_tiny_model, single_thread):
    model = make_tiny_model()
    x = torch.randint(0, 512, (2, 12))
    spec = SolverSpec(method="euler", steps=4)
    u = control_batch(model, -1.0, 2)
    with torch.no_grad():
        ours = model.readout(model.ode.solve(model.ode_input(x), u, spec).final)
        theirs, _ = model(x, u, solver=spec)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # the same arithmetic, in order


def test_run_invariance_on_a_linear_field_matches_closed_form(make_tiny_model, single_thread):
    """End to end through the model: the steps sweep reproduces the known Euler errors."""
    model = _swap_field(make_tiny_model(), LinearField(_matrix(32, seed=3).float()))
    batches = [(torch.randint(0, 512, (2, 16)), torch.randint(0, 512, (2, 16))) for _ in range(2)]
    settings = InvarianceSettings(controls=(0.0,), tolerances=(1e-5,), steps=(1, 2, 4, 8))
    result = run_invariance(model, batches, settings)
    A = model.ode.field.A.double()
    with torch.no_grad():
        h0 = torch.cat([model.double().ode_input(x) for x, _ in batches])
    model.float()
    exact = h0 @ torch.linalg.matrix_exp(A).T
    for row in result["steps_sweep"]:
        n = row["steps"]
        euler = h0 @ torch.linalg.matrix_power(torch.eye(32, dtype=A.dtype) + A / n, n).T
        known = float((euler - exact).norm() / (exact - h0).norm())
        # float32 arithmetic (eps ≈ 1.2e-7 relative to ‖H‖ ≈ ‖ΔH‖ here) on a ≥1% error
        assert row["displacement_divergence"] == pytest.approx(known, rel=1e-4)
    assert 0.8 < result["steps_convergence_order"]["0.0"] < 1.2  # Euler is first order
    row = result["per_control"][0]
    # the training solver is the checkpoint's: 4 Euler steps
    assert result["train_solver"] == "euler, 4 steps"
    four = next(r for r in result["steps_sweep"] if r["steps"] == 4)
    assert row["train_vs_float64"]["displacement_divergence"] == pytest.approx(
        four["displacement_divergence"], rel=1e-9)
    # the float32 dopri5 reference is far closer to the truth than the training solver
    assert row["reference_vs_float64"]["displacement_divergence"] < 1e-4
    for key in ("relative_divergence", "displacement_divergence", "kl", "top1_agreement"):
        assert key in result
    assert result["verdicts"]["displacement_divergence"]["pass"] is (
        result["displacement_divergence"] <= 0.01)


def test_run_invariance_refuses_baselines_and_empty_input(make_tiny_model):
    with pytest.raises(CheckpointError, match="baseline"):
        run_invariance(make_tiny_model(ode_span=None), [(torch.zeros(1, 4, dtype=torch.long),) * 2])
    with pytest.raises(InputError, match="no validation batches"):
        run_invariance(make_tiny_model(), [])
    with pytest.raises(InputError, match="step counts"):
        InvarianceSettings(steps=(0, 4))
