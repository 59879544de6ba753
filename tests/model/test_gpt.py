"""SteerFlowGPT forward: causality, per-row control, the accepted forms of u, the loss, and bad
inputs that raise ValueError subclasses naming the problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("field", ["mlp", "block", "contractive"])
@pytest.mark.parametrize("solver", ["euler:4", "midpoint:2", "rk4:3"])
def test_changing_a_token_never_changes_earlier_logits(make_tiny_model, field, solver):
    model = make_tiny_model(field=field)
    spec = SolverSpec.parse(solver)
    idx = torch.randint(0, 512, (2, 24))
    base, _ = model(idx, u=0.7, solver=spec)
    for t in (0, 11, 22):  # change token t + 1
        other = idx.clone()
        other[:, t + 1] = (other[:, t + 1] + 17) % 512
        logits, _ = model(other, u=0.7, solver=spec)
        # fixed grids do the same arithmetic on every row: positions ≤ t are bit-identical
        assert torch.equal(logits[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1], base[:, t + 1])


def test_baseline_is_causal_too(make_tiny_model):
    model = make_tiny_model(ode_span=None)
    idx = torch.randint(0, 512, (2, 16))
    other = idx.clone()
    other[:, 9] = (other[:, 9] + 1) % 512
    assert torch.equal(model(idx)[0][:, :9], model(other)[0][:, :9])


@pytest.mark.parametrize("field", ["mlp", "block"])
def test_a_batch_with_one_u_per_row_equals_each_row_alone(make_tiny_model, field):
    model = make_tiny_model(field=field, control_dim=2)
    idx = torch.randint(0, 512, (3, 12))
    u = torch.tensor([[1.0, -0.5], [-2.0, 0.0], [0.3, 1.7]])  # (B, c)
    batched, _ = model(idx, u=u)
    for row in range(3):
        alone, _ = model(idx[row : row + 1], u=u[row])
        # batched vs single-row GEMMs may sum in a different order: float32 rounding only
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], model(idx[:1], u=u[1])[0][0], atol=1e-3)  # u matters


def test_u_forms_for_one_control_dimension(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (3, 10))
    reference, _ = model(idx, u=torch.full((3, 1), 0.5))  # the canonical (B, c) form
    for u in (0.5, torch.tensor(0.5), torch.full((3,), 0.5), torch.tensor([0.5]),
              torch.full((1, 1), 0.5), [0.5]):
        assert torch.equal(model(idx, u=u)[0], reference), u
    assert torch.equal(model(idx, u=None)[0], model(idx, u=torch.zeros(3, 1))[0])
    assert torch.equal(model(idx)[0], model(idx, u=0)[0])  # an int scalar is a number too
    per_row, _ = model(idx, u=torch.tensor([0.5, -1.0, 2.0]))  # (B,) is one value per row
    assert torch.equal(per_row[0], reference[0]) and not torch.allclose(per_row[1], reference[1])


def test_u_forms_for_several_control_dimensions(make_tiny_model):
    model = make_tiny_model(control_dim=3)
    idx = torch.randint(0, 512, (2, 10))
    u = torch.tensor([0.5, -1.0, 2.0])  # (c,): the same control for every row
    reference, _ = model(idx, u=u.expand(2, 3))
    for form in (u, u[None], [0.5, -1.0, 2.0], (0.5, -1.0, 2.0)):
        assert torch.equal(model(idx, u=form)[0], reference)
    scalar, _ = model(idx, u=0.5)  # a scalar sets every axis
    assert torch.equal(scalar, model(idx, u=torch.full((2, 3), 0.5))[0])
    assert torch.equal(model(idx, u=None)[0], model(idx, u=torch.zeros(2, 3))[0])
    with pytest.raises(InputError, match=r"u has shape \(2,\)"):
        model(idx, u=torch.tensor([1.0, 2.0]))  # (B,) is ambiguous when c > 1


def test_each_control_axis_acts_on_the_output(make_tiny_model):
    model = make_tiny_model(control_dim=2)
    idx = torch.randint(0, 512, (1, 8))
    zero, _ = model(idx, u=[0.0, 0.0])
    for axis in range(2):
        u = [0.0, 0.0]
        u[axis] = 1.0
        assert (model(idx, u=u)[0] - zero).abs().max() > 1e-3


def test_loss_is_mean_next_token_cross_entropy_ignoring_minus_one(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (2, 10))
    targets = torch.randint(0, 512, (2, 10))
    targets[0, :4] = -1
    logits, loss = model(idx, u=1.0, targets=targets)
    keep = targets.flatten() != -1
    expected = -F.log_softmax(logits.flatten(0, 1)[keep], -1).gather(1, targets.flatten()[keep, None]).mean()
    torch.testing.assert_close(loss, expected)  # float32 default tolerances
    assert model(idx)[1] is None
    with pytest.raises(InputError, match=r"targets must have the shape of idx \(2, 10\), got \(2, 9\)"):
        model(idx, targets=targets[:, :9])


def test_train_mode_uses_the_train_solver_and_eval_mode_the_eval_solver(make_tiny_model):
    model = make_tiny_model(train_solver=SolverSpec(method="rk4", steps=2, adjoint=True),
                            eval_solver=SolverSpec(method="midpoint", steps=3))
    idx = torch.randint(0, 512, (1, 6))
    model.train()(idx)
    assert model.ode.last_stats.solver == "rk4, 2 steps, adjoint"
    model.eval()(idx)
    assert model.ode.last_stats.solver == "midpoint, 3 steps"
    model(idx, solver=SolverSpec(method="dopri5"))
    assert model.ode.last_stats.solver.startswith("dopri5")


def test_hidden_states_are_the_stream_before_the_final_norm(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (2, 7))
    h = model.hidden_states(model.embed(idx), u=1.0)  # (B, T, d)
    assert h.shape == (2, 7, 32)
    assert torch.equal(model.lm_head(model.ln_f(h)), model(idx, u=1.0)[0])


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture
def tiny(make_tiny_model) -> SteerFlowGPT:
    return make_tiny_model()


@pytest.mark.parametrize("make_idx, fragment", [
    (lambda: torch.tensor([[1, 2, 512]]), r"token ids must lie in \[0, 512\).*max 512"),
    (lambda: torch.tensor([[1, -1, 3]]), r"token ids must lie in \[0, 512\).*min -1"),
    (lambda: torch.zeros(1, 33, dtype=torch.long), "sequence of 33 tokens exceeds the context length 32"),
    (lambda: torch.tensor([[1.0, 2.0]]), "idx must be an integer tensor"),
    (lambda: torch.tensor([1, 2, 3]), r"idx must have shape \(B, T\)"),
    (lambda: [[1, 2, 3]], "idx must be an integer tensor"),
])
def test_bad_token_ids_raise_input_error(tiny, make_idx, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        tiny(make_idx())
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("u, fragment", [
    (torch.ones(2, 2), r"u has shape \(2, 2\)"),
    (torch.ones(3), r"u has shape \(3,\)"),
    (torch.ones(2, 1, 1), r"u has shape \(2, 1, 1\)"),
    (torch.tensor([1.0, float("nan")]), "NaN or inf"),
    (float("inf"), "NaN or inf"),
    (torch.tensor([1, 0]), "floating-point tensor, got dtype torch.int64"),
    (True, "not a bool"),
    ("positive", "u must be a number or a tensor, got str"),
    (["a"], "u must be a list of numbers"),
    ([[1.0, 2.0], [3.0]], "u must be a list of numbers"),
    ([None, 1.0], "u must be a list of numbers"),
])
def test_bad_control_raises_input_error(tiny, u, fragment):
    with pytest.raises(InputError, match=fragment):
        tiny(torch.zeros(2, 4, dtype=torch.long), u=u)


def test_solver_must_be_a_solver_spec(tiny):
    with pytest.raises(InputError, match="solver must be a SolverSpec, got str"):
        tiny(torch.zeros(1, 4, dtype=torch.long), solver="dopri5")
